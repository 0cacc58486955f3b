"""Bearer authentication: one primary-key lookup, one constant-time compare
(two for a token rotated within its grace period, presented with its old secret).

Every failed check ends the same way (None / UNAUTHENTICATED) so a caller
cannot tell a wrong secret from a revoked, expired or IP-restricted token.

A request reads the clock once, here: the reading travels in ``Caller.now``
and every time-dependent decision about the request (status, grace, expiry)
uses it, so no request is judged against two different "now"s.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from tokengrpc import plaintext
from tokengrpc.addresses import (
    ClientAddressResolver,
    IPAddress,
    IPNetwork,
    address_allowed,
    address_text,
    compile_networks,
)
from tokengrpc.clock import now_us
from tokengrpc.errors import Unauthenticated
from tokengrpc.logs import note_caller
from tokengrpc.metrics import Observation, ignore
from tokengrpc.rules import ADMIN, WRITE, Status, last_activity, status_of, unused_too_long
from tokengrpc.store import Actor, Cached, TokenRecord, TokenStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is making a request, as far as the rules care."""

    owner: str
    scopes: frozenset[str]
    #: The request's one reading of the clock (microseconds since the epoch).
    now: int
    #: The authenticating token, for audit events; 0 for the command line.
    token_id: int = 0
    #: The client address, for audit events; empty when there is none.
    client_ip: str = ""
    #: Authenticated by a secret a rotation replaced (inside its grace period).
    replaced_secret: bool = False
    #: Why its changes are made, for audit events (``store.REASON_*``): the
    #: command line's are ``cli``; an API caller's own have none.
    reason: str = ""

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def holds(self, scope: str) -> bool:
        """Admin implies every reserved scope."""
        return scope in self.scopes or self.is_admin

    @property
    def actor(self) -> Actor:
        return Actor(self.token_id, self.owner, self.client_ip, self.reason)


_OPERATOR_SCOPES = frozenset({"admin", "write", "introspect"})


def operator(now: int | None = None, reason: str = "") -> Caller:
    """The operator: works on the store directly, with every power (the
    ``token`` commands say ``REASON_CLI``; the bootstrap token is the service's own)."""
    return Caller(
        owner="admin",
        scopes=_OPERATOR_SCOPES,
        now=now_us() if now is None else now,
        reason=reason,
    )


