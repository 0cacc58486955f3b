"""The store interface and the records it trades in.

Times are integers: microseconds since the Unix epoch, UTC. Service tokens
are the rows whose owner is the empty string.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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
    #: The hash of the secret before the last rotation, which keeps
    #: authenticating while ``now < previous_until``.
    previous_hash: bytes | None = None
    previous_until: int | None = None
    last_use_ip: str = ""
    #: Before this time the token authenticates nothing (None: no such limit).
    not_before: int | None = None
    #: When the current secret was issued (creation or the last rotation): the
    #: maximum secret age counts from here (``tokengrpc.lifetime``).
    secret_time: int = 0

    @property
    def is_service(self) -> bool:
        return self.owner == SERVICE_OWNER

    def with_usage(
        self, usage_count: int, last_use_time: int | None, last_use_ip: str | None = None
    ) -> TokenRecord:
        """A copy with other usage figures (the address kept when None), built
        positionally: each usage batch is folded into the cached rows this way
        (docs/performance.md)."""
        return TokenRecord(
            self.id, self.owner, self.name, self.secret_hash, self.scopes, self.active,
            self.expire_time, self.allowed_ips, self.create_time, self.update_time,
            self.revoke_time, last_use_time, usage_count, self.sealed_value,
            self.previous_hash, self.previous_until,
            self.last_use_ip if last_use_ip is None else last_use_ip,
            self.not_before, self.secret_time,
        )  # fmt: skip


class EventAction(enum.IntEnum):
    """What an audit event records; the numbers are the proto enum's."""

    CREATED = 1
    UPDATED = 2
    ROTATED = 3
    REVOKED = 4
    VALUE_READ = 5
    EXPIRING = 6
    EXPIRED = 7


#: The changed field of a REVOKED event that ended only a replaced secret's
#: grace (``end_grace``), not the token.
PREVIOUS_SECRET = "previous_secret"  # noqa: S105 (a field name)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, and why, for its audit event: never a secret."""

    #: The authenticating token's id; 0 for the command line, revocation by
    #: value and the service's own changes.
    token_id: int = 0
    owner: str = ""
    client_ip: str = ""
    #: Why, when it is not an API caller's own action: one of the ``REASON_*``.
    reason: str = ""
    #: More about the reason (a leak report's url and source); empty otherwise.
    detail: str = ""


#: ``TokenEvent.reason`` values (CONTRACT section 12).
REASON_INACTIVE = "inactive"
REASON_LEAKED = "leaked"
REASON_BY_VALUE = "by_value"
REASON_CLI = "cli"


#: The actor of writes made without a request (tests, imports).
NO_ACTOR = Actor()


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    event_time: int
    action: EventAction
    token_id: int
    #: The token's owner when it happened (listings filter on it).
    owner: str
    actor_token_id: int
    actor_owner: str
    client_ip: str
    changed_fields: tuple[str, ...]
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for one URL, claimed for delivery."""

    id: int
    url: str
    #: Tries that failed so far.
    attempts: int
    event: EventRecord
    #: The token right after the event; its secret fields are empty.
    token: TokenRecord


class Outbox(Protocol):
    """The queue of webhook deliveries (each engine keeps it in its own tables)."""

    async def set_webhook_urls(self, urls: Sequence[str]) -> int:
        """Queue future events for exactly these URLs; drop what was queued for
        any other. Returns how many queued rows were dropped."""
        ...

    async def claim_deliveries(self, now: int, lease_until: int, limit: int) -> Sequence[Outgoing]:
        """Up to ``limit`` due rows, oldest first, none behind an earlier row of
        its token and URL; each is due again at ``lease_until`` unless finished."""
        ...

    async def finish_delivery(self, row_id: int) -> None:
        """Delivered (or given up): the row is gone."""
        ...

    async def retry_delivery(self, row_id: int, attempts: int, due: int) -> None:
        """Failed ``attempts`` times so far; try again at ``due``."""
        ...

    async def oldest_undelivered(self) -> int | None:
        """The event time of the oldest queued row; None when none is queued."""
        ...


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Events newest first, below ``before_id`` (0: from the newest)."""

    limit: int
    #: Only events of tokens of this owner; None for every owner.
    owner: str | None = None
    #: Only this token's events; None for every token.
    token_id: int | None = None
    before_id: int = 0


