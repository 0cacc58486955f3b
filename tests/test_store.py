"""The SQLite store: indexes, durability settings, sealing, usage batches."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tokengrpc.sealing import Sealer, SecretKeyError, decode_key, load_or_create_key
from tokengrpc.store import ListQuery, NameTaken, NewToken, TokenRecord, Usage
from tokengrpc.store.freshness import Generation, ReadCache
from tokengrpc.store.sqlite import _COUNT, _COUNT_UP_TO, _GET, _LIST, SqliteStore
from tokengrpc.usage import UsageRecorder


def _new(name: str, owner: str = "o", now: int = 1) -> NewToken:
    return NewToken(owner, name, b"h" * 32, (), True, None, (), now)


Fetch = Callable[..., Awaitable[Any]]


@contextlib.contextmanager
def _fetch_through(store: SqliteStore, wrapper: Fetch) -> Iterator[None]:
    """The writer's ``execute_fetchall`` through ``wrapper(real, sql, *args)``: a disk
    watched or slowed on demand, for the block."""
    writer = store._writer
    real = writer.execute_fetchall
    writer.execute_fetchall = functools.partial(wrapper, real)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        writer.execute_fetchall = real  # type: ignore[method-assign]


def _plan(db: Path, sql: str, params: tuple[object, ...]) -> str:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


async def test_hot_queries_use_indexes(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    await store.close()
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


async def test_service_names_unique_only_while_live(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        first = await store.insert(_new("svc", owner=""))
        with pytest.raises(NameTaken):
            await store.insert(_new("svc", owner=""))
        await store.insert(_new("svc", owner="a person"))
        assert await store.revoke(first.id, 5) is not None
        assert await store.revoke(first.id, 6) is None
        again = await store.insert(_new("svc", owner=""))
        assert again.id > first.id
        found = await store.get_service_token("svc")
        assert found is not None
        assert found.id == again.id
    finally:
        await store.close()


async def test_list_and_count(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        ids = [(await store.insert(_new(f"t{i}"))).id for i in range(5)]
        await store.revoke(ids[1], 9)
        live = ListQuery(owner="o", include_revoked=False, limit=10)
        assert [r.id for r in await store.list(live)] == [ids[0], *ids[2:]]
        assert await store.count(live) == 4
        every = ListQuery(owner="o", include_revoked=True, limit=2, after_id=ids[1])
        assert [r.id for r in await store.list(every)] == ids[2:4]
        paged = ListQuery(owner="o", include_revoked=True, limit=2, offset=3)
        assert [r.id for r in await store.list(paged)] == ids[3:5]
    finally:
        await store.close()


async def test_usage_batches_and_shutdown_flush(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    token = await store.insert(_new("used"))
    usage = UsageRecorder(store, interval=3600)
    usage.start()
    for when in (10, 30, 20):
        usage.record(token.id, when)
    assert usage.overlay(token)[0] == 3
    await usage.stop()  # the timer never fired: stop() must flush
    stored = await store.get(token.id)
    assert stored is not None
    assert (stored.usage_count, stored.last_use_time) == (3, 30)
    await store.close()


async def test_a_failed_flush_keeps_its_counts(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    token = await store.insert(_new("used"))
    usage = UsageRecorder(store)

    calls = 0
    real_add = store.add_usage

    async def flaky(uses: Mapping[int, Usage]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("disk I/O error")
        await real_add(uses)

    store.add_usage = flaky  # type: ignore[method-assign]  # a failing disk, once
    usage.record(token.id, 5)
    await usage.flush()
    usage.record(token.id, 7)
    await usage.flush()
    stored = await store.get(token.id)
    assert stored is not None
    assert stored.usage_count == 2
    await store.close()


def test_sealing_binds_values_to_their_row(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path, None)
    assert load_or_create_key(tmp_path, None) == key, "the key file is reused"
    sealer = Sealer(key)
    sealed = sealer.seal("tgr_secret", b"row-1")
    assert b"tgr_secret" not in sealed
    assert sealer.open(sealed, b"row-1") == "tgr_secret"
    assert sealer.open(sealed, b"row-2") is None
    assert Sealer(bytes(32)).open(sealed, b"row-1") is None


def test_secret_key_from_the_environment() -> None:
    assert decode_key("00" * 32) == bytes(32)
    assert decode_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") == bytes(32)
    with pytest.raises(SecretKeyError):
        decode_key("too short")


async def test_counts_above_the_inline_limit_are_exact(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    try:
        await store.insert_many([_new(f"t{i}", owner="big") for i in range(1234)])
        await store.insert_many([_new(f"t{i}", owner="small") for i in range(7)])
        query = ListQuery(owner="big", include_revoked=False, limit=1)
        assert await store.count(query) == 1234
        assert await store.count(query) == 1234  # from the cache
        assert await store.count(ListQuery(owner="small", include_revoked=True, limit=1)) == 7
        await store.insert(_new("one more", owner="big"))
        assert await store.count(query) == 1235
    finally:
        await store.close()


async def test_cached_counts_follow_every_write_in_any_process(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path)
    other = await SqliteStore.open(tmp_path)  # another process on the same data dir
    try:
        live = ListQuery(owner="o", include_revoked=False, limit=1)
        every = ListQuery(owner="o", include_revoked=True, limit=1)
        first = await store.insert(_new("a"))
        assert (await store.count(live), await store.count(every)) == (1, 1)
        await store.add_usage({first.id: Usage(3, 7)})  # usage keeps counts (and the cache)
        assert (await store.count(live), await store.count(every)) == (1, 1)
        with sqlite3.connect(tmp_path / "tokens.db") as shell:  # unannounced: still cached
            shell.execute(
                "INSERT INTO tokens (owner, name, secret_hash, scopes, allowed_ips, active,"
                " create_time, update_time) VALUES ('o', 'behind', x'00', '[]', '[]', 1, 1, 1)"
            )
        shell.close()
        assert (await store.count(live), await store.count(every)) == (1, 1)
        await other.insert(_new("b"))
        assert (await store.count(live), await store.count(every)) == (3, 3)
        await other.revoke(first.id, 9)
        assert (await store.count(live), await store.count(every)) == (2, 3)
    finally:
        await other.close()
        await store.close()


async def test_a_write_in_another_store_is_seen_by_the_very_next_read(tmp_path: Path) -> None:
    """Two stores on one data dir stand for two processes: reads are cached, never stale."""
    here, there = await SqliteStore.open(tmp_path), await SqliteStore.open(tmp_path)
    try:
        token = await here.insert(_new("shared"))
        page = ListQuery(owner="o", include_revoked=False, limit=10)
        for _ in range(2):  # the second answer comes from the cache
            assert (await here.get(token.id)) == token
            assert [r.id for r in await here.list(page)] == [token.id]
        added = await there.insert(_new("later"))
        assert [r.id for r in await here.list(page)] == [token.id, added.id]
        await there.revoke(token.id, 9)
        seen = await here.get(token.id)
        assert seen is not None
        assert seen.revoke_time == 9
        await there.add_usage({added.id: Usage(4, 11)})
        used = await here.get(added.id)
        assert used is not None
        assert (used.usage_count, used.last_use_time) == (4, 11)
    finally:
        await here.close()
        await there.close()


async def test_a_cancelled_write_is_still_announced(tmp_path: Path) -> None:
    """A caller gone mid-write (a deadline) must not leave a commit other caches miss."""
    here, there = await SqliteStore.open(tmp_path), await SqliteStore.open(tmp_path)
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
        await here.close()
        await there.close()


def test_the_generation_is_shared_and_only_grows(tmp_path: Path) -> None:
    one, two = Generation(tmp_path / "g"), Generation(tmp_path / "g")
    try:
        start = one.current()
        one.bump()
        two.bump()
        assert (one.current(), two.current()) == (start + 2, start + 2)
        assert (tmp_path / "g").stat().st_mode & 0o777 == 0o600
    finally:
        one.close()
        two.close()
        one.close()  # closing twice is harmless


async def test_own_usage_writes_are_counted_once_cached_or_not(tmp_path: Path) -> None:
    """Cached rows count a batch from the moment it is handed over; fresh reads
    made while it is written wait for it; rows kept afterwards do not count it twice."""
    store = await SqliteStore.open(tmp_path)
    try:
        token = await store.insert(_new("counted"))
        assert (await store.get(token.id)) == token  # cached before the write
        writer = store._writer  # a slow disk on demand: hold the write after its commit
        real_execute = writer.execute
        committed, release = asyncio.Event(), asyncio.Event()

        async def held(sql: str, *args: Any) -> Any:
            result = await real_execute(sql, *args)
            if sql == "COMMIT":
                committed.set()
                await release.wait()
            return result

        writer.execute = held  # type: ignore[method-assign,assignment]
        writing = asyncio.create_task(store.add_usage({token.id: Usage(2, 50)}))
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
        await store.add_usage({token.id: Usage(1, 60)})
        (listed,) = await store.list(page)
        got = await store.get(token.id)
        assert got is not None
        assert (listed.usage_count, got.usage_count, got.last_use_time) == (3, 3, 60)
    finally:
        await store.close()


async def test_concurrent_inserts_share_a_commit_and_keep_their_own_outcomes(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path)
    statements: list[str] = []

    async def counted(real: Fetch, sql: str, *args: Any) -> Any:
        statements.append(sql)
        return await real(sql, *args)

    try:
        with _fetch_through(store, counted):
            news = [_new(f"t{i}", now=i) for i in range(40)]
            records = await asyncio.gather(*(store.insert(new) for new in news))
            assert len(statements) <= 2, "the first row alone, then the other 39 together"
            assert [(r.name, r.create_time) for r in records] == [(n.name, n.now) for n in news]
            assert len({r.id for r in records}) == 40
            for record in records:
                assert await store.get(record.id) == record

            # One duplicate service name in a group fails alone; the others land.
            await store.insert(_new("deploy", owner=""))
            mixed = [_new("a"), _new("deploy", owner=""), _new("b")]
            outcomes = await asyncio.gather(
                *(store.insert(new) for new in mixed), return_exceptions=True
            )
            assert isinstance(outcomes[1], NameTaken)
            landed = [o for o in outcomes if isinstance(o, TokenRecord)]
            assert [r.name for r in landed] == ["a", "b"]
            assert await store.count(ListQuery(owner="o", include_revoked=True, limit=1)) == 42
    finally:
        await store.close()


async def test_a_large_usage_batch_lands_whole(tmp_path: Path) -> None:
    """More tokens than one statement takes: every count lands, last uses only grow."""
    store = await SqliteStore.open(tmp_path)
    try:
        ids = await store.insert_many([_new(f"t{i}") for i in range(1200)])
        await store.add_usage({token_id: Usage(token_id % 7 + 1, 100) for token_id in ids})
        await store.add_usage({token_id: Usage(1, 50) for token_id in ids[::2]})  # older
        with sqlite3.connect(tmp_path / "tokens.db") as db:
            stored = {
                row[0]: row[1:]
                for row in db.execute("SELECT id, usage_count, last_use_time FROM tokens")
            }
        db.close()
        for token_id in ids:
            expected = token_id % 7 + 1 + (1 if (token_id - ids[0]) % 2 == 0 else 0)
            assert stored[token_id] == (expected, 100)
    finally:
        await store.close()


async def test_an_insert_whose_caller_gives_up_still_lands(tmp_path: Path) -> None:
    """A cancelled caller stops waiting; the group it joined is written all the same."""
    store = await SqliteStore.open(tmp_path)
    try:
        inserts = [asyncio.create_task(store.insert(_new(f"t{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # all five are queued
        inserts[2].cancel()
        done = await asyncio.wait_for(asyncio.gather(*inserts, return_exceptions=True), 5)
        assert isinstance(done[2], asyncio.CancelledError)
        page = await store.list(ListQuery(owner="o", include_revoked=True, limit=10))
        assert [r.name for r in page] == [f"t{i}" for i in range(5)]
    finally:
        await store.close()


async def test_a_write_that_returns_a_row_counts_a_usage_batch_once(tmp_path: Path) -> None:
    """A revocation holding the write lock when a usage batch begins returns the row
    without that batch; it waits for the batch and reports the uses anyway."""
    store = await SqliteStore.open(tmp_path)
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow_revoke(real: Fetch, sql: str, *args: Any) -> Any:
        if sql.startswith("UPDATE tokens SET revoke_time"):
            reached.set()
            await release.wait()
        return await real(sql, *args)

    try:
        token = await store.insert(_new("counted"))
        with _fetch_through(store, slow_revoke):
            revoking = asyncio.create_task(store.revoke(token.id, 99))
            await asyncio.wait_for(reached.wait(), 5)
            counting = asyncio.create_task(store.add_usage({token.id: Usage(2, 50)}))
            await asyncio.sleep(0)  # the batch is handed over, and waits for the lock
            release.set()
            revoked = await revoking
            await counting
        assert revoked is not None
        assert (revoked.revoke_time, revoked.usage_count, revoked.last_use_time) == (99, 2, 50)
    finally:
        await store.close()


async def test_many_usage_batches_stay_exact_in_the_cache(tmp_path: Path) -> None:
    """Batches are folded into cached rows on demand; past a bound the rows are read again."""
    store = await SqliteStore.open(tmp_path)
    try:
        token = await store.insert(_new("counted"))
        page = ListQuery(owner="o", include_revoked=False, limit=10)
        for batch in range(1, 151):
            await store.add_usage({token.id: Usage(1, batch)})
            if batch % 7 == 0:  # some batches land on rows cached long before
                got = await store.get(token.id)
                (listed,) = await store.list(page)
                assert got is not None
                assert (got.usage_count, listed.usage_count, got.last_use_time) == (
                    batch,
                    batch,
                    batch,
                )
    finally:
        await store.close()


def test_with_usage_changes_only_the_usage_figures() -> None:
    record = TokenRecord(
        1, "o", "n", b"h", ("s",), False, 2, ("10.0.0.0/8",), 3, 4, 5, 6, 7, b"sealed"
    )
    assert record.with_usage(70, 60) == dataclasses.replace(
        record, usage_count=70, last_use_time=60
    )


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
        generation.close()
