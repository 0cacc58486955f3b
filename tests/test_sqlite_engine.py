"""SQLite only: query plans, group commit, the counter file, a writer held on demand.

Slow or failing disks come through the engine's public ``around_write`` hook.
The cache and usage counting over it are tested in ``test_layers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tokengrpc.store import EventQuery, ListQuery, NameTaken, NewToken, TokenRecord
from tokengrpc.store.counting import CountingStore
from tokengrpc.store.open import layered
from tokengrpc.store.sqlite import Generation, SqliteEngine, migrations, open_sqlite
from tokengrpc.store.sqlite.engine import _BY_NAME, _COUNT, _GET, _LIST, _LIST_EVENTS, _PAGED
from tokengrpc.store.sqlite.migrations import MIGRATIONS, _statements

Run = Callable[[], Awaitable[Any]]


def _new(name: str, owner: str = "o", now: int = 1) -> NewToken:
    return NewToken(owner, name, b"h" * 32, (), True, None, (), now)


def _engine(store: CountingStore) -> SqliteEngine:
    assert isinstance(store.engine, SqliteEngine)
    return store.engine


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[CountingStore]]]:
    """Stores on one data dir; two stand for two processes."""
    opened: list[CountingStore] = []

    async def open_one() -> CountingStore:
        opened.append(layered(*await open_sqlite(tmp_path)))
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
    await layered(*await open_sqlite(tmp_path)).close()
    db = tmp_path / "tokens.db"
    assert "USING INTEGER PRIMARY KEY" in _plan(db, _GET, (1,))
    for (_, keyset), sql in _LIST.items():
        params: tuple[object, ...] = ("o", 0, 10) if keyset else ("o", 0, 10, 5)
        plan = _plan(db, sql, params)
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
        assert "SCAN tokens" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    for include_revoked, sql in _PAGED.items():
        plan = _plan(db, sql, ("o", 40, 21))
        # Both branches walk ids in the owner's index; the page's rows are read by id.
        index = "INDEX tokens_by_owner" if include_revoked else "INDEX tokens_live_by_owner"
        assert plan.count(index) == 2, plan
        if include_revoked:
            assert plan.count(f"USING COVERING {index}") == 2, plan
        assert "SEARCH tokens USING INTEGER PRIMARY KEY" in plan, plan
        assert "SCAN tokens" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    for (by_owner, by_token), sql in _LIST_EVENTS.items():
        shown = (9, *(["o"] if by_owner else []), *([1] if by_token else []), 21)
        plan = _plan(db, sql, shown)
        index = "token_events_by_token" if by_token else "token_events_by_owner"
        assert f"USING INDEX {index}" in plan if by_owner or by_token else "PRIMARY KEY" in plan
        assert "TEMP B-TREE" not in plan, plan
    for sql in _COUNT.values():
        assert "SEARCH token_counts USING PRIMARY KEY" in _plan(db, sql, ("o",))
    for sql in _BY_NAME.values():
        # A fresh store has no statistics: unhinted, SQLite would walk the
        # owner's index and sort every service token for each page.
        plan = _plan(db, sql, ("s", 5, 201))
        assert "SEARCH tokens USING INDEX tokens_service_by_name" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


async def test_kept_counts_stay_exact_under_concurrent_writers(
    tmp_path: Path, stores: Callable[[], Awaitable[CountingStore]]
) -> None:
    """Writers on separate connections (two processes' stores) create and
    revoke at once; the kept counts equal COUNT(*), and so do the store's."""
    writers = [await stores(), await stores()]

    async def worker(n: int) -> None:
        for round_ in range(15):
            owner = ("alice", "bob")[(n + round_) % 2]
            record = await writers[n % 2].insert(_new(f"w{n}-{round_}", owner=owner))
            if round_ % 3:
                await writers[(n + 1) % 2].revoke(record.id, 9)

    await asyncio.gather(*(worker(n) for n in range(8)))
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db")) as db:
        counted = db.execute(
            "SELECT owner, count(*), count(*) - count(revoke_time) FROM tokens GROUP BY owner"
        ).fetchall()
        kept = db.execute("SELECT owner, total, live FROM token_counts").fetchall()
    assert sorted(kept) == sorted(counted)
    assert dict((owner, (total, live)) for owner, total, live in counted)["alice"] == (60, 20)
    for store in writers:
        for include_revoked, expected in ((True, 60), (False, 20)):
            assert await store.count(ListQuery("alice", include_revoked, limit=1)) == expected


def test_an_existing_data_dir_gets_its_counts_by_migration(tmp_path: Path) -> None:
    """A store of schema 3 (before counts were kept) with tokens in it."""
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db")) as db:
        for script in migrations.MIGRATIONS[:3]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 3")
        db.executescript(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)"
            " INSERT INTO tokens (owner, name, secret_hash, scopes, active, allowed_ips,"
            " create_time, update_time, revoke_time)"
            " SELECT 'o' || (i % 3), 't' || i, x'00', '[]', 1, '[]', 1, 1,"
            " CASE WHEN i % 4 = 0 THEN 2 END FROM n"
        )
        assert migrations.migrate(db) == 3
        kept = db.execute("SELECT owner, total, live FROM token_counts").fetchall()
        counted = db.execute(
            "SELECT owner, count(*), count(*) - count(revoke_time) FROM tokens GROUP BY owner"
        ).fetchall()
    assert sorted(kept) == sorted(counted)
    assert len(kept) == 3


