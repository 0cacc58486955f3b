"""The store interface and the records it trades in.

Times are integers: microseconds since the Unix epoch, UTC. Service tokens
are the rows whose owner is the empty string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

SERVICE_OWNER = ""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    owner: str
    name: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    active: bool
    expire_time: int | None
    allowed_ips: tuple[str, ...]
    create_time: int
    update_time: int
    revoke_time: int | None
    last_use_time: int | None
    usage_count: int
    sealed_value: bytes | None

    @property
    def is_service(self) -> bool:
        return self.owner == SERVICE_OWNER

    def with_usage(self, usage_count: int, last_use_time: int | None) -> TokenRecord:
        """A copy with other usage figures; twice as fast as ``dataclasses.replace``,
        which matters when each usage batch is folded into the cached rows."""
        return TokenRecord(
            self.id, self.owner, self.name, self.secret_hash, self.scopes, self.active,
            self.expire_time, self.allowed_ips, self.create_time, self.update_time,
            self.revoke_time, last_use_time, usage_count, self.sealed_value,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewToken:
    owner: str
    name: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    active: bool
    expire_time: int | None
    allowed_ips: tuple[str, ...]
    now: int
    sealed_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class TokenChanges:
    """New values for the fields of an update; None leaves a field alone."""

    name: str | None = None
    scopes: tuple[str, ...] | None = None
    active: bool | None = None
    allowed_ips: tuple[str, ...] | None = None
    #: Whether ``expire_time`` is part of the change (None then clears it).
    set_expire_time: bool = False
    expire_time: int | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One owner's tokens (SERVICE_OWNER for service tokens), by ascending id."""

    owner: str
    include_revoked: bool
    limit: int
    after_id: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    count: int
    last_use_time: int


class NameTaken(Exception):
    """A service token that is not revoked already has this name."""


class TokenStore(Protocol):
    async def insert(self, new: NewToken) -> TokenRecord:
        """Raises NameTaken for a duplicate live service-token name."""
        ...

    async def get(self, token_id: int) -> TokenRecord | None: ...

    async def get_service_token(self, name: str) -> TokenRecord | None:
        """The live (not revoked) service token with this name."""
        ...

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]: ...

    async def count(self, query: ListQuery) -> int: ...

    async def update(self, token_id: int, changes: TokenChanges, now: int) -> TokenRecord | None:
        """The updated record; None if there is no such live token.

        Raises NameTaken like insert.
        """
        ...

    async def revoke(self, token_id: int, now: int) -> TokenRecord | None:
        """The revoked record; None if there is no such token or it was revoked."""
        ...

    async def add_usage(self, uses: Mapping[int, Usage]) -> None:
        """Add counted uses to their tokens.

        From the call on, every record the store returns holds these uses,
        exactly once, unless the call raises: the caller drops them from its
        pending counts in the same step and adds them back if it fails.
        """
        ...

    async def is_empty(self) -> bool: ...

    async def key_fingerprint(self) -> bytes | None:
        """The fingerprint of the secret key values are sealed with, once one is recorded."""
        ...

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        """Record ``fingerprint`` unless one is already there; return the one stored."""
        ...

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        """One sealed value and the hash it is bound to, to try a key on a store
        that holds values but no fingerprint yet (written before it was kept)."""
        ...

    async def ping(self) -> None:
        """Raises if the store cannot answer a query."""
        ...

    async def close(self) -> None: ...