@functools.lru_cache(maxsize=4096)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return compile_networks(entries)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Authenticator:
    def __init__(
        self,
        store: TokenStore,
        resolver: ClientAddressResolver,
        observe: Observation = ignore,
        clock: Callable[[], int] = now_us,
        max_secret_age: int | None = None,
        *,
        revoke_unused_after: int | None = None,
        unused_margin: int = 0,
    ) -> None:
        self._store = store
        #: ``--revoke-unused-after`` (microseconds; None: unset), and how much
        #: longer a token must look unused before its revocation is recorded
        #: (``tokengrpc.sweeper``: uses not yet written must not revoke it).
        self._unused_after = revoke_unused_after
        self._unused_margin = unused_margin
        #: Unused tokens whose revocation is being recorded, and the writes doing it.
        self._recording: dict[int, asyncio.Task[object]] = {}
        self.resolver = resolver
        #: Told whether each caller authentication succeeded (the metric).
        self._observe = observe
        #: Read once per request (``Caller.now``); a test may move it by hand.
        self.clock = clock
        #: Microseconds a secret authenticates after it was issued (``lifetime``).
        self.max_secret_age = max_secret_age

    async def check(
        self,
        presented: str | None,
        address: IPAddress | None,
        now: int,
        *,
        counted: bool = False,
    ) -> tuple[TokenRecord, bool] | None:
        """The token's record if it may be used at ``now`` from ``address``, and
        whether ``presented`` is its replaced secret; counts the use.

        ``counted``: with usage figures exact (this use included); otherwise
        they may leave out uses not yet written (one store read, not two).
        """
        found = await self._verified(presented, address, now)
        if found is None or not counted:
            return found
        # Read again: the store's records count every use, this one too.
        record = await self._store.get(found[0].id)
        return None if record is None else (record, found[1])

    async def _verified(
        self, presented: str | None, address: IPAddress | None, now: int
    ) -> tuple[TokenRecord, bool] | None:
        """The record and whether ``presented`` is its replaced secret (it matched
        the hash a rotation replaced), if it may be used at ``now``; counts the use."""
        parsed = _parsed(presented)
        if parsed is None:
            return None
        record = await self._store.get(parsed.id, usage=False)
        judged = self._judged(parsed, record, address, now)
        if judged is _LOOKS_UNUSED and record is not None:
            if await self._unused(record, now):
                return None
            judged = self._judged(parsed, record, address, now, unused_checked=True)
        return None if judged is _LOOKS_UNUSED else judged  # not again, once checked

    def verified_cached(
        self, presented: str | None, address: IPAddress | None, now: int
    ) -> tuple[TokenRecord, bool] | Literal[Cached.MISS] | None:
        """``check`` (uncounted) without waiting, from the record in memory:
        ``Cached.MISS`` when the answer needs the store (the caller then awaits
        ``check``, which decides from scratch; nothing was counted here)."""
        parsed = _parsed(presented)
        if parsed is None:
            return None
        record = self._store.cached(parsed.id)
        if record is Cached.MISS:
            return Cached.MISS
        judged = self._judged(parsed, record, address, now)
        return Cached.MISS if judged is _LOOKS_UNUSED else judged

    def _judged(
        self,
        parsed: plaintext.ParsedToken,
        record: TokenRecord | None,
        address: IPAddress | None,
        now: int,
        *,
        unused_checked: bool = False,
    ) -> tuple[TokenRecord, bool] | Literal[_Judgement.LOOKS_UNUSED] | None:
        """Every rule, in order, on the record found; an allowed use is counted.
        ``LOOKS_UNUSED``: the cached record says unused for too long, which only
        the store can confirm (``_unused``); ``unused_checked``: it did not."""
        if record is None:
            return None
        if plaintext.secret_matches(parsed, record.secret_hash):
            replaced = False
        elif _previous_matches(parsed, record, now):
            replaced = True
        else:
            return None
        # From the cached record alone: the policies add no store read (an unused
        # token's revocation is recorded off the request's path).
        if (
            not unused_checked
            and self._unused_after is not None
            and record.revoke_time is None  # a revoked one is refused below, with no write
            and unused_too_long(record, now, self._unused_after)
        ):
            return _LOOKS_UNUSED
        if status_of(record, now, self.max_secret_age) is not Status.ACTIVE:
            return None
        if record.allowed_ips and not address_allowed(address, _networks(record.allowed_ips)):
            return None
        self._store.record_use(record.id, now, "" if address is None else address_text(address))
        return record, replaced

    async def _unused(self, record: TokenRecord, now: int) -> bool:
        """Whether a token that looks unused from its cached record is, counting
        this process's uses not yet written too (rare: no cost to the hot path);
        if so, its revocation is recorded in the background (the denial does
        not wait for it), on the store's condition, with the margin."""
        counted = await self._store.get(record.id)
        if counted is None or not unused_too_long(counted, now, self._unused_after):
            return False
        if self._unused_after is None:
            return False
        cutoff = now - self._unused_after - self._unused_margin
        # Within the margin it is refused but not yet revoked: the store's
        # condition would match nothing, so no write is started for it.
        if record.id not in self._recording and last_activity(counted) <= cutoff:
            task: asyncio.Task[object] = asyncio.create_task(
                self._store.revoke_unused(cutoff, now, record.id), name="revoke-unused"
            )
            self._recording[record.id] = task
            task.add_done_callback(functools.partial(self._recorded, record.id))
        return True

    def _recorded(self, token_id: int, task: asyncio.Task[object]) -> None:
        del self._recording[token_id]
        if not task.cancelled() and task.exception() is not None:
            # The sweep records it later; the token is denied meanwhile either way.
            log.warning("recording an unused token's revocation failed; the sweep will")

    async def settle(self) -> None:
        """Wait for the revocations being recorded (before the store closes)."""
        await asyncio.gather(*self._recording.values(), return_exceptions=True)

    def anonymous(self, metadata: Iterable[tuple[str, str | bytes]], peer: str) -> Caller:
        """The caller of a request that needs no token (revocation by value):
        nobody, but from an address the audit event can name."""
        _, address = self.presented(metadata, peer)
        return Caller(
            owner="",
            scopes=frozenset(),
            now=self.clock(),
            client_ip="" if address is None else address_text(address),
        )

    def presented(
        self, metadata: Iterable[tuple[str, str | bytes]], peer: str
    ) -> tuple[list[str | bytes], IPAddress | None]:
        """A call's ``authorization`` values, and its client address: the peer,
        or the one trusted proxies name in ``x-forwarded-for`` (every entry, in order)."""
        authorizations: list[str | bytes] = []
        forwarded: list[str] = []
        for key, value in metadata:
            if key == "authorization":
                authorizations.append(value)
            elif key == "x-forwarded-for" and isinstance(value, str):
                forwarded.append(value)
        address = self.resolver.resolve(peer, ",".join(forwarded) if forwarded else None)
        return authorizations, address

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]], peer: str) -> Caller:
        """The caller of a gRPC request, or UNAUTHENTICATED.

        More than one ``authorization`` entry is refused, not resolved: which
        one a proxy or a server picks differs, and a credential must not be
        ambiguous. Every ``x-forwarded-for`` entry counts, in order.
        """
        now = self.clock()
        authorizations, address = self.presented(metadata, peer)
        if len(authorizations) != 1 or not isinstance(authorizations[0], str):
            self._observe(False)
            raise Unauthenticated()
        found = await self._verified(bearer(authorizations[0]), address, now)
        if found is None:
            self._observe(False)
            raise Unauthenticated()
        self._observe(True)
        record, replaced = found
        note_caller(record.id)
        scopes = frozenset(record.scopes)
        if replaced:
            # Whoever holds a replaced secret (perhaps leaked: that is why
            # tokens are rotated) may keep using it, not change anything with
            # it: no writes, no values read back, no rotation to take over.
            scopes -= _CHANGING
        return Caller(
            owner=record.owner,
            scopes=scopes,
            now=now,
            token_id=record.id,
            client_ip="" if address is None else address_text(address),
            replaced_secret=replaced,
        )


#: What a secret replaced by a rotation no longer grants its caller.
_CHANGING = frozenset({WRITE, ADMIN})


class _Judgement(enum.Enum):
    LOOKS_UNUSED = "looks unused"


_LOOKS_UNUSED = _Judgement.LOOKS_UNUSED


def _parsed(presented: str | None) -> plaintext.ParsedToken | None:
    return plaintext.parse(presented) if presented else None


def _previous_matches(parsed: plaintext.ParsedToken, record: TokenRecord, now: int) -> bool:
    """The secret before the last rotation, while its grace period lasts."""
    if record.previous_hash is None or record.previous_until is None:
        return False
    return now < record.previous_until and plaintext.secret_matches(parsed, record.previous_hash)
