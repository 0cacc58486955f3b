"""The PostgreSQL engine's own parts: migrations, change notifications, start-up errors.

The rules every engine shares are in the store contract suite; these are the
parts only PostgreSQL has, on a real server (see ``tests/postgres.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest

from tests.postgres import PASSWORD, remove_server, start_server
from tokengrpc.errors import Unavailable
from tokengrpc.store.base import (
    Actor,
    EventQuery,
    NameTaken,
    NewToken,
    StoreNotEmpty,
    TokenRecord,
    Usage,
)
from tokengrpc.store.postgres.changes import BOUND, CHANNEL, LISTENER_APPLICATION, Notifications
from tokengrpc.store.postgres.dsn import BadDatabaseUrl, is_postgres, redacted, scrub
from tokengrpc.store.postgres.engine import _LIST_EVENTS, PostgresEngine
from tokengrpc.store.postgres.migrations import LATEST, MIGRATIONS
from tokengrpc.store.postgres.open import DatabaseError, migrate_postgres, open_postgres


def _new(name: str, owner: str = "alice", *, first: bool = False) -> NewToken:
    return NewToken(
        owner=owner,
        name=name,
        secret_hash=b"h" * 32,
        scopes=("write",),
        active=True,
        expire_time=None,
        allowed_ips=(),
        now=1_000_000,
        only_into_empty_store=first,
    )


@pytest.fixture
async def instances(database_url: str) -> AsyncIterator[list[tuple[PostgresEngine, Notifications]]]:
    """Three instances' engines and notifications on one database."""
    opened = [await open_postgres(database_url) for _ in range(3)]
    try:
        yield opened
    finally:
        for engine, changes in opened:
            await changes.close()
            await engine.close()


async def _moves(changes: Notifications, since: int, within: float = 2.0) -> float:
    """Seconds until ``changes.current()`` moves from ``since`` (fails past ``within``)."""
    start = time.perf_counter()
    while changes.current() == since:
        assert time.perf_counter() - start < within, "no notification arrived"
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


async def _until(condition: Callable[[], bool], within: float) -> float:
    """Seconds until ``condition()`` holds (fails past ``within``)."""
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < within, "the condition never held"
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


def _writable(engine: PostgresEngine) -> bool:
    """Read through a call, so the type checker does not carry one reading to the next."""
    return engine.writable


