"""SQLite only: query plans, group commit, the counter file, a writer held on demand.

Slow or failing disks come through the engine's public ``around_write`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tokengrpc.store import ListQuery, NameTaken, NewToken, TokenRecord
from tokengrpc.store.cache import ReadCache
from tokengrpc.store.cached import CachingStore
from tokengrpc.store.sqlite import Generation, SqliteEngine, open_sqlite
from tokengrpc.store.sqlite.engine import _COUNT, _COUNT_UP_TO, _GET, _LIST
from tokengrpc.usage import UsageRecorder

Run = Callable[[], Awaitable[Any]]


def _new(name: str, owner: str = "o", now: int = 1) -> NewToken:
    return NewToken(owner, name, b"h" * 32, (), True, None, (), now)


def _engine(store: CachingStore) -> SqliteEngine:
    assert isinstance(store.engine, SqliteEngine)
    return store.engine


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[CachingStore]]]:
    """Stores on one data dir; two stand for two processes."""
    opened: list[CachingStore] = []

    async def open_one() -> CachingStore:
        opened.append(await open_sqlite(tmp_path))
        return opened[-1]

    try:
        yield open_one
    finally:
        for store in reversed(opened):
            await store.close()


def _plan(db: Path, sql: str, params: tuple[object, ...]) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


async def test_hot_queries_use_indexes(tmp_path: Path) -> None:
    await (await open_sqlite(tmp_path)).close()
    db = tmp_path / "tokens.db"
    assert "USING INTEGER PRIMARY KEY" in _plan(db, _GET, (1,))
    for (_, keyset), sql in _LIST.items():
        params: tuple[object, ...] = ("o", 0, 10) if keyset else ("o", 0, 10, 5)
        plan = _plan(db, sql, params)
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
        assert "SCAN tokens" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    for sql in (*_COUNT.values(), *_COUNT_UP_TO.values()):
        assert "INDEX tokens_" in _plan(db, sql, ("o",))


async def test_a_change_behind_the_stores_back_is_not_announced(
    tmp_path: Path, stores: Callable[[], Awaitable[CachingStore]]
) -> None:
    """The ``sqlite3`` shell bumps no counter: cached counts stand until a write through us."""
    store, other = await stores(), await stores()
    live = ListQuery(owner="o", include_revoked=False, limit=1)
    await store.insert(_new("a"))
    assert await store.count(live) == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db")) as shell, shell:
        shell.execute(
            "INSERT INTO tokens (owner, name, secret_hash, scopes, allowed_ips, active,"
            " create_time, update_time) VALUES ('o', 'behind', x'00', '[]', '[]', 1, 1, 1)"
        )
    assert await store.count(live) == 1
    await other.insert(_new("b"))
    assert await store.count(live) == 3


async def test_a_cancelled_write_is_still_announced(
    tmp_path: Path, stores: Callable[[], Awaitable[CachingStore]]
) -> None:
    """A caller gone mid-write (a deadline) must not leave a commit other caches miss."""
    here, there = await stores(), await stores()
    blocker = sqlite3.connect(tmp_path / "tokens.db", isolation_level=None)
    try:
        token = await here.insert(_new("doomed"))
        blocker.execute("BEGIN IMMEDIATE")  # the revoke below waits in SQLite for this lock
        revoking = asyncio.create_task(there.revoke(token.id, 9))
        await asyncio.sleep(0.1)
        revoking.cancel()
        await asyncio.sleep(0.1)
        assert (await here.get(token.id)) == token  # read, and cached, before the commit
        blocker.execute("ROLLBACK")  # the revoke goes on without its caller and commits
        # Nothing to await: the write has no caller left, so poll.
        async with asyncio.timeout(5):
            while (seen := await here.get(token.id)) is not None and seen.revoke_time is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert seen is not None
        assert seen.revoke_time == 9
    finally:
        blocker.close()


def test_the_generation_is_shared_and_only_grows(tmp_path: Path) -> None:
    one, two = Generation(tmp_path / "g"), Generation(tmp_path / "g")
    try:
        start = one.current()
        one.bump()
        two.bump()
        assert (one.current(), two.current()) == (start + 2, start + 2)
        assert (tmp_path / "g").stat().st_mode & 0o777 == 0o600
    finally:
        one.close_now()
        two.close_now()
        one.close_now()  # closing twice is harmless


async def test_own_usage_writes_are_counted_once_cached_or_not(
    stores: Callable[[], Awaitable[CachingStore]],
) -> None:
    """Cached rows count a batch from the moment it is handed over; fresh reads
    made while it is written wait for it; rows kept afterwards do not count it twice."""
    store = await stores()
    token = await store.insert(_new("counted"))
    assert (await store.get(token.id)) == token  # cached before the write
    committed, release = asyncio.Event(), asyncio.Event()

    async def held(sql: str, run: Run) -> Any:  # a slow disk: hold the write after its commit
        result = await run()
        if sql == "COMMIT":
            committed.set()
            await release.wait()
        return result

    _engine(store).around_write = held
    store.record_use(token.id, 30)
    store.record_use(token.id, 50)
    writing = asyncio.create_task(store.flush_usage())
    await asyncio.wait_for(committed.wait(), 5)
    cached = await store.get(token.id)
    assert cached is not None
    assert (cached.usage_count, cached.last_use_time) == (2, 50)
    page = ListQuery(owner="o", include_revoked=False, limit=10)
    fresh = asyncio.create_task(store.list(page))  # not cached: may or may not hold it
    await asyncio.sleep(0.05)
    assert not fresh.done()
    release.set()
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


async def test_concurrent_inserts_share_a_commit_and_keep_their_own_outcomes(
    stores: Callable[[], Awaitable[CachingStore]],
) -> None:
    store = await stores()
    inserts: list[str] = []

    async def counted(sql: str, run: Run) -> Any:
        if sql.startswith("INSERT INTO tokens"):
            inserts.append(sql)
        return await run()

    _engine(store).around_write = counted
    news = [_new(f"t{i}", now=i) for i in range(40)]
    records = await asyncio.gather(*(store.insert(new) for new in news))
    assert len(inserts) <= 2, "the first row alone, then the other 39 together"
    assert [(r.name, r.create_time) for r in records] == [(n.name, n.now) for n in news]
    assert len({r.id for r in records}) == 40
    for record in records:
        assert await store.get(record.id) == record

    # One duplicate service name in a group fails alone; the others land.
    await store.insert(_new("deploy", owner=""))
    mixed = [_new("a"), _new("deploy", owner=""), _new("b")]
    outcomes = await asyncio.gather(*(store.insert(new) for new in mixed), return_exceptions=True)
    assert isinstance(outcomes[1], NameTaken)
    landed = [o for o in outcomes if isinstance(o, TokenRecord)]
    assert [r.name for r in landed] == ["a", "b"]
    assert await store.count(ListQuery(owner="o", include_revoked=True, limit=1)) == 42


async def test_a_write_that_returns_a_row_counts_a_usage_batch_once(
    stores: Callable[[], Awaitable[CachingStore]],
) -> None:
    """A revocation holding the writer when a usage batch begins returns the row
    without that batch; it waits for the batch and reports the uses anyway."""
    store = await stores()
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_revoke(sql: str, run: Run) -> Any:
        if sql.startswith("UPDATE tokens SET revoke_time"):
            reached.set()
            await release.wait()
        return await run()

    token = await store.insert(_new("counted"))
    _engine(store).around_write = slow_revoke
    revoking = asyncio.create_task(store.revoke(token.id, 99))
    await asyncio.wait_for(reached.wait(), 5)
    store.record_use(token.id, 40)
    store.record_use(token.id, 50)
    counting = asyncio.create_task(store.flush_usage())
    await asyncio.sleep(0)  # the batch is handed over, and waits for the writer
    release.set()
    revoked = await revoking
    await counting
    assert revoked is not None
    assert (revoked.revoke_time, revoked.usage_count, revoked.last_use_time) == (99, 2, 50)


async def test_a_failed_flush_keeps_its_counts(
    stores: Callable[[], Awaitable[CachingStore]],
) -> None:
    store = await stores()
    token = await store.insert(_new("used"))
    usage = UsageRecorder(store)
    failures = 0

    async def failing_once(sql: str, run: Run) -> Any:  # a failing disk, once
        nonlocal failures
        if sql.startswith("UPDATE tokens SET usage_count") and not failures:
            failures += 1
            raise sqlite3.OperationalError("disk I/O error")
        return await run()

    _engine(store).around_write = failing_once
    usage.record(token.id, 5)
    await usage.flush()
    assert failures == 1
    counted = await store.get(token.id)
    assert counted is not None
    assert counted.usage_count == 1, "a failed batch is pending again, counted once"
    usage.record(token.id, 7)
    await usage.flush()
    stored = await (await stores()).get(token.id)
    assert stored is not None
    assert stored.usage_count == 2


def test_the_read_cache_is_bounded_even_for_empty_answers(tmp_path: Path) -> None:
    generation = Generation(tmp_path / "g")
    try:
        cache = ReadCache(generation, max_rows=3)
        for token_id in range(5):  # made-up ids: each answer is "no such token"
            key = ("get", token_id)
            assert cache.get(key) is None
            cache.put(key, (), cache.mark())
        assert [cache.get(("get", i)) for i in range(5)] == [(), (), (), None, None]
        generation.bump()  # any write empties it
        assert cache.get(("get", 0)) is None
    finally:
        generation.close_now()
