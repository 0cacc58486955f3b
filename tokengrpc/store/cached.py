"""The read cache over an engine, and the announcement of every write.

An engine only runs SQL. This layer, the same for every engine, answers
short reads from a ``ReadCache`` while ``Changes.current()`` has not moved,
and announces every write of this process once it has ended (shielded: a
caller gone mid-write must not leave a commit unannounced). It knows nothing
of usage counts: ``CountingStore`` (``counting.py``) is the layer over it
that does, and ``open.py`` puts the two together (docs/store.md).

Keys are operations, not SQL: ``(TOKEN, id)``, ``(SERVICE, name)``,
``(PAGE, owner, include_revoked, after_id, limit, after_name)``, ``(COUNT, owner,
include_revoked)``. The layer above probes ``cache.get`` with the first three
before it awaits anything: a cache hit is a plain call.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TypeVar

from tokengrpc.store.base import (
    Actor,
    EventQuery,
    EventRecord,
    ListQuery,
    NewToken,
    ReminderStep,
    Rotation,
    TokenChanges,
    TokenRecord,
)
from tokengrpc.store.cache import Amendment, ReadCache, Rows
from tokengrpc.store.engine import Changes, Engine

T = TypeVar("T")
Arg = TypeVar("Arg")

TOKEN = "get"  # noqa: S105 (a cache key, not a secret)
SERVICE = "service"
PAGE = "list"
COUNT = "count"

#: Keyset pages up to this many rows (a page of 200 and the row that tells
#: whether more follow) are cached; bigger ones and offset pages are not.
_CACHED_PAGE = 201


def page_key(query: ListQuery) -> Hashable | None:
    """The key of a page the cache keeps; None for one it does not."""
    if query.offset == 0 and query.limit <= _CACHED_PAGE:
        return (
            PAGE,
            query.owner,
            query.include_revoked,
            query.after_id,
            query.limit,
            query.after_name,
        )
    return None


class CachingStore:
    """An ``Engine``'s reads kept in memory while nobody writes; its writes announced."""

    def __init__(self, engine: Engine, changes: Changes, max_rows: int = 20_000) -> None:
        #: The engine underneath, for its own tests and hooks.
        self.engine = engine
        self._changes = changes
        #: Its ``get(key)`` is the rows held for a key while still valid, else
        #: None: the layer above probes it first, so a hit costs no await.
        self.cache = self._cache = ReadCache(changes, max_rows)

    @property
    def writable(self) -> bool:
        return self.engine.writable

    # Reads: from the engine, kept if nothing was written meanwhile.

    async def read_token(self, token_id: int) -> Rows:
        record = await self._kept((TOKEN, token_id), self.engine.get, token_id)
        return () if record is None else (record,)

    async def read_service(self, name: str) -> Rows:
        record = await self._kept((SERVICE, name), self.engine.get_service_token, name)
        return () if record is None else (record,)

    async def read_page(self, query: ListQuery) -> Rows:
        mark = self._cache.mark()
        records = tuple(await self.engine.list(query))
        key = page_key(query)
        if key is not None:
            self._cache.put(key, records, mark)
        return records

    async def _kept(
        self, key: Hashable, read: Callable[[Arg], Awaitable[TokenRecord | None]], arg: Arg
    ) -> TokenRecord | None:
        mark = self._cache.mark()
        record = await read(arg)
        self._cache.put(key, () if record is None else (record,), mark)
        return record

    async def count(self, query: ListQuery) -> int:
        key = (COUNT, query.owner, query.include_revoked)
        found = self._cache.get_count(key)
        if found is not None:
            return found
        mark = self._cache.mark()
        counted = await self.engine.count(query)
        self._cache.put_count(key, counted, mark)
        return counted

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        # Not cached: an audit listing is rare and must show the latest.
        return await self.engine.list_events(query)

    async def is_empty(self) -> bool:
        return await self.engine.is_empty()

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        return await self.engine.count_past_secret_age(now, max_secret_age)

    async def key_fingerprint(self) -> bytes | None:
        return await self.engine.key_fingerprint()

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        return await self.engine.sealed_sample()

    async def ping(self) -> None:
        await self.engine.ping()

    # Writes.

    async def _write(
        self, work: Callable[[], Awaitable[T]], amendment: Amendment | None = None
    ) -> T:
        """Run a write to its end, then announce it to every process's cache."""
        self._cache.begin_write()  # now, not when the task first runs
        if amendment is not None:
            self._cache.amend(amendment)

        async def announced() -> T:
            done = False
            try:
                result = await work()
                done = True
                return result
            finally:
                try:
                    if amendment is not None and not done:
                        self._cache.forget()  # its rows hold a write that did not land
                    before = await self._changes.announce()
                    if done and amendment is not None:
                        self._cache.amended_write_announced(before)
                finally:
                    self._cache.end_write()

        return await asyncio.shield(announced())

    async def write_amending(self, work: Callable[[], Awaitable[T]], amendment: Amendment) -> T:
        """A write whose whole effect on rows is ``amendment`` (usage counts):
        rows held get it from now on, and stay held after it unless another
        process wrote meanwhile. Rows read while it runs may or may not hold
        it: the caller knows which writes it has in flight, and reads again."""
        return await self._write(work, amendment)

    async def insert(self, new: NewToken) -> TokenRecord:
        return await self._write(functools.partial(self.engine.insert, new))

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        return await self._write(functools.partial(self.engine.insert_many, news))

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor
    ) -> TokenRecord | None:
        return await self._write(
            functools.partial(self.engine.update, token_id, changes, now, actor)
        )

    async def revoke(self, token_id: int, now: int, actor: Actor) -> TokenRecord | None:
        return await self._write(functools.partial(self.engine.revoke, token_id, now, actor))

    async def rotate(self, token_id: int, rotation: Rotation, actor: Actor) -> TokenRecord | None:
        return await self._write(functools.partial(self.engine.rotate, token_id, rotation, actor))

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor
    ) -> TokenRecord | None:
        work = functools.partial(self.engine.end_grace, token_id, previous_hash, now, actor)
        return await self._write(work)

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        await self._write(functools.partial(self.engine.record_value_read, token_id, now, actor))

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        return await self._write(functools.partial(self.engine.record_key_fingerprint, fingerprint))

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        return await self._write(
            functools.partial(self.engine.revoke_unused, cutoff, now, token_id)
        )

    async def next_reminder_wake(self) -> int | None:
        return await self.engine.next_reminder_wake()

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        work = functools.partial(
            self.engine.advance_reminders, now, step, limit, only_own_expiries=only_own_expiries
        )
        return await self._write(work)

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        return await self._write(functools.partial(self.engine.plan_reminders, max_secret_age, now))

    async def probe_write(self) -> None:
        # Leaves no row behind: nothing to announce.
        await self.engine.probe_write()

    async def close(self) -> None:
        """Close the engine, then stop watching for changes."""
        try:
            await self.engine.close()
        finally:
            await self._changes.close()