def test_database_urls() -> None:
    assert not is_postgres("")
    assert is_postgres("postgresql://u:p@h/db?sslmode=require")
    assert is_postgres("postgres://h/db")
    with pytest.raises(BadDatabaseUrl) as raised:
        is_postgres("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(raised.value)
    url = "postgresql://user:s%40cret@db.example:5432/tokens?sslmode=verify-full"
    assert redacted(url) == "postgresql://user:***@db.example:5432/tokens?sslmode=verify-full"
    said = scrub(f"failed at {url} with s@cret and s%40cret", url)
    assert "s@cret" not in said
    assert "s%40cret" not in said
    assert redacted("postgresql://db.example/tokens") == "postgresql://db.example/tokens"


async def test_migrations_run_once_when_instances_start_together(database_url: str) -> None:
    results = await asyncio.gather(*(migrate_postgres(database_url) for _ in range(5)))
    assert sorted(before for before, _ in results) == [0, LATEST, LATEST, LATEST, LATEST]
    assert {after for _, after in results} == {LATEST}
    connection = await asyncpg.connect(database_url)
    try:
        versions = await connection.fetch("SELECT version FROM tokengrpc_schema")
        assert [tuple(row) for row in versions] == [(LATEST,)]
    finally:
        await connection.close()
    assert await migrate_postgres(database_url) == (LATEST, LATEST)


async def test_an_existing_database_gets_its_counts_by_migration(database_url: str) -> None:
    """A database of schema 1 (before counts were kept) with tokens in it."""
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute(MIGRATIONS[0])
            await connection.execute(
                "CREATE TABLE tokengrpc_schema (version integer NOT NULL);"
                " INSERT INTO tokengrpc_schema VALUES (1);"
                " INSERT INTO tokens (owner, name, secret_hash, scopes, active, allowed_ips,"
                " create_time, update_time, revoke_time)"
                " SELECT 'o' || (n % 3), 't' || n, '\\x00', '{}', true, '{}', 1, 1,"
                " CASE WHEN n % 4 = 0 THEN 2 END FROM generate_series(1, 50) AS n"
            )
        assert await migrate_postgres(database_url) == (1, LATEST)
        kept = await connection.fetch("SELECT owner, total, live FROM token_counts")
        counted = await connection.fetch(
            "SELECT owner, count(*), count(*) - count(revoke_time) FROM tokens GROUP BY owner"
        )
    finally:
        await connection.close()
    assert sorted(map(tuple, kept)) == sorted(map(tuple, counted))
    assert len(kept) == 3


async def test_an_owner_s_events_are_walked_in_its_own_index(database_url: str) -> None:
    """A common owner's older events under many newer ones of others: ordered by
    id alone, PostgreSQL takes the primary key and skips the newer ones on every
    first page. Any page must be a walk of (owner, id) from its page token."""
    assert await migrate_postgres(database_url) == (0, LATEST)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
            " actor_owner, client_ip, changed_fields)"
            " SELECT n, 1, n, CASE WHEN n <= 20000 THEN 'common' ELSE 'u' || (n % 500) END,"
            " 0, '', '', '{}' FROM generate_series(1, 40000) AS n"
        )
        await connection.execute("VACUUM ANALYZE token_events")
        statement = await connection.prepare(_LIST_EVENTS[True, False])
        for before in (2**63 - 1, 20_001):
            params = (before, ["common"], 21)
            for _ in range(6):  # past the custom plans: the generic one is what stays
                await statement.fetch(*params)
            plan = json.dumps(await statement.explain(*params))
            assert '"Index Name": "token_events_by_owner"' in plan, plan
            assert "token_events_pkey" not in plan, plan
            assert '"Sort"' not in plan, plan
    finally:
        await connection.close()


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    await migrate_postgres(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("UPDATE tokengrpc_schema SET version = $1", LATEST + 1)
    finally:
        await connection.close()
    with pytest.raises(DatabaseError) as raised:
        await open_postgres(database_url)
    message = str(raised.value)
    print(message)
    assert "newer" in message
    assert PASSWORD not in message


async def test_a_wrong_password_is_named_without_either_password(database_url: str) -> None:
    wrong = database_url.replace(PASSWORD, "Wrong-Guess-91")
    if wrong == database_url:  # an external server's URL: put a wrong password in
        wrong = database_url.replace("://", "://tokengrpc_nobody:Wrong-Guess-91@", 1)
    with pytest.raises(DatabaseError) as raised:
        await open_postgres(wrong)
    message = str(raised.value)
    print(message)
    assert "Wrong-Guess-91" not in message
    assert PASSWORD not in message
    assert "***" in message


async def test_an_unreachable_database_fails_quickly() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(DatabaseError) as raised:
        await open_postgres(f"postgresql://u:Secret-Pw-3@127.0.0.1:{port}/db")
    took = time.perf_counter() - start
    print(f"refused after {took:.3f} s: {raised.value}")
    assert took < 10
    assert "Secret-Pw-3" not in str(raised.value)


async def test_another_instance_write_moves_current_and_ours_by_one(
    instances: list[tuple[PostgresEngine, Notifications]],
) -> None:
    (engine_a, changes_a), (engine_b, _), _ = instances
    before_a = changes_a.current()
    record = await engine_b.insert(_new("t"))
    delay = await _moves(changes_a, before_a)
    print(f"A heard B's write after {delay * 1000:.1f} ms")
    assert delay < 1.0
    # Our own write: announce() moves it by one, its notification coming back does not.
    await engine_a.revoke(record.id, 2_000_000)
    mark = await changes_a.announce()
    assert changes_a.current() == mark + 1
    await asyncio.sleep(0.2)
    assert changes_a.current() == mark + 1


async def test_a_lost_listen_connection_vouches_for_nothing_until_back(
    database_url: str, instances: list[tuple[PostgresEngine, Notifications]]
) -> None:
    _, changes = instances[0]
    connection = await asyncpg.connect(database_url)
    try:
        ended = await connection.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE $1 AND datname = current_database()) AS t",
            LISTENER_APPLICATION + " %",
        )
        assert ended == 3
        await _until(lambda: not changes.listening, within=2)
        # Down: no two reads of current() agree, so the cache keeps nothing.
        assert changes.current() != changes.current()
        took = await _until(lambda: all(c.listening for _, c in instances), within=5)
        print(f"listening again after {took:.3f} s")
        value = changes.current()
        assert changes.current() == value
        listeners = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1"
            " AND datname = current_database()",
            LISTENER_APPLICATION + " %",
        )
        assert listeners == 3
    finally:
        await connection.close()


