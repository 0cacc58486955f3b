"""TokenVerifier: asks tokengrpc's IntrospectToken, remembers answers briefly.

The cache is keyed by SHA-256 of the address and the token, so a heap dump of
a service holds no plaintext it did not already have in its request. It is
bounded in entries and in (estimated) bytes; the oldest entries go first,
which is enough because every entry dies within ``cache_ttl`` anyway.
Concurrent lookups of one token share a single call, and calls in flight
are bounded. A token whose checksum fails is refused without a call; the
rejections the service gives are remembered apart from the accepted tokens,
in a bound of their own, so made-up tokens cannot push real ones out.

It fails closed: when tokengrpc cannot be reached, refuses the verifier's
own token, or the lookup fails in any other way, ``identify`` raises
``VerifierUnavailable`` and ``verify`` answers None; nothing is cached, and
the log says why, never with the token.

Lifetimes are counted on ``clock`` (``time.monotonic``) from the moment the
lookup was sent, not from the answer's arrival: an answer that took long to
come is no fresher for it, and a revocation made while it travelled must be
seen within ``cache_ttl`` of the question.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

import grpc

from tokengrpc import plaintext
from tokengrpc.client.identity import Identity
from tokengrpc.client.loops import Binding, Bindings
from tokengrpc.v1 import tokens_pb2 as pb

log = logging.getLogger(__name__)

#: Longer than any plaintext the service issues; longer input is not looked up.
MAX_TOKEN_LENGTH = 512
#: At most one warning per this many seconds while tokengrpc is unreachable.
WARN_EVERY = 5.0
# A rough per-entry cost (key, entry, identity, dict slot) for the byte bound.
_ENTRY_OVERHEAD = 400


class VerifierUnavailable(Exception):
    """tokengrpc could not say whether the token is active (the log says why)."""


@dataclass(frozen=True, slots=True)
class CacheInfo:
    entries: int
    bytes: int
    hits: int
    #: IntrospectToken calls made (collapsed lookups count once).
    calls: int


@dataclass(slots=True)
class _Entry:
    identity: Identity
    expires: float  # on the verifier's clock
    size: int


def _identity(token: pb.Token) -> Identity:
    return Identity(
        token_id=token.id,
        owner=token.owner,
        name=token.name,
        scopes=frozenset(token.scopes),
        expire_time=token.expire_time.ToDatetime(tzinfo=UTC)
        if token.HasField("expire_time")
        else None,
    )


class TokenVerifier:
    """Verify bearer tokens against tokengrpc (needs a token with ``introspect``).

    ``target`` is a ``HOST:PORT`` (an insecure channel is made), a function
    that makes a channel (TLS, options), or a channel you own. The verifier
    may be built anywhere, at import time included: it makes its channel in
    the event loop that first uses it, and another for any other loop
    (a channel you pass stays in the loop it was made in). ``close`` closes
    the channels it made. ``cache_ttl`` bounds how long a revoked token may
    still pass; ``negative_ttl`` how long a rejected one stays rejected
    without asking again (say, after being re-activated).
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel | Callable[[], grpc.aio.Channel],
        token: str,
        *,
        cache_ttl: float = 1.0,
        negative_ttl: float = 1.0,
        max_entries: int = 10_000,
        max_negative: int = 1_000,
        max_bytes: int = 16 * 1024 * 1024,
        max_calls: int = 64,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(target, grpc.aio.Channel):
            self._bindings = Bindings(target, None, max_calls)
        elif isinstance(target, str):
            self._bindings = Bindings(None, lambda: grpc.aio.insecure_channel(target), max_calls)
        else:
            self._bindings = Bindings(None, target, max_calls)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.timeout = timeout
        #: Monotonic seconds; every lifetime here is counted on it.
        self._clock = clock
        self._cache: dict[bytes, _Entry] = {}
        self._bytes = 0
        #: Rejections apart, in a bound of their own: anyone can make up tokens
        #: with a valid checksum, and a flood of them must not evict real ones.
        self._rejected: dict[bytes, float] = {}
        self.max_negative = max_negative
        self._hits = 0
        self._calls = 0
        self._last_warning = -WARN_EVERY

    async def verify(self, token: str | None, client_ip: str = "") -> Identity | None:
        """The identity of an active token presented from ``client_ip``, else None
        (also when tokengrpc cannot say: it fails closed)."""
        # The cached path of ``identify``, written out: a shared coroutine
        # would cost every cached answer a frame.
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            key = hashlib.sha256(f"{client_ip}\n{token}".encode()).digest()
        except UnicodeEncodeError:
            return None
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self._clock():
            self._hits += 1
            return entry.identity
        try:
            return await self._ask(key, token, client_ip)
        except VerifierUnavailable:
            return None

    async def identify(self, token: str | None, client_ip: str = "") -> Identity | None:
        """As ``verify``, but raises ``VerifierUnavailable`` when tokengrpc cannot
        say, so a guard can answer "try again" rather than "bad token"."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            key = hashlib.sha256(f"{client_ip}\n{token}".encode()).digest()
        except UnicodeEncodeError:  # a lone surrogate: nothing the service issues
            return None
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self._clock():
            self._hits += 1
            return entry.identity
        return await self._ask(key, token, client_ip)

    async def _ask(self, key: bytes, token: str, client_ip: str) -> Identity | None:
        """The cache missed: a remembered rejection, the checksum, or one call."""
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and entry.expires <= now:
            self._forget(key)
        rejected_until = self._rejected.get(key)
        if rejected_until is not None:
            if rejected_until > now:
                self._hits += 1
                return None
            del self._rejected[key]
        if plaintext.parse(token) is None:
            return None  # garbage or a typo: the checksum says so without a call
        try:
            binding = self._bindings.current()
        except Exception as error:  # a channel factory that failed
            self._warn_unexpected(error)
            raise VerifierUnavailable from None
        task = binding.pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._lookup(binding, key, token, client_ip)
            )
            binding.pending[key] = task
            task.add_done_callback(lambda done: _settled(binding, key, done))
        # Shielded: one caller giving up must not cancel the others' answer.
        return await asyncio.shield(task)

    async def _lookup(
        self, binding: Binding, key: bytes, token: str, client_ip: str
    ) -> Identity | None:
        try:
            async with binding.calls_allowed:
                self._calls += 1
                # Read before the call: lifetimes start when the question left.
                sent = self._clock()
                answer = await binding.stub.IntrospectToken(
                    pb.IntrospectTokenRequest(token=token, client_ip=client_ip),
                    metadata=self._metadata,
                    timeout=self.timeout,
                )
            if not answer.active:
                self._reject(key, sent + self.negative_ttl)
                return None
            identity = _identity(answer.token)
        except grpc.aio.AioRpcError as error:
            self._warn(
                "tokengrpc's IntrospectToken failed with %s (%s)",
                error.code().name,
                error.details(),
            )
            raise VerifierUnavailable from None
        except Exception as error:
            self._warn_unexpected(error)
            raise VerifierUnavailable from None
        expires = sent + self.cache_ttl
        if identity.expire_time is not None:  # never serve a token past its expiry
            left = identity.expire_time.timestamp() - time.time()
            expires = min(expires, self._clock() + left)
        size = _ENTRY_OVERHEAD + len(identity.name) + len(identity.owner)
        size += sum(len(scope) + 60 for scope in identity.scopes)
        self._remember(key, _Entry(identity, expires, size))
        return identity

    def _reject(self, key: bytes, until: float) -> None:
        if until <= self._clock():
            return
        while len(self._rejected) >= self.max_negative:
            del self._rejected[next(iter(self._rejected))]
        self._rejected[key] = until

    def _remember(self, key: bytes, entry: _Entry) -> None:
        if entry.expires <= self._clock() or entry.size > self.max_bytes:
            return
        self._forget(key)
        while self._cache and (
            len(self._cache) >= self.max_entries or self._bytes + entry.size > self.max_bytes
        ):
            self._forget(next(iter(self._cache)))
        self._cache[key] = entry
        self._bytes += entry.size

    def _forget(self, key: bytes) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _warn(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last_warning < WARN_EVERY:
            return
        self._last_warning = now
        # The server's details never hold the token; the channel's name the address.
        log.warning("denying requests: " + message, *args)

    def _warn_unexpected(self, error: Exception) -> None:
        # The class alone: an exception's text may quote what it was given.
        hint = " (a channel of another event loop?)" if isinstance(error, RuntimeError) else ""
        self._warn("the lookup failed with %s%s", type(error).__name__, hint)

    def cache_info(self) -> CacheInfo:
        """Entries and bytes of accepted tokens; rejections are counted apart."""
        return CacheInfo(len(self._cache), self._bytes, self._hits, self._calls)

    def cache_keys(self) -> list[bytes]:
        """The keys held (SHA-256 digests), so an audit can see no plaintext is kept."""
        return [*self._cache, *self._rejected]

    def clear(self) -> None:
        self._cache.clear()
        self._rejected.clear()
        self._bytes = 0

    async def close(self) -> None:
        """Close the channels the verifier made; a later lookup makes a new one."""
        await self._bindings.close()


def _settled(binding: Binding, key: bytes, task: asyncio.Task[Identity | None]) -> None:
    binding.pending.pop(key, None)
    if not task.cancelled():
        task.exception()  # read, so that a failure every caller left is not reported
