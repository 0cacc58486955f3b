"""An ``Engine`` on one PostgreSQL database, through an asyncpg pool.

Several instances share the database: PostgreSQL's own locks do what
SQLite's single writer does there. Every write's transaction ends with
``NOTIFY`` (see ``changes.py``), so other instances drop what they hold from
memory. Concurrent creations of one instance share one transaction, one
commit and one ``NOTIFY`` (``GroupCommit``, as on SQLite).

Failures of the server or the network become ``Unavailable`` with words of
our own: neither the server's text nor the URL (and its password) reaches a
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy

from tokengrpc.errors import Unavailable
from tokengrpc.store import outbox, statements
from tokengrpc.store.base import (
    NO_ACTOR,
    PREVIOUS_SECRET,
    REASON_INACTIVE,
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NameTaken,
    NewToken,
    Outgoing,
    ReminderState,
    ReminderStep,
    Rotation,
    StoreNotEmpty,
    TokenChanges,
    TokenRecord,
    Usage,
)
from tokengrpc.store.group_commit import GroupCommit
from tokengrpc.store.health import DISK_FULL, WriteHealth
from tokengrpc.store.postgres.changes import APPLICATION, CHANNEL

#: A pooled connection (a proxy with the connection's methods).
Connection: TypeAlias = "PoolConnectionProxy[Record]"

T = TypeVar("T")

_mark = statements.numbered
_COLUMNS = statements.TOKEN_COLUMNS
_GET = statements.get_token(_mark)
_GET_SERVICE = statements.get_service_token(_mark)
_INSERT = statements.insert_tokens(_mark)
_REVOKE = (
    "UPDATE tokens SET revoke_time = $1, update_time = $1 WHERE id = $2 AND revoke_time IS NULL"
    f" RETURNING {_COLUMNS}"
)
_END_GRACE = (
    "UPDATE tokens SET previous_hash = NULL, previous_until = NULL, update_time = $1"
    " WHERE id = $2 AND previous_hash = $3 AND previous_until > $1 AND revoke_time IS NULL"
    f" RETURNING {_COLUMNS}"
)
# The old hash stays only while it has time left; a grace of 0 clears it.
_ROTATE = (
    "UPDATE tokens SET previous_hash = CASE WHEN $1::bigint > $2::bigint THEN secret_hash END,"
    " previous_until = CASE WHEN $1::bigint > $2::bigint THEN $1::bigint END,"
    " secret_hash = $3, sealed_value = $4, update_time = $2, secret_time = $2"
    f" WHERE id = $5 AND revoke_time IS NULL RETURNING {_COLUMNS}"
)
# One statement for the whole batch. SET expressions see the row as it was,
# so the address follows the newer time.
_ADD_USAGE = (
    "UPDATE tokens SET usage_count = usage_count + batch.uses,"
    " last_use_time = greatest(coalesce(tokens.last_use_time, 0), batch.used),"
    " last_use_ip = CASE WHEN batch.used >= coalesce(tokens.last_use_time, 0)"
    " THEN batch.address ELSE tokens.last_use_ip END"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])"
    " AS batch (id, uses, used, address) WHERE tokens.id = batch.id"
)
_INSERT_EVENT = statements.insert_events(_mark)
#: Rows per statement of a batch: twelve parameters each, well under the
#: protocol's 32,767.
_INSERT_BATCH = 500
_LIST = statements.list_tokens(_mark)
_PAGED = statements.paged_tokens(_mark)
#: In code-point order, as the index is built (the database's collation may differ).
_BY_NAME = statements.service_tokens_by_name(_mark, collate=' COLLATE "C"')
_COUNT = statements.count_tokens(_mark)
#: An owner as a one-element array (see ``statements.list_events``).
_LIST_EVENTS = statements.list_events(_mark, lambda marker: f"owner = ANY({marker}::text[])")
_PAST_SECRET_AGE = statements.count_past_secret_age(_mark)
# Unused tokens (tokengrpc/sweeper.py), on the condition PostgreSQL checks again
# on the newest row version once it holds the row (a usage batch committed
# meanwhile keeps the token).
_ACTIVITY = "greatest(coalesce(last_use_time, 0), create_time, secret_time)"
_REVOKE_UNUSED = (
    "UPDATE tokens SET revoke_time = $1, update_time = $1"
    f" WHERE revoke_time IS NULL AND {_ACTIVITY} <= $2"
)
_REVOKE_UNUSED_ALL = f"{_REVOKE_UNUSED} RETURNING {_COLUMNS}"
_REVOKE_UNUSED_ONE = f"{_REVOKE_UNUSED} AND id = $3 RETURNING {_COLUMNS}"
#: Lock key of the unused-token sweep: one instance sweeps at a time ("toku").
_SWEEP_LOCK = 0x746F6B75
# Expiry reminders (tokengrpc/reminders.py): due rows through the partial index
# on reminder_wake, locked; rows another instance is stepping are skipped, and
# a row it stepped meanwhile is judged again as it now is: stepped once.
_REMINDERS_DUE = (
    f"SELECT {_COLUMNS}, reminder_expiry, reminder_next, reminder_wake FROM tokens"
    " WHERE reminder_wake <= $1 ORDER BY reminder_wake LIMIT $2 FOR UPDATE SKIP LOCKED"
)
#: Where the reminder state follows the record's columns in a row of ``_REMINDERS_DUE``.
_STATE = len(_COLUMNS.split(","))
_SET_REMINDER = (
    "UPDATE tokens SET reminder_expiry = $1, reminder_next = $2, reminder_wake = $3 WHERE id = $4"
)
# Rows that can need no reminder: revoked, or (no maximum age) without an expiry.
_SLEEP_REMINDERS = (
    "UPDATE tokens SET reminder_expiry = NULL, reminder_next = NULL, reminder_wake = NULL"
    " WHERE reminder_wake <= $1 AND (revoke_time IS NOT NULL OR ($2 AND expire_time IS NULL))"
)
_DUE = outbox.due(_mark)
# Concurrent claims (other instances') skip the rows one holds: each row has one sender.
_CLAIM = outbox.claim(_mark, locking="FOR UPDATE SKIP LOCKED")
_OUTGOING = outbox.outgoing("= ANY($1::bigint[])")
_FINISH = outbox.finish(_mark)
_RETRY = outbox.retry(_mark)
#: Lock key held while checking for an empty store and creating the first token.
_FIRST_TOKEN_LOCK = 0x746F6B31
#: A usage batch that meets another instance's on the same rows may deadlock;
#: PostgreSQL then aborts one, which simply runs again.
_USAGE_TRIES = 3

#: Errors that say the server or the way to it failed us, not the request.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InternalServerError,
    OSError,
    TimeoutError,
)


# List columns are arrays: asyncpg reads them as lists and takes lists.
_record = functools.partial(statements.token_record, strings=tuple)
_event = functools.partial(statements.event_record, strings=tuple)
_insert_params = functools.partial(statements.insert_params, strings=list)
_event_row = functools.partial(statements.event_params, strings=list)


def _unstorable(text: str | None) -> bool:
    """PostgreSQL's text cannot hold NUL (SQLite's can): no row has such a name
    or owner, so a lookup by one finds nothing, as on SQLite, instead of an error."""
    return text is not None and "\x00" in text


class PostgresEngine:
    """``Engine`` on PostgreSQL; ``instance_id`` marks its notifications as its own."""

    def __init__(self, pool: asyncpg.Pool, instance_id: str) -> None:
        self._pool = pool
        self._instance_id = instance_id
        self._health = WriteHealth()
        # The lock only orders this instance's batches: the next one gathers
        # the creations that arrive while one is being committed.
        self._group = GroupCommit(asyncio.Lock(), self._insert_batch)

    @property
    def writable(self) -> bool:
        return self._health.writable

    @classmethod
    async def open(cls, url: str, instance_id: str) -> PostgresEngine:
        """A pool on a migrated database (see ``open_postgres`` for the whole start)."""
        # No floor of idle connections: asyncpg would log a traceback each time
        # it fails to restore one while the server is away.
        pool = await asyncpg.create_pool(
            url,
            min_size=0,
            max_size=10,
            timeout=5,
            command_timeout=30,
            server_settings={"application_name": APPLICATION},
            reset=_keep_session,
        )
        return cls(pool, instance_id)

    @contextlib.contextmanager
    def _engine_errors(self, *, writing: bool) -> Iterator[None]:
        try:
            yield
        except _UNREACHABLE as error:
            if isinstance(error, asyncpg.exceptions.DiskFullError):
                mapped = Unavailable(DISK_FULL)
            else:
                mapped = Unavailable("the store cannot be reached right now; try again later")
            if writing:
                self._health.refused(mapped)
            raise mapped from None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as connection:
            yield connection

    async def _read(self, sql: str, *params: object) -> list[Any]:
        """A read; one retry on a pooled connection the server has since dropped."""
        with self._engine_errors(writing=False):
            for attempt in (1, 2):
                try:
                    async with self._connection() as connection:
                        rows: list[Any] = await connection.fetch(sql, *params)
                        return rows
                except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError):
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def _write(self, work: Callable[[Connection], Awaitable[T]], *, notify: bool = True) -> T:
        """``work`` in one transaction that also notifies the other instances
        (``notify``: it changed tokens; the outbox's own writes change none).

        Shielded: a caller cancelled mid-write must not leave the outcome to
        chance halfway through a commit.
        """

        async def run() -> T:
            with self._engine_errors(writing=True):
                async with self._connection() as connection, connection.transaction():
                    result = await work(connection)
                    if notify:
                        await connection.execute(
                            "SELECT pg_notify($1, $2)", CHANNEL, self._instance_id
                        )
            return result

        return await asyncio.shield(run())

    async def insert(self, new: NewToken) -> TokenRecord:
        """Rows inserted together share one transaction (``GroupCommit``)."""
        if not new.only_into_empty_store:
            return await self._group.insert(new)

        async def insert_first(connection: Connection) -> TokenRecord:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _FIRST_TOKEN_LOCK)
            if await connection.fetchval("SELECT EXISTS (SELECT 1 FROM tokens)"):
                raise StoreNotEmpty
            (record,) = await _insert_with_events(connection, [new])
            return record

        record = await self._write(insert_first)
        self._health.healed()
        return record

    async def _insert_batch(self, news: Sequence[NewToken]) -> list[TokenRecord | Exception]:
        """A group commit's rows in one transaction and one ``NOTIFY``; if one
        name is taken, which fails the whole transaction, one by one."""
        try:
            if len(news) <= _INSERT_BATCH:
                records = await self._insert_together(news)
            else:
                records = await self._write(functools.partial(_insert_with_events, rows=news))
        except NameTaken as taken:
            if len(news) == 1:
                return [taken]
            return [outcome for new in news for outcome in await self._insert_batch([new])]
        except Exception as error:
            return [error] * len(news)
        self._health.healed()
        return list(records)

    async def _insert_together(self, news: Sequence[NewToken]) -> list[TokenRecord]:
        """``news``, their CREATED events and the ``NOTIFY`` as one statement
        (``_insert_group``), in its own implicit transaction. Shielded as
        ``_write`` is."""
        params = [
            value
            for ordinal, new in enumerate(news)
            for value in (ordinal, *_insert_params(new), *_actor_params(new.actor))
        ]

        async def run() -> list[TokenRecord]:
            with self._engine_errors(writing=True):
                async with self._connection() as connection:
                    try:
                        rows = await connection.fetch(
                            _insert_group(len(news)), *params, CHANNEL, self._instance_id
                        )
                    except asyncpg.UniqueViolationError:
                        raise NameTaken(news[0].name if len(news) == 1 else "") from None
            return [_record(row) for row in rows]

        return await asyncio.shield(run())

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        """Many rows in one transaction with consecutive ids (imports, benchmarks)."""
        if not news:
            return range(0)
        rows = [_insert_params(new) for new in news]

        async def insert_all(connection: Connection) -> int:
            # The table lock keeps every other insert out, so the ids are consecutive.
            await connection.execute("LOCK TABLE tokens IN SHARE ROW EXCLUSIVE MODE")
            first = 0
            # Statements of many rows: a statement per row would cost a round
            # trip (and the counts' trigger) each.
            for start in range(0, len(rows), _INSERT_BATCH):
                chunk = rows[start : start + _INSERT_BATCH]
                sql = _insert_ids(len(chunk))
                ids = await connection.fetch(sql, *[v for row in chunk for v in row])
                first = first or min(int(row[0]) for row in ids)
                events = [
                    _event_row(
                        EventAction.CREATED, (first + start + n, new.owner), new.now, new.actor, ()
                    )
                    for n, new in enumerate(news[start : start + _INSERT_BATCH])
                ]
                await connection.execute(
                    statements.insert_events(_mark, len(events)),
                    *[v for row in events for v in row],
                )
            return first

        first = await self._write(insert_all)
        return range(first, first + len(news))

    async def get(self, token_id: int) -> TokenRecord | None:
        rows = await self._read(_GET, token_id)
        return _record(rows[0]) if rows else None

    async def get_service_token(self, name: str) -> TokenRecord | None:
        if _unstorable(name):
            return None
        rows = await self._read(_GET_SERVICE, name)
        return _record(rows[0]) if rows else None

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        if _unstorable(query.owner):
            return []
        if query.after_name is not None:
            statement = _BY_NAME[query.include_revoked]
            params: tuple[object, ...] = (query.after_name, query.after_id, query.limit)
        elif query.offset and query.after_id == 0:
            statement = _PAGED[query.include_revoked]
            params = (query.owner, query.offset, query.limit)
        else:
            statement = _LIST[query.include_revoked, query.offset == 0]
            params = statements.list_tokens_params(query)
        rows = await self._read(statement, *params)
        return [_record(row) for row in rows]

    async def count(self, query: ListQuery) -> int:
        if _unstorable(query.owner):
            return 0
        rows = await self._read(_COUNT[query.include_revoked], query.owner)
        return int(rows[0][0])

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        sql, params = statements.update_token(token_id, changes, now, _mark, list)

        async def update(connection: Connection) -> TokenRecord | None:
            try:
                row = await connection.fetchrow(sql, *params)
            except asyncpg.UniqueViolationError:
                raise NameTaken(changes.name or "") from None
            return await _audited(
                connection, row, EventAction.UPDATED, now, actor, changes.fields()
            )

        return await self._write(update)

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        async def revoke(connection: Connection) -> TokenRecord | None:
            row = await connection.fetchrow(_REVOKE, now, token_id)
            return await _audited(
                connection, row, EventAction.REVOKED, now, actor, ("revoke_time",)
            )

        return await self._write(revoke)

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        now, until = rotation.now, rotation.previous_until or 0
        fields = ("secret",) if rotation.sealed_value is None else ("secret", "value")

        async def rotate(connection: Connection) -> TokenRecord | None:
            row = await connection.fetchrow(
                _ROTATE, until, now, rotation.secret_hash, rotation.sealed_value, token_id
            )
            return await _audited(connection, row, EventAction.ROTATED, now, actor, fields)

        return await self._write(rotate)

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        async def end(connection: Connection) -> TokenRecord | None:
            row = await connection.fetchrow(_END_GRACE, now, token_id, previous_hash)
            return await _audited(
                connection, row, EventAction.REVOKED, now, actor, (PREVIOUS_SECRET,)
            )

        return await self._write(end)

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        async def record(connection: Connection) -> None:
            row = await connection.fetchrow(_GET, token_id)
            await _audited(connection, row, EventAction.VALUE_READ, now, actor)

        await self._write(record)

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        if _unstorable(query.owner):
            return []
        statement = _LIST_EVENTS[query.owner is not None, query.token_id is not None]
        params = statements.list_events_params(query)
        if query.owner is not None:
            params[1] = [query.owner]
        rows = await self._read(statement, *params)
        return [_event(row) for row in rows]

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        actor = Actor(reason=REASON_INACTIVE)

        async def revoke(connection: Connection) -> list[TokenRecord]:
            if token_id is not None:
                rows = await connection.fetch(_REVOKE_UNUSED_ONE, now, cutoff, token_id)
            elif await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _SWEEP_LOCK):
                rows = await connection.fetch(_REVOKE_UNUSED_ALL, now, cutoff)
            else:
                return []  # another instance is sweeping
            records = [_record(row) for row in rows]
            events = [
                _event_row(EventAction.REVOKED, (r.id, r.owner), now, actor, ("revoke_time",))
                for r in records
            ]
            if events:
                await connection.executemany(_INSERT_EVENT, events)
            return records

        return await self._write(revoke)

    async def next_reminder_wake(self) -> int | None:
        rows = await self._read(
            "SELECT min(reminder_wake) FROM tokens WHERE reminder_wake IS NOT NULL"
        )
        found = rows[0][0] if rows else None
        return None if found is None else int(found)

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        async def advance(connection: Connection) -> int:
            await connection.execute(_SLEEP_REMINDERS, now, only_own_expiries)
            rows = await connection.fetch(_REMINDERS_DUE, now, limit)
            events = []
            for row in rows:
                record = _record(row)
                state, action = step(
                    record, ReminderState(row[_STATE], row[_STATE + 1], row[_STATE + 2])
                )
                await connection.execute(
                    _SET_REMINDER, state.expiry, state.next_due, state.wake, record.id
                )
                if action is not None:
                    events.append(_event_row(action, (record.id, record.owner), now, NO_ACTOR, ()))
            if events:
                await connection.executemany(_INSERT_EVENT, events)
            return len(rows)

        return await self._write(advance)

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        async def plan(connection: Connection) -> bool:
            # Instances starting at once plan once.
            await connection.execute("LOCK TABLE reminder_plan IN EXCLUSIVE MODE")
            found = await connection.fetchrow("SELECT max_secret_age FROM reminder_plan")
            if found is not None and found[0] == max_secret_age:
                return False
            # A row already awake keeps its earlier wake: the time its expiry was
            # set. Without a maximum age, a token without an expiry needs nothing
            # (one planned under an age goes to sleep at its next reminder).
            await connection.execute(
                "UPDATE tokens SET reminder_wake = least(coalesce(reminder_wake, $1), $1)"
                " WHERE revoke_time IS NULL"
                " AND (expire_time IS NOT NULL OR $2::bigint IS NOT NULL)",
                now,
                max_secret_age,
            )
            await connection.execute(
                "INSERT INTO reminder_plan (id, max_secret_age) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET max_secret_age = excluded.max_secret_age",
                max_secret_age,
            )
            return True

        return await self._write(plan)

    async def add_usage(self, uses: Mapping[int, Usage]) -> None:
        if not uses:
            return
        # Ascending ids: two instances' batches lock shared rows in the same order.
        ordered = sorted(uses.items())
        columns = (
            [token_id for token_id, _ in ordered],
            [use.count for _, use in ordered],
            [use.last_use_time for _, use in ordered],
            [use.last_use_ip or None for _, use in ordered],
        )

        async def add(connection: Connection) -> None:
            await connection.execute(_ADD_USAGE, *columns)

        for attempt in range(1, _USAGE_TRIES + 1):
            try:
                await self._write(add)
                return
            except asyncpg.DeadlockDetectedError:
                if attempt == _USAGE_TRIES:
                    raise Unavailable("the store is busy; try again later") from None

    # The webhook outbox (``outbox.py``): the trigger fills it; these hand it out.

    async def set_webhook_urls(self, urls: Sequence[str]) -> int:
        known = await self._read("SELECT url FROM webhook_endpoints")
        if {row[0] for row in known} == set(urls):
            return 0  # most starts: no write

        async def replace(connection: Connection) -> int:
            gone = "SELECT id FROM webhook_endpoints WHERE url <> ALL($1::text[])"
            dropped = await connection.fetch(
                f"DELETE FROM webhook_outbox WHERE endpoint_id IN ({gone}) RETURNING id", urls
            )
            await connection.execute(f"DELETE FROM webhook_endpoints WHERE id IN ({gone})", urls)
            await connection.execute(
                "INSERT INTO webhook_endpoints (url) SELECT unnest($1::text[])"
                " ON CONFLICT (url) DO NOTHING",
                urls,
            )
            return len(dropped)

        return await self._write(replace, notify=False)

    async def claim_deliveries(self, now: int, lease_until: int, limit: int) -> Sequence[Outgoing]:
        async def claim(connection: Connection) -> Sequence[Outgoing]:
            ids = [row[0] for row in await connection.fetch(_CLAIM, lease_until, now, limit)]
            if not ids:
                return []
            rows = await connection.fetch(_OUTGOING, ids)
            return [outbox.outgoing_record(row, tuple) for row in rows]

        # Most polls find nothing due, and need no transaction.
        if not await self._read(_DUE, now, 1):
            return []
        return await self._write(claim, notify=False)

    async def finish_delivery(self, row_id: int) -> None:
        async def finish(connection: Connection) -> None:
            await connection.execute(_FINISH, row_id)

        await self._write(finish, notify=False)

    async def retry_delivery(self, row_id: int, attempts: int, due: int) -> None:
        async def retry(connection: Connection) -> None:
            await connection.execute(_RETRY, attempts, due, row_id)

        await self._write(retry, notify=False)

    async def oldest_undelivered(self) -> int | None:
        rows = await self._read(outbox.OLDEST)
        return int(rows[0][0]) if rows else None

    async def is_empty(self) -> bool:
        rows = await self._read("SELECT NOT EXISTS (SELECT 1 FROM tokens)")
        return bool(rows[0][0])

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        rows = await self._read(_PAST_SECRET_AGE, now, now - max_secret_age)
        return int(rows[0][0])

    async def key_fingerprint(self) -> bytes | None:
        rows = await self._read("SELECT fingerprint FROM secret_key")
        return bytes(rows[0][0]) if rows else None

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        async def record(connection: Connection) -> bytes:
            await connection.execute(
                "INSERT INTO secret_key (id, fingerprint) VALUES (1, $1) ON CONFLICT DO NOTHING",
                fingerprint,
            )
            return bytes(await connection.fetchval("SELECT fingerprint FROM secret_key"))

        return await self._write(record)

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        rows = await self._read(
            "SELECT sealed_value, secret_hash FROM tokens WHERE sealed_value IS NOT NULL LIMIT 1"
        )
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def ping(self) -> None:
        await self._read("SELECT 1 FROM tokens LIMIT 1")

    async def probe_write(self) -> None:
        """A write that leaves no trace, to see if the database takes writes again."""

        async def probe(connection: Connection) -> None:
            await connection.execute("INSERT INTO write_probe VALUES ('\\x00'::bytea)")
            await connection.execute("DELETE FROM write_probe")

        await self._write(probe)
        self._health.healed()

    async def close(self) -> None:
        await self._group.close()  # queued creations land before the pool closes
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pool.close(), 5)
        self._pool.terminate()


@functools.lru_cache(maxsize=4)
def _insert_ids(rows: int) -> str:
    """An insert of ``rows`` tokens returning only their ids."""
    return statements.insert_tokens(_mark, rows).partition(" RETURNING")[0] + " RETURNING id"


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: nothing to undo, so no query.

    The engine leaves no session state on a pooled connection: no ``LISTEN``
    (``changes.py`` has its own connection), ``SET``, cursor or session lock
    (its advisory locks end with their transaction); asyncpg still rolls back
    a transaction left open before calling this. asyncpg's default reset sends
    a query on every release: a round trip for each read and write.
    """


#: A row of ``_insert_group``: its ordinal, the token's twelve insert
#: parameters (``statements.insert_params``), its event's actor (``_actor_params``).
_GROUP_COLUMNS = (
    ("ord", "int"), ("owner", "text"), ("name", "text"), ("secret_hash", "bytea"),
    ("scopes", "text[]"), ("active", "boolean"), ("expire_time", "bigint"),
    ("allowed_ips", "text[]"), ("create_time", "bigint"), ("update_time", "bigint"),
    ("sealed_value", "bytea"), ("not_before", "bigint"), ("secret_time", "bigint"),
    ("actor_token_id", "bigint"), ("actor_owner", "text"), ("client_ip", "text"),
    ("reason", "text"), ("detail", "text"),
)  # fmt: skip
_TOKEN_INSERT_COLUMNS = ", ".join(name for name, _ in _GROUP_COLUMNS[1:13])


def _actor_params(actor: Actor) -> tuple[object, ...]:
    return (actor.token_id, actor.owner, actor.client_ip, actor.reason, actor.detail)


@functools.lru_cache(maxsize=64)
def _insert_group(rows: int) -> str:
    """A group commit of ``rows`` tokens as one statement: the tokens, their
    CREATED events (each with its own caller's actor) and the ``NOTIFY``,
    returning the tokens by id. The write is one round trip, where a
    transaction of them took five (BEGIN, two inserts, NOTIFY, COMMIT), each
    a wait for the busy event loop while the write lock is held.

    Ids ascend in ``ord`` order (the rows reach the insert sorted), so the
    n-th id's event is the n-th row's.
    """
    width = len(_GROUP_COLUMNS)
    values = ", ".join(
        "(" + ", ".join(f"${row * width + n + 1}::{kind}"
                        for n, (_, kind) in enumerate(_GROUP_COLUMNS)) + ")"
        for row in range(rows)
    )  # fmt: skip
    names = ", ".join(name for name, _ in _GROUP_COLUMNS)
    channel, instance = rows * width + 1, rows * width + 2
    return (
        f"WITH v ({names}) AS (VALUES {values}),"
        f" inserted AS (INSERT INTO tokens ({_TOKEN_INSERT_COLUMNS})"
        f" SELECT {_TOKEN_INSERT_COLUMNS} FROM v ORDER BY ord"
        f" RETURNING {statements.TOKEN_COLUMNS}),"
        " numbered AS (SELECT *, row_number() OVER (ORDER BY id) - 1 AS ord FROM inserted),"
        " events AS (INSERT INTO token_events (event_time, action, token_id, owner,"
        " actor_token_id, actor_owner, client_ip, changed_fields, reason, detail)"
        f" SELECT v.create_time, {int(EventAction.CREATED)}, numbered.id, numbered.owner,"
        " v.actor_token_id, v.actor_owner, v.client_ip, '{}', v.reason, v.detail"
        " FROM numbered JOIN v ON v.ord = numbered.ord ORDER BY numbered.id),"
        f" notified AS (SELECT pg_notify(${channel}, ${instance}))"
        f" SELECT {statements.TOKEN_COLUMNS} FROM numbered, notified ORDER BY id"
    )


async def _insert_with_events(
    connection: Connection, rows: Sequence[NewToken]
) -> list[TokenRecord]:
    """The rows and their CREATED events, in statements of ``_INSERT_BATCH``
    (inside the caller's transaction)."""
    records: list[TokenRecord] = []
    for start in range(0, len(rows), _INSERT_BATCH):
        news = rows[start : start + _INSERT_BATCH]
        sql = _INSERT if len(news) == 1 else statements.insert_tokens(_mark, len(news))
        try:
            found = await connection.fetch(sql, *[v for new in news for v in _insert_params(new)])
        except asyncpg.UniqueViolationError:
            raise NameTaken(news[0].name if len(news) == 1 else "") from None
        # Rows get ascending ids in VALUES order; RETURNING's own order is unspecified.
        inserted = sorted((_record(row) for row in found), key=lambda record: record.id)
        events = [
            _event_row(EventAction.CREATED, (record.id, record.owner), new.now, new.actor, ())
            for record, new in zip(inserted, news, strict=True)
        ]
        await connection.execute(
            statements.insert_events(_mark, len(events)), *[v for row in events for v in row]
        )
        records += inserted
    return records


async def _audited(
    connection: Connection,
    row: Any,
    action: EventAction,
    now: int,
    actor: Actor,
    fields: Sequence[str] = (),
) -> TokenRecord | None:
    """The changed row's record, with its event written (no row: nothing changed, no event)."""
    if row is None:
        return None
    record = _record(row)
    await connection.execute(
        _INSERT_EVENT, *_event_row(action, (record.id, record.owner), now, actor, fields)
    )
    return record


__all__ = ["PostgresEngine"]