async def test_the_first_token_is_created_once(
    instances: list[tuple[PostgresEngine, Notifications]],
) -> None:
    outcomes = await asyncio.gather(
        *(engine.insert(_new(f"first-{n}", first=True)) for n, (engine, _) in enumerate(instances)),
        return_exceptions=True,
    )
    created = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, StoreNotEmpty)]
    assert len(created) == 1
    assert len(refused) == 2
    with pytest.raises(StoreNotEmpty):
        await instances[0][0].insert(_new("again", first=True))


async def test_concurrent_creations_share_one_transaction_and_one_notify(
    database_url: str, instances: list[tuple[PostgresEngine, Notifications]]
) -> None:
    (engine, changes), (other, _) = instances[0], instances[1]
    heard: list[str] = []
    end = asyncio.Event()

    def listened(*args: object) -> None:
        payload = str(args[-1])
        heard.append(payload)
        if payload == "end":
            end.set()

    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(CHANNEL, listened)
        news = [
            dataclasses.replace(
                _new(f"t{n}"), now=1000 + n, actor=Actor(n, f"by {n}", f"10.0.0.{n}", "r", f"d{n}")
            )
            for n in range(40)
        ]
        records = await asyncio.gather(*(engine.insert(new) for new in news))
        assert [record.name for record in records] == [new.name for new in news]
        assert len({record.id for record in records}) == 40
        for record in records:
            assert await other.get(record.id) == record
        # Each token's one CREATED event carries its own caller's actor and time.
        events = await listener.fetch(
            "SELECT token_id, event_time, action, actor_token_id, actor_owner, client_ip,"
            " reason, detail FROM token_events WHERE token_id = ANY($1::bigint[]) ORDER BY id",
            [record.id for record in records],
        )
        assert [tuple(row) for row in events] == [
            (r.id, 1000 + n, 1, n, f"by {n}", f"10.0.0.{n}", "r", f"d{n}")
            for n, r in sorted(enumerate(records), key=lambda pair: pair[1].id)
        ]
        assert [r.create_time for r in records] == [1000 + n for n in range(40)]
        # One duplicate service name fails alone; the others land.
        await engine.insert(_new("deploy", owner=""))
        mixed = [_new("a"), _new("deploy", owner=""), _new("b")]
        outcomes = await asyncio.gather(*(engine.insert(n) for n in mixed), return_exceptions=True)
        assert isinstance(outcomes[1], NameTaken)
        assert [o.name for o in outcomes if isinstance(o, TokenRecord)] == ["a", "b"]
        # Notifications arrive in commit order: every one of ours before this.
        await listener.execute("SELECT pg_notify($1, 'end')", CHANNEL)
        async with asyncio.timeout(5):
            await end.wait()
    finally:
        await listener.close()
    ours = heard.count(changes.instance_id)
    # 40 together, "deploy", then the mixed group (its failed transaction
    # notifies no one) and its three rows one by one, of which two land.
    assert ours == 1 + 1 + 2, heard


async def test_usage_batches_of_several_instances_add_up(
    instances: list[tuple[PostgresEngine, Notifications]],
) -> None:
    engine = instances[0][0]
    ids = list(await engine.insert_many([_new(f"u{n}") for n in range(50)]))
    assert len(ids) == 50
    assert ids == list(range(ids[0], ids[0] + 50))

    async def flush(engine: PostgresEngine, round_: int) -> None:
        # Overlapping rows in opposite orders: the engine orders them itself.
        order = ids if round_ % 2 else ids[::-1]
        await engine.add_usage({i: Usage(1, 2_000_000 + round_, f"10.0.0.{round_}") for i in order})

    await asyncio.gather(*(flush(engine, n) for n in range(20) for engine, _ in [instances[n % 3]]))
    for token_id in ids:
        record = await engine.get(token_id)
        assert record is not None
        assert record.usage_count == 20
        assert record.last_use_time == 2_000_019
        assert record.last_use_ip == "10.0.0.19"


