"""The ``TokenStore`` every engine gets: a read cache, change announcement, exact usage.

An engine only runs SQL. This layer, the same for every engine:

- answers short reads from a ``ReadCache`` while ``Changes.current()`` has
  not moved, and announces every write of this process once it has ended
  (shielded: a caller gone mid-write must not leave a commit unannounced);
- is the one home of "each use counted exactly once": uses are counted in
  memory (``record_use``), written in batches (``flush_usage``), and every
  record handed back holds them whether pending, being written or written
  (docs/store.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from tokengrpc.errors import Unavailable
from tokengrpc.store.base import (
    NO_ACTOR,
    Actor,
    EventQuery,
    EventRecord,
    ListQuery,
    NewToken,
    Rotation,
    TokenChanges,
    TokenRecord,
    Usage,
)
from tokengrpc.store.cache import ReadCache
from tokengrpc.store.engine import Changes, Engine
from tokengrpc.store.usage import PendingUses

log = logging.getLogger(__name__)

T = TypeVar("T")
Arg = TypeVar("Arg")

#: Keyset pages up to this many rows (a page of 200 and the row that tells
#: whether more follow) are cached; bigger ones and offset pages are not.
_CACHED_PAGE = 201


class CachingStore:
    """A ``TokenStore`` over any ``Engine`` and its ``Changes``."""

    def __init__(self, engine: Engine, changes: Changes, max_rows: int = 20_000) -> None:
        #: The engine underneath, for its own tests and hooks.
        self.engine = engine
        self._changes = changes
        self._cache = ReadCache(changes, max_rows)
        self._pending = PendingUses()
        #: This process's usage batches being written, each with its end.
        self._usage_writes: list[tuple[Mapping[int, Usage], asyncio.Event]] = []
        self._flush_lock = asyncio.Lock()
        self._closed = False

    @property
    def writable(self) -> bool:
        return self.engine.writable

    # Reads.

    async def get(self, token_id: int, *, usage: bool = True) -> TokenRecord | None:
        key = ("get", token_id)
        found = self._cache.get(key)
        if found is None:
            found = await self._fresh(key, self._get_rows, token_id)
        if not found:
            return None
        # Building a record costs more than the rest of a cache hit: skipped
        # for callers that never look at the usage figures (authentication).
        return self._pending.added(found[0]) if usage else found[0]

    async def _get_written(self, token_id: int) -> TokenRecord | None:
        """The token with every use handed to the engine, but not the pending ones."""
        key = ("get", token_id)
        found = self._cache.get(key)
        if found is None:
            found = await self._fresh(key, self._get_rows, token_id)
        return found[0] if found else None

    async def _get_rows(self, token_id: int) -> tuple[TokenRecord, ...]:
        record = await self.engine.get(token_id)
        return () if record is None else (record,)

    async def get_service_token(self, name: str) -> TokenRecord | None:
        key = ("service", name)
        found = self._cache.get(key)
        if found is None:
            found = await self._fresh(key, self._service_rows, name)
        return self._pending.added(found[0]) if found else None

    async def _service_rows(self, name: str) -> tuple[TokenRecord, ...]:
        record = await self.engine.get_service_token(name)
        return () if record is None else (record,)

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        if query.offset == 0 and query.limit <= _CACHED_PAGE:
            key = ("list", query.owner, query.include_revoked, query.after_id, query.limit)
            found = self._cache.get(key)
            if found is None:
                found = await self._fresh(key, self._list_rows, query)
            records: Sequence[TokenRecord] = found
        else:
            records = await self._list_rows(query)
            while not await self._settled(records):
                records = await self._list_rows(query)
        added = self._pending.added
        return [added(record) for record in records]

    async def _list_rows(self, query: ListQuery) -> tuple[TokenRecord, ...]:
        return tuple(await self.engine.list(query))

    async def count(self, query: ListQuery) -> int:
        key = ("count", query.owner, query.include_revoked)
        found = self._cache.get_count(key)
        if found is not None:
            return found
        mark = self._cache.mark()
        counted = await self.engine.count(query)
        self._cache.put_count(key, counted, mark)
        return counted

    async def _fresh(
        self,
        key: Hashable,
        read: Callable[[Arg], Awaitable[tuple[TokenRecord, ...]]],
        arg: Arg,
    ) -> tuple[TokenRecord, ...]:
        """Rows read from the engine, kept in the cache if nothing was written meanwhile."""
        while True:
            mark = self._cache.mark()
            records = await read(arg)
            self._cache.put(key, records, mark)
            if await self._settled(records):
                return records

    async def _settled(self, records: Sequence[TokenRecord]) -> bool:
        """False (after waiting) if a usage write of ours touching ``records`` was in flight.

        Such a read may or may not hold that batch (it depends on whether the
        commit came first), so the caller reads once more. Cache hits never
        ask: they know they do not hold it.
        """
        if not self._usage_writes:
            return True
        writes = [done for uses, done in self._usage_writes if any(r.id in uses for r in records)]
        for done in writes:
            await done.wait()
        return not writes

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        # Not cached: an audit listing is rare and must show the latest.
        return await self.engine.list_events(query)

    async def is_empty(self) -> bool:
        return await self.engine.is_empty()

    async def key_fingerprint(self) -> bytes | None:
        return await self.engine.key_fingerprint()

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        return await self.engine.sealed_sample()

    async def ping(self) -> None:
        await self.engine.ping()

    # Writes.

    async def _write(
        self, work: Callable[[], Awaitable[T]], usage: Mapping[int, Usage] | None = None
    ) -> T:
        """Run a write to its end, then announce it to every process's cache.

        A ``usage`` write only adds those counts, which this cache already
        counts, so it keeps the cache unless something else was announced.
        """
        self._cache.begin_write()  # now, not when the task first runs
        if usage is not None:
            self._cache.count_usage(usage)

        async def announced() -> T:
            done = False
            try:
                result = await work()
                done = True
                return result
            finally:
                try:
                    if usage is not None and not done:
                        self._cache.forget()  # its rows count a batch that did not land
                    before = await self._changes.announce()
                    if done and usage is not None:
                        self._cache.usage_announced(before)
                finally:
                    self._cache.end_write()

        return await asyncio.shield(announced())

    async def _exact(self, record: TokenRecord | None) -> TokenRecord | None:
        """The record a write returned, with its usage exact.

        A usage batch begun while the write held the engine may or may not be
        in the returned row: wait for it and take the usage figures read after.
        """
        if record is None:
            return None
        if not await self._settled((record,)):
            fresh = await self._get_written(record.id)
            if fresh is not None:
                record = record.with_usage(
                    fresh.usage_count, fresh.last_use_time, fresh.last_use_ip
                )
        return self._pending.added(record)

    async def insert(self, new: NewToken) -> TokenRecord:
        return await self._write(functools.partial(self.engine.insert, new))

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        return await self._write(functools.partial(self.engine.insert_many, news))

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        work = functools.partial(self.engine.update, token_id, changes, now, actor)
        return await self._exact(await self._write(work))

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        work = functools.partial(self.engine.revoke, token_id, now, actor)
        return await self._exact(await self._write(work))

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        work = functools.partial(self.engine.rotate, token_id, rotation, actor)
        return await self._exact(await self._write(work))

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        work = functools.partial(self.engine.end_grace, token_id, previous_hash, now, actor)
        return await self._exact(await self._write(work))

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        await self._write(functools.partial(self.engine.record_value_read, token_id, now, actor))

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        return await self._write(functools.partial(self.engine.record_key_fingerprint, fingerprint))

    async def probe_write(self) -> None:
        # Leaves no row behind: nothing to announce.
        await self.engine.probe_write()

    # Usage.

    def record_use(self, token_id: int, when: int, address: str = "") -> None:
        self._pending.record(token_id, when, address)

    async def flush_usage(self) -> None:
        async with self._flush_lock:
            batch = self._pending.take()
            if not batch:
                return
            # Counted in every answer from this step on, as it leaves the pending counts.
            done = asyncio.Event()
            writing = (batch, done)
            self._usage_writes.append(writing)
            try:
                await self._write(functools.partial(self.engine.add_usage, batch), usage=batch)
            except BaseException:
                # In the same step as the batch stops being in flight, so no
                # answer in between misses it.
                self._pending.give_back(batch)
                raise
            finally:
                self._usage_writes.remove(writing)
                done.set()

    async def close(self) -> None:
        """Write the pending uses, then close the engine and stop watching for changes."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush_usage()
        except Unavailable as error:
            # The process is ending either way: say what is lost, not a traceback.
            log.warning("usage counts not yet written are lost at shutdown: %s", error.message)
        finally:
            try:
                await self.engine.close()
            finally:
                await self._changes.close()
