"""The ``TokenStore`` layer that counts uses: each use counted exactly once.

Uses are counted in memory (``record_use``, the hot path: a dict update) and
written in batches (``flush_usage``). Every record handed back holds every
use recorded through this store, whether the use is pending, being written
or written (docs/store.md):

- pending: ``PendingUses`` folds them into every record returned;
- being written: rows the cache held before the batch get it folded in from
  the step it leaves the pending counts (an amendment of the cache below);
  a fresh read racing the write may or may not hold it, so it waits for the
  write and reads again;
- written: fresh reads hold it.

A failed batch goes back to the pending counts in the same step as it stops
being in flight, so no answer in between misses it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, TypeVar

from tokengrpc.errors import Unavailable
from tokengrpc.store.base import (
    NO_ACTOR,
    Actor,
    Cached,
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
from tokengrpc.store.cache import Rows
from tokengrpc.store.cached import SERVICE, TOKEN, CachingStore, page_key
from tokengrpc.store.engine import Engine
from tokengrpc.store.usage import PendingUses, counted

log = logging.getLogger(__name__)

Arg = TypeVar("Arg")
#: A batch as the cache keeps it: plain tuples of atoms, which the garbage
#: collector stops tracking (up to 64 batches stay alive at once).
Folded = Mapping[int, tuple[int, int, str]]


class CountingStore:
    """A ``TokenStore`` over a ``CachingStore``: its records with every use counted."""

    def __init__(self, cached: CachingStore) -> None:
        self._cached = cached
        #: Probed before anything is awaited: a hit is one plain call.
        self._cache = cached.cache
        self._pending = PendingUses()
        #: This process's usage batches being written, each with its end.
        self._usage_writes: list[tuple[Mapping[int, Usage], asyncio.Event]] = []
        self._flush_lock = asyncio.Lock()
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The engine underneath, for its own tests and hooks."""
        return self._cached.engine

    @property
    def writable(self) -> bool:
        return self._cached.writable

    @property
    def outbox(self) -> Outbox:
        return self._cached.engine

    # Reads.

    async def get(self, token_id: int, *, usage: bool = True) -> TokenRecord | None:
        found = self._cache.get((TOKEN, token_id))
        if found is None:
            found = await self._fresh(self._cached.read_token, token_id)
        if not found:
            return None
        # Pending uses are folded in only for callers that look at the usage
        # figures: authentication never does, and gets the cached object itself.
        return self._pending.added(found[0]) if usage else found[0]

    def cached(self, token_id: int) -> TokenRecord | Literal[Cached.MISS] | None:
        found = self._cache.get((TOKEN, token_id))
        if found is None:
            return Cached.MISS
        return found[0] if found else None

    async def get_service_token(self, name: str) -> TokenRecord | None:
        found = self._cache.get((SERVICE, name))
        if found is None:
            found = await self._fresh(self._cached.read_service, name)
        return self._pending.added(found[0]) if found else None

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        key = page_key(query)
        found = None if key is None else self._cache.get(key)
        if found is None:
            found = await self._fresh(self._cached.read_page, query)
        added = self._pending.added
        return [added(record) for record in found]

    async def _fresh(self, read: Callable[[Arg], Awaitable[Rows]], arg: Arg) -> Rows:
        """Rows read past the cache, holding every usage batch handed to the engine."""
        while True:
            records = await read(arg)
            if await self._settled(records):
                return records

    async def _settled(self, records: Sequence[TokenRecord]) -> bool:
        """False (after waiting) if a usage write of ours touching ``records`` was in flight.

        Such a read may or may not hold that batch (it depends on whether the
        commit came first), so the caller reads once more. Cache hits never
        ask: the cache folds the batch into what it held before.
        """
        if not self._usage_writes:
            return True
        writes = [done for uses, done in self._usage_writes if any(r.id in uses for r in records)]
        for done in writes:
            await done.wait()
        return not writes

    async def count(self, query: ListQuery) -> int:
        return await self._cached.count(query)

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        return await self._cached.list_events(query)

    async def is_empty(self) -> bool:
        return await self._cached.is_empty()

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        return await self._cached.count_past_secret_age(now, max_secret_age)

    async def key_fingerprint(self) -> bytes | None:
        return await self._cached.key_fingerprint()

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        return await self._cached.sealed_sample()

    async def ping(self) -> None:
        await self._cached.ping()

    # Writes.

    async def _exact(self, record: TokenRecord | None) -> TokenRecord | None:
        """The record a write returned, with its usage exact.

        A usage batch begun while the write held the engine may or may not be
        in the returned row: wait for it and take the usage figures read after.
        """
        if record is None:
            return None
        if not await self._settled((record,)):
            fresh = await self.get(record.id, usage=False)
            if fresh is not None:
                record = record.with_usage(
                    fresh.usage_count, fresh.last_use_time, fresh.last_use_ip
                )
        return self._pending.added(record)

    async def insert(self, new: NewToken) -> TokenRecord:
        return await self._cached.insert(new)

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        return await self._cached.insert_many(news)

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        return await self._exact(await self._cached.update(token_id, changes, now, actor))

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        return await self._exact(await self._cached.revoke(token_id, now, actor))

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        return await self._exact(await self._cached.rotate(token_id, rotation, actor))

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        return await self._exact(await self._cached.end_grace(token_id, previous_hash, now, actor))

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        await self._cached.record_value_read(token_id, now, actor)

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        return await self._cached.record_key_fingerprint(fingerprint)

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        revoked = await self._cached.revoke_unused(cutoff, now, token_id)
        return [self._pending.added(record) for record in revoked]

    async def next_reminder_wake(self) -> int | None:
        return await self._cached.next_reminder_wake()

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        return await self._cached.advance_reminders(
            now, step, limit, only_own_expiries=only_own_expiries
        )

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        return await self._cached.plan_reminders(max_secret_age, now)

    async def probe_write(self) -> None:
        await self._cached.probe_write()

    # Usage.

    def record_use(self, token_id: int, when: int, address: str = "") -> None:
        self._pending.record(token_id, when, address)

    async def flush_usage(self) -> None:
        async with self._flush_lock:
            batch = self._pending.take()
            if not batch:
                return
            folded = {
                key: (use.count, use.last_use_time, use.last_use_ip) for key, use in batch.items()
            }
            done = asyncio.Event()
            writing = (batch, done)
            # Counted in every answer from this step on, as it leaves the pending counts.
            self._usage_writes.append(writing)
            try:
                await self._cached.write_amending(
                    functools.partial(self._cached.engine.add_usage, batch),
                    functools.partial(_with_batch, folded),
                )
            except BaseException:
                # In the same step as the batch stops being in flight, so no
                # answer in between misses it.
                self._pending.give_back(batch)
                raise
            finally:
                self._usage_writes.remove(writing)
                done.set()

    async def close(self) -> None:
        """Write the pending uses, then close the layers below."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush_usage()
        except Unavailable as error:
            # The process is ending either way: say what is lost, not a traceback.
            log.warning("usage counts not yet written are lost at shutdown: %s", error.message)
        finally:
            await self._cached.close()


def _with_batch(uses: Folded, records: Rows) -> Rows:
    """``records`` with a batch of uses folded in (the cache's amendment)."""
    if not any(record.id in uses for record in records):
        return records
    return tuple(
        record if (use := uses.get(record.id)) is None else counted(record, *use)
        for record in records
    )