async def test_a_stopped_server_is_unavailable_and_back_by_itself() -> None:
    """Its own server: stopping the session's would stop every other test."""
    server = await asyncio.to_thread(start_server)
    try:
        url = await asyncio.to_thread(server.new_database)
        engine, changes = await open_postgres(url)
        try:
            created = await engine.insert(_new("kept"))
            await asyncio.to_thread(server.stop)
            with pytest.raises(Unavailable) as raised:
                await engine.get(created.id)
            assert PASSWORD not in raised.value.message
            with pytest.raises(Unavailable):
                await engine.insert(_new("refused"))
            assert _writable(engine) is False
            assert changes.current() != changes.current()
            await asyncio.to_thread(server.start)
            assert await engine.get(created.id) == created
            await engine.probe_write()
            assert _writable(engine) is True
            await _until(lambda: changes.listening, within=5)
        finally:
            await changes.close()
            await engine.close()
    finally:
        await asyncio.to_thread(remove_server, server)


@contextlib.contextmanager
def _frozen(pid: int) -> Iterator[None]:
    """A backend stopped dead (SIGSTOP): no error, no close, no answer, until it ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_silent_listener_is_not_trusted_past_the_bound(
    database_url: str, instances: list[tuple[PostgresEngine, Notifications]]
) -> None:
    """A frozen ``LISTEN`` backend says nothing: memory must stop being trusted once the
    last answered round trip was sent a bound ago, whether or not a reconnect has begun."""
    writer = instances[0][0]
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        connection = await asyncpg.connect(database_url)
        opened.append(connection)
        return connection

    # A reconnect only after 30 s: what is tested is the proof of life alone.
    changes = Notifications(connect, "silent", answer_timeout=30)
    await changes.start()
    try:
        for round_ in range(3):
            value = changes.current()
            assert changes.current() == value, "a live listener vouches for its memory"
            with _frozen(opened[-1].get_server_pid()):
                await writer.insert(_new(f"while-frozen-{round_}"))
                committed = time.monotonic()
                await asyncio.sleep(BOUND - (time.monotonic() - committed))
                assert changes.current() != value, "a write a bound ago may still be served"
                assert changes.current() != changes.current(), "memory trusted without proof"
            # Back from the freeze: it answers again, and memory is trusted again.
            await _until(lambda: changes.current() == changes.current(), within=2)
    finally:
        await changes.close()


async def test_stored_secrets_date_from_their_last_rotation_after_the_upgrade(
    database_url: str,
) -> None:
    """A database of schema 1 (before the policies), as SQLite's upgrade test."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(MIGRATIONS[0])
        await connection.execute("CREATE TABLE tokengrpc_schema (version integer NOT NULL)")
        await connection.execute("INSERT INTO tokengrpc_schema VALUES (1)")
        for name in ("kept", "rotated"):
            await connection.execute(
                "INSERT INTO tokens (owner, name, secret_hash, scopes, allowed_ips, active,"
                " create_time, update_time) VALUES ('o', $1, '\\x00', '{}', '{}', true, 10, 10)",
                name,
            )
        await connection.executemany(
            "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
            " actor_owner, client_ip, changed_fields) VALUES ($1, $2, $3, 'o', 0, '', '', '{}')",
            [(10, 1, 1), (10, 1, 2), (20, 3, 2), (30, 3, 2), (40, 2, 2)],
        )
    finally:
        await connection.close()
    engine, changes = await open_postgres(database_url)
    try:
        kept, rotated = await engine.get(1), await engine.get(2)
        assert kept is not None
        assert rotated is not None
        assert (kept.secret_time, rotated.secret_time) == (10, 30)
        assert (kept.not_before, rotated.not_before) == (None, None)
        assert {e.reason for e in await engine.list_events(EventQuery(limit=10))} == {""}
    finally:
        await changes.close()
        await engine.close()


async def test_a_released_connection_costs_no_reset_query(
    instances: list[tuple[PostgresEngine, Notifications]],
) -> None:
    """The engine leaves no session state, so the pool's release sends nothing
    (asyncpg's default reset is a query, a round trip on every read and write)."""
    engine, _ = instances[0]
    sent: list[str] = []
    record = await engine.insert(_new("t"))
    connection = await engine._pool.acquire()
    connection.add_query_logger(lambda logged: sent.append(logged.query))
    await connection.fetchval("SELECT 1")
    await engine._pool.release(connection)
    assert sent == ["SELECT 1"]
    # And the connection, released without one, serves the next reads and writes.
    assert await engine.get(record.id) == record
    assert await engine.revoke(record.id, 5) is not None
