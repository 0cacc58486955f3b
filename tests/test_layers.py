"""The store's layers over any engine: the read cache and usage counting.

Each test runs over the dict-backed engine (``tests/memory.py``), where only
the layers can be wrong, and over SQLite, whose writer is held or failed on
demand through the same ``around_write`` seam. What every engine must do is
in ``test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.memory import Database, MemoryChanges, MemoryEngine
from tokengrpc.errors import Unavailable
from tokengrpc.store import ListQuery, NewToken
from tokengrpc.store.cache import ReadCache
from tokengrpc.store.counting import CountingStore
from tokengrpc.store.open import layered
from tokengrpc.store.sqlite import SqliteEngine, open_sqlite
from tokengrpc.usage import UsageRecorder

Run = Callable[[], Awaitable[Any]]
Around = Callable[[str, Run], Awaitable[Any]]


def _new(name: str, owner: str = "o", now: int = 1) -> NewToken:
    return NewToken(owner, name, b"h" * 32, (), True, None, (), now)


@dataclasses.dataclass
class Layers:
    """Stores on one database of an engine, and the words of that engine's write seam."""

    open: Callable[[], Awaitable[CountingStore]]
    #: Whether a write step is the one that commits (SQLite: COMMIT; memory: each step).
    commits: Callable[[str], bool]
    #: How a usage batch's write and a revocation's begin.
    usage: str
    revoke: str
    #: What a failing disk raises there.
    disk_error: Callable[[], Exception]

    @staticmethod
    def hold(store: CountingStore, around: Around | None) -> None:
        engine = store.engine
        assert isinstance(engine, SqliteEngine | MemoryEngine)
        engine.around_write = around


@pytest.fixture(params=["memory", "sqlite"])
async def layers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Layers]:
    opened: list[CountingStore] = []
    db = Database()

    async def open_one() -> CountingStore:
        if request.param == "memory":
            opened.append(layered(MemoryEngine(db), MemoryChanges(db)))
        else:
            opened.append(layered(*await open_sqlite(tmp_path)))
        return opened[-1]

    if request.param == "memory":
        yield Layers(
            open_one,
            commits=lambda _: True,
            usage="add_usage",
            revoke="revoke",
            disk_error=lambda: Unavailable("the store cannot be written right now"),
        )
    else:
        yield Layers(
            open_one,
            commits=lambda sql: sql == "COMMIT",
            usage="UPDATE tokens SET usage_count",
            revoke="UPDATE tokens SET revoke_time",
            disk_error=lambda: sqlite3.OperationalError("disk I/O error"),
        )
    for store in reversed(opened):
        await store.close()


@pytest.mark.parametrize("held", ["before-commit", "after-commit"])
async def test_own_usage_writes_are_counted_once_cached_or_not(layers: Layers, held: str) -> None:
    """Cached rows count a batch from the moment it is handed over; fresh reads
    made while it is written wait for it; rows kept afterwards do not count it twice."""
    store = await layers.open()
    token = await store.insert(_new("counted"))
    assert (await store.get(token.id)) == token  # cached before the write
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_disk(step: str, run: Run) -> Any:  # the batch's commit held, on demand
        if not layers.commits(step):
            return await run()
        result = await run() if held == "after-commit" else None
        reached.set()
        await release.wait()
        return result if held == "after-commit" else await run()

    layers.hold(store, slow_disk)
    store.record_use(token.id, 30)
    store.record_use(token.id, 50)
    writing = asyncio.create_task(store.flush_usage())
    page = ListQuery(owner="o", include_revoked=False, limit=10)
    try:
        await asyncio.wait_for(reached.wait(), 5)
        cached = await store.get(token.id)
        assert cached is not None
        assert (cached.usage_count, cached.last_use_time) == (2, 50)
        fresh = asyncio.create_task(store.list(page))  # not cached: may or may not hold it
        await asyncio.sleep(0.05)
        assert not fresh.done()
    finally:
        release.set()  # a failed assertion must not leave the store unable to close
    await writing
    (listed,) = await fresh
    assert listed.usage_count == 2
    for _ in range(2):  # the second time, both answers come from the cache
        (listed,) = await store.list(page)
        got = await store.get(token.id)
        assert got is not None
        assert (listed.usage_count, got.usage_count, got.last_use_time) == (2, 2, 50)
    store.record_use(token.id, 60)
    await store.flush_usage()
    (listed,) = await store.list(page)
    got = await store.get(token.id)
    assert got is not None
    assert (listed.usage_count, got.usage_count, got.last_use_time) == (3, 3, 60)


async def test_a_write_that_returns_a_row_counts_a_usage_batch_once(layers: Layers) -> None:
    """A revocation holding the writer when a usage batch begins returns the row
    without that batch; it waits for the batch and reports the uses anyway."""
    store = await layers.open()
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_revoke(step: str, run: Run) -> Any:
        if step.startswith(layers.revoke):
            reached.set()
            await release.wait()
        return await run()

    token = await store.insert(_new("counted"))
    layers.hold(store, slow_revoke)
    revoking = asyncio.create_task(store.revoke(token.id, 99))
    await asyncio.wait_for(reached.wait(), 5)
    store.record_use(token.id, 40)
    store.record_use(token.id, 50)
    counting = asyncio.create_task(store.flush_usage())
    await asyncio.sleep(0)  # the batch is handed over (SQLite: and waits for the writer)
    release.set()
    revoked = await revoking
    await counting
    assert revoked is not None
    assert (revoked.revoke_time, revoked.usage_count, revoked.last_use_time) == (99, 2, 50)


async def test_a_failed_flush_keeps_its_counts(layers: Layers) -> None:
    store = await layers.open()
    token = await store.insert(_new("used"))
    usage = UsageRecorder(store)
    failures = 0

    async def failing_once(step: str, run: Run) -> Any:  # a failing disk, once
        nonlocal failures
        if step.startswith(layers.usage) and not failures:
            failures += 1
            raise layers.disk_error()
        return await run()

    layers.hold(store, failing_once)
    usage.record(token.id, 5)
    await usage.flush()
    assert failures == 1
    counted = await store.get(token.id)
    assert counted is not None
    assert counted.usage_count == 1, "a failed batch is pending again, counted once"
    usage.record(token.id, 7)
    await usage.flush()
    stored = await (await layers.open()).get(token.id)
    assert stored is not None
    assert stored.usage_count == 2


def test_the_read_cache_is_bounded_even_for_empty_answers() -> None:
    changes = MemoryChanges(Database())
    cache = ReadCache(changes, max_rows=3)
    for token_id in range(5):  # made-up ids: each answer is "no such token"
        key = ("get", token_id)
        assert cache.get(key) is None
        cache.put(key, (), cache.mark())
    assert [cache.get(("get", i)) for i in range(5)] == [(), (), (), None, None]
    asyncio.run(changes.announce())  # any write empties it
    assert cache.get(("get", 0)) is None