async def test_a_numbered_page_walks_only_from_the_nearer_end(tmp_path: Path) -> None:
    """SQLite's own instruction count (no clock): pages near either end of 20,000
    tokens cost a few hundred steps; only the middle walks half the index."""
    await layered(*await open_sqlite(tmp_path)).close()
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db")) as db:
        db.executescript(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
            " INSERT INTO tokens (owner, name, secret_hash, scopes, active, allowed_ips,"
            " create_time, update_time) SELECT 'o', 't' || i, x'00', '[]', 1, '[]', 1, 1 FROM n"
        )
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        db.set_progress_handler(step, 1)

        def cost(offset: int) -> int:
            nonlocal steps
            steps = 0
            rows = db.execute(_PAGED[True], ("o", offset, 21)).fetchall()
            assert [row[0] for row in rows] == list(range(offset + 1, min(offset + 22, 20001)))
            return steps

        middle = cost(10_000)
        assert middle > 10_000  # the walk is counted
        for offset in (20, 40, 19_960, 19_980):
            assert cost(offset) < middle / 20, offset


async def test_a_change_behind_the_stores_back_is_not_announced(
    tmp_path: Path, stores: Callable[[], Awaitable[CountingStore]]
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
    tmp_path: Path, stores: Callable[[], Awaitable[CountingStore]]
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


async def test_concurrent_inserts_share_a_commit_and_keep_their_own_outcomes(
    stores: Callable[[], Awaitable[CountingStore]],
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


async def test_stored_secrets_date_from_their_last_rotation_after_the_upgrade(
    tmp_path: Path, stores: Callable[[], Awaitable[CountingStore]]
) -> None:
    """A data dir of schema 3 (before the policies): ``secret_time`` is the
    last rotation's time where the audit trail has one, else the creation's."""
    with contextlib.closing(sqlite3.connect(tmp_path / "tokens.db", isolation_level=None)) as db:
        for script in MIGRATIONS[:3]:
            for statement in _statements(script):
                db.execute(statement)
        db.execute("PRAGMA user_version = 3")
        for name in ("kept", "rotated"):
            db.execute(
                "INSERT INTO tokens (owner, name, secret_hash, scopes, allowed_ips, active,"
                " create_time, update_time) VALUES ('o', ?, x'00', '[]', '[]', 1, 10, 10)",
                (name,),
            )
        events = [(10, 1, 1), (10, 1, 2), (20, 3, 2), (30, 3, 2), (40, 2, 2)]
        db.executemany(
            "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
            " actor_owner, client_ip, changed_fields) VALUES (?, ?, ?, 'o', 0, '', '', '[]')",
            events,
        )
    store = await stores()
    kept, rotated = await store.get(1), await store.get(2)
    assert kept is not None
    assert rotated is not None
    assert (kept.secret_time, rotated.secret_time) == (10, 30)
    assert (kept.not_before, rotated.not_before) == (None, None)
    assert {e.reason for e in await store.list_events(EventQuery(limit=10))} == {""}
