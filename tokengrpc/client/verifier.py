"""TokenVerifier: asks tokengrpc's IntrospectToken, remembers answers briefly.

The cache is keyed by SHA-256 of the address and the token, so a heap dump of
a service holds no plaintext it did not already have in its request. It is
bounded in entries and in (estimated) bytes; the oldest entries go first,
which is enough because every entry dies within ``cache_ttl`` anyway.
Concurrent lookups of one token share a single call, and calls in flight
are bounded. A token whose checksum fails is refused without a call; the
rejections the service gives are remembered apart from the accepted tokens,
in a bound of their own, so made-up tokens cannot push real ones out.

It fails closed: when tokengrpc cannot be reached or refuses the verifier's
own token, ``verify`` answers None (and nothing is cached), and the log says
why, never with the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC

import grpc

from tokengrpc import plaintext
from tokengrpc.client.identity import Identity
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

log = logging.getLogger(__name__)

#: Longer than any plaintext the service issues; longer input is not looked up.
MAX_TOKEN_LENGTH = 512
#: At most one warning per this many seconds while tokengrpc is unreachable.
WARN_EVERY = 5.0
# A rough per-entry cost (key, entry, identity, dict slot) for the byte bound.
_ENTRY_OVERHEAD = 400


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
    expires: float  # time.monotonic()
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

    ``target`` is a ``HOST:PORT`` (an insecure channel is made and closed by
    ``close``) or a channel you own. ``cache_ttl`` bounds how long a revoked
    token may still pass; ``negative_ttl`` how long a rejected one stays
    rejected without asking again (say, after being re-activated).
    """

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        token: str,
        *,
        cache_ttl: float = 1.0,
        negative_ttl: float = 1.0,
        max_entries: int = 10_000,
        max_negative: int = 1_000,
        max_bytes: int = 16 * 1024 * 1024,
        max_calls: int = 64,
        timeout: float = 2.0,
    ) -> None:
        if isinstance(target, str):
            self._channel = grpc.aio.insecure_channel(target)
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self._stub = tokens_pb2_grpc.TokenServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._cache: dict[bytes, _Entry] = {}
        self._bytes = 0
        #: Rejections apart, in a bound of their own: anyone can make up tokens
        #: with a valid checksum, and a flood of them must not evict real ones.
        self._rejected: dict[bytes, float] = {}
        self.max_negative = max_negative
        #: IntrospectToken calls in flight at once; more lookups wait their turn.
        self._calls_allowed = asyncio.Semaphore(max_calls)
        self._pending: dict[bytes, asyncio.Task[Identity | None]] = {}
        self._hits = 0
        self._calls = 0
        self._last_warning = -WARN_EVERY

    async def verify(self, token: str | None, client_ip: str = "") -> Identity | None:
        """The identity of an active token presented from ``client_ip``, else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        key = hashlib.sha256(f"{client_ip}\n{token}".encode()).digest()
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > time.monotonic():
                self._hits += 1
                return entry.identity
            self._forget(key)
        rejected_until = self._rejected.get(key)
        if rejected_until is not None:
            if rejected_until > time.monotonic():
                self._hits += 1
                return None
            del self._rejected[key]
        if plaintext.parse(token) is None:
            return None  # garbage or a typo: the checksum says so without a call
        task = self._pending.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(key, token, client_ip))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: one caller giving up must not cancel the others' answer.
        return await asyncio.shield(task)

    async def _lookup(self, key: bytes, token: str, client_ip: str) -> Identity | None:
        try:
            async with self._calls_allowed:
                self._calls += 1
                answer = await self._stub.IntrospectToken(
                    pb.IntrospectTokenRequest(token=token, client_ip=client_ip),
                    metadata=self._metadata,
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as error:
            self._warn(error)
            return None
        now = time.monotonic()
        if not answer.active:
            if self.negative_ttl > 0:
                while len(self._rejected) >= self.max_negative:
                    del self._rejected[next(iter(self._rejected))]
                self._rejected[key] = now + self.negative_ttl
            return None
        identity = _identity(answer.token)
        ttl = self.cache_ttl
        if identity.expire_time is not None:  # never serve a token past its expiry
            ttl = min(ttl, identity.expire_time.timestamp() - time.time())
        size = _ENTRY_OVERHEAD + len(identity.name) + len(identity.owner)
        size += sum(len(scope) + 60 for scope in identity.scopes)
        self._remember(key, _Entry(identity, now + ttl, size))
        return identity

    def _remember(self, key: bytes, entry: _Entry) -> None:
        if entry.expires <= time.monotonic() or entry.size > self.max_bytes:
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

    def _warn(self, error: grpc.aio.AioRpcError) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY:
            return
        self._last_warning = now
        # The server's details never hold the token; the channel's name the address.
        log.warning(
            "denying requests: tokengrpc's IntrospectToken failed with %s (%s)",
            error.code().name,
            error.details(),
        )

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
        if self._owns_channel:
            await self._channel.close()
