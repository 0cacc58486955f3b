"""What an engine is: its SQL and its own concurrency, and how it announces changes.

Caching and usage counting are layers over these (``cached.py``,
``counting.py``), put together by ``open.py``; an engine knows neither.
docs/store.md has the picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from tokengrpc.store.base import (
    Actor,
    EventQuery,
    EventRecord,
    ListQuery,
    NewToken,
    Outbox,
    ReminderStep,
    Rotation,
    TokenChanges,
    TokenRecord,
    Usage,
)


class Changes(Protocol):
    """Change announcement between every process (or instance) on one database."""

    def current(self) -> int:
        """A value that moves whenever anyone committed a write since it was last read.

        Read on every cached answer, so it must be cheap. An implementation
        that cannot vouch for freshness returns a new value on every call.
        """
        ...

    async def announce(self) -> int:
        """Tell everyone a write of ours ended; return ``current()`` just before it.

        Our own announcement, should it come back to us, moves ``current()``
        by exactly one.
        """
        ...

    async def close(self) -> None: ...


class Engine(Outbox, Protocol):
    """The SQL of one database. Records are what the database holds now.

    It keeps the webhook outbox too (``Outbox``; ``outbox.py`` has its SQL).

    Every write that changes a token writes its audit event in the same
    transaction. Engine failures are ``tokengrpc.errors.Unavailable``.
    """

    @property
    def writable(self) -> bool:
        """False from a write the disk refused until ``probe_write`` succeeds
        (``health.WriteHealth`` keeps it)."""
        ...

    async def insert(self, new: NewToken) -> TokenRecord:
        """Raises NameTaken for a duplicate live service-token name."""
        ...

    async def insert_many(self, news: Sequence[NewToken]) -> range: ...

    async def get(self, token_id: int) -> TokenRecord | None: ...

    async def get_service_token(self, name: str) -> TokenRecord | None: ...

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]: ...

    async def count(self, query: ListQuery) -> int: ...

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor
    ) -> TokenRecord | None: ...

    async def revoke(self, token_id: int, now: int, actor: Actor) -> TokenRecord | None: ...

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor
    ) -> TokenRecord | None: ...

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor
    ) -> TokenRecord | None: ...

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None: ...

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]: ...

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        """As ``TokenStore.revoke_unused``."""
        ...

    async def next_reminder_wake(self) -> int | None: ...

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        """As ``TokenStore.advance_reminders``."""
        ...

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool: ...

    async def add_usage(self, uses: Mapping[int, Usage]) -> None:
        """Add a batch of counted uses in one transaction."""
        ...

    async def is_empty(self) -> bool: ...

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int: ...

    async def key_fingerprint(self) -> bytes | None: ...

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes: ...

    async def sealed_sample(self) -> tuple[bytes, bytes] | None: ...

    async def ping(self) -> None: ...

    async def probe_write(self) -> None: ...

    async def close(self) -> None: ...