@dataclass(frozen=True, slots=True)
class Rotation:
    """A new secret for a token; the old one authenticates until ``previous_until``."""

    secret_hash: bytes
    sealed_value: bytes | None
    #: None (or a time not after ``now``): the old secret stops at once.
    previous_until: int | None
    now: int


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
    actor: Actor = NO_ACTOR
    #: Before this time the token authenticates nothing (None: no such limit).
    not_before: int | None = None
    #: Insert only if the store holds no token at all (the bootstrap token:
    #: instances starting at once on one database create one); else StoreNotEmpty.
    only_into_empty_store: bool = False


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
    #: Whether ``not_before`` is part of the change (None then clears it).
    set_not_before: bool = False
    not_before: int | None = None

    def fields(self) -> tuple[str, ...]:
        """The names of the fields this change sets, for its audit event."""
        named = [
            ("name", self.name is not None),
            ("scopes", self.scopes is not None),
            ("active", self.active is not None),
            ("expire_time", self.set_expire_time),
            ("allowed_ips", self.allowed_ips is not None),
            ("not_before", self.set_not_before),
        ]
        return tuple(field for field, changed in named if changed)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One owner's tokens (SERVICE_OWNER for service tokens), by ascending id,
    or, when ``after_name`` is set, service tokens by ascending (name, id)."""

    owner: str
    include_revoked: bool
    limit: int
    after_id: int = 0
    offset: int = 0
    #: Name order, after (after_name, after_id); "" starts at the first name.
    #: Only for SERVICE_OWNER (the one listing indexed by name) and no offset.
    after_name: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    count: int
    last_use_time: int
    #: The client address of the use at ``last_use_time``; empty if unknown.
    last_use_ip: str = ""


@dataclass(frozen=True, slots=True)
class ReminderState:
    """Where a token's expiry reminders stand: kept beside its row, never in its record.

    The engines mark ``wake`` with a write's time whenever the write may move
    the effective expiry (a creation, a change of ``expire_time``, a rotation),
    and the reminder steps (``tokengrpc.reminders``) take it from there.
    """

    #: The effective expiry the reminders are counted for; None: none planned.
    expiry: int | None
    #: When the next reminder is due (EXPIRING; EXPIRED when it is ``expiry``);
    #: None: no more for this expiry.
    next_due: int | None
    #: When the row asks to be looked at: ``next_due``, or the time of a write
    #: that may have moved the expiry; None: never (no index entry).
    wake: int | None


#: A token's new reminder state, and the event to record with it (None: none),
#: given the token and its state at the time of the step. No I/O.
ReminderStep = Callable[[TokenRecord, ReminderState], tuple[ReminderState, EventAction | None]]


class NameTaken(Exception):
    """A service token that is not revoked already has this name."""


class StoreMissing(ValueError):
    """A command that only works on a store found none where it was pointed (it makes none)."""


class StoreNotEmpty(Exception):
    """A first token was asked for (``only_into_empty_store``), but the store holds one."""


class Cached(enum.Enum):
    """What ``TokenStore.cached`` answers when only a read of the store could tell."""

    MISS = "miss"


class TokenStore(Protocol):
    """What the service holds (``open_store``; docs/store.md).

    Every write that changes a token writes its audit event in the same
    transaction: no event without its change, no change without its event.
    Every record returned holds every use recorded through this store, once.

    Record identity: ``get(token_id, usage=False)`` hands out the very same
    record object, call after call, until the token changes (a write to it,
    or uses of it written) or the store stops answering from memory (another
    process wrote; PostgreSQL's listener not vouching for it). Uses only
    recorded, and writes of other tokens' uses, keep it. Records are frozen,
    so a changed token is always a new object: a caller may keep what it
    derives from a record, keyed by the record's identity (``extauthz``
    keeps its allowing answers so).
    """

    @property
    def writable(self) -> bool:
        """False from a write the disk refused until ``probe_write`` succeeds."""
        ...

    @property
    def outbox(self) -> Outbox:
        """The webhook deliveries queued with the events (``tokengrpc.webhooks``);
        past the cache: they are no token's rows."""
        ...

    async def insert(self, new: NewToken) -> TokenRecord:
        """Raises NameTaken for a duplicate live service-token name."""
        ...

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        """Bulk loading (imports, benchmarks): one transaction, consecutive ids,
        each row with its CREATED event."""
        ...

    async def get(self, token_id: int, *, usage: bool = True) -> TokenRecord | None:
        """``usage=False``: the usage figures may leave out uses not yet written
        (cheaper, for callers that never read them; see record identity above)."""
        ...

    def cached(self, token_id: int) -> TokenRecord | Literal[Cached.MISS] | None:
        """``get(token_id, usage=False)`` if memory can answer it, without waiting;
        ``Cached.MISS`` if only the store can (a check that must not wait)."""
        ...

    async def get_service_token(self, name: str) -> TokenRecord | None:
        """The live (not revoked) service token with this name."""
        ...

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]: ...

    async def count(self, query: ListQuery) -> int: ...

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        """The updated record; None if there is no such live token.

        Raises NameTaken like insert.
        """
        ...

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        """The revoked record; None if there is no such token or it was revoked."""
        ...

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        """The rotated record; None if there is no such live token."""
        ...

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        """Forget the secret a rotation replaced, if it is still ``previous_hash``
        and inside its grace period; the token and its current secret live on.

        The record; None if nothing changed. Its event is a revocation of
        ``previous_secret``.
        """
        ...

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        """The audit event of a service token's value being read."""
        ...

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]: ...

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        """Revoke the live tokens (only ``token_id`` when given) whose last
        activity, the latest of last use, creation and secret issue, is at or
        before ``cutoff``, each with a REVOKED event of reason ``inactive`` and
        no actor. Conditional on what the store holds when it writes, so two
        processes revoke (and record) a token once. A sweep (no ``token_id``)
        runs on one process at a time: while another's runs, this one returns
        nothing. The revoked records."""
        ...

    async def next_reminder_wake(self) -> int | None:
        """The earliest ``ReminderState.wake`` of any token (an indexed read)."""
        ...

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        """Step up to ``limit`` tokens whose reminder state wakes at or before
        ``now``: each new state is written in the same transaction as the event
        the step returned, and a state is stepped once however many processes
        run this at once. ``only_own_expiries`` (no maximum secret age): a woken
        token without its own expiry needs nothing and is put to sleep in bulk.
        How many tokens were stepped."""
        ...

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        """Wake every live token's reminders at ``now`` if they were planned under
        another maximum secret age (or never), and remember this one; True if so."""
        ...

    def record_use(self, token_id: int, when: int, address: str = "") -> None:
        """Count one use, in memory (no I/O): the hot path calls this."""
        ...

    async def flush_usage(self) -> None:
        """Write the uses counted so far in one batch; on failure they stay pending."""
        ...

    async def is_empty(self) -> bool: ...

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        """Live, active tokens within their own expiry whose secret was issued
        ``max_secret_age`` or longer before ``now`` (a start-up figure)."""
        ...

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

    async def probe_write(self) -> None:
        """A write that leaves no trace, to see whether the disk takes writes again."""
        ...

    async def close(self) -> None: ...
