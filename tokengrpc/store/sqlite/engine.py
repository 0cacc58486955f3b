"""The SQLite engine (the embedded default): its SQL, and one writer at a time.

Every write holds ``_write_lock`` on the one writer connection
(``connections.py``); concurrent creations share one commit
(``tokengrpc/store/group_commit.py``). Caching, change announcement and usage counting are
layers over this (docs/store.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from tokengrpc.store.health import WriteHealth
from tokengrpc.store.sqlite.connections import DB_FILE, AroundWrite, Connections, prepare
from tokengrpc.store.sqlite.errors import mapped

T = TypeVar("T")

_mark = statements.question_mark
_COLUMNS = statements.TOKEN_COLUMNS
_GET = statements.get_token(_mark)
_GET_SERVICE = statements.get_service_token(_mark)
_INSERT = statements.insert_tokens(_mark)
#: Rows per group-commit statement: twelve parameters each, well under SQLite's limit.
_INSERT_BATCH = 500
_REVOKE = (
    "UPDATE tokens SET revoke_time = ?, update_time = ? WHERE id = ? AND revoke_time IS NULL"
    f" RETURNING {_COLUMNS}"
)
# A usage batch as one statement per chunk: executemany would step once per
# token, and every step releases the GIL (see docs/performance.md).
_USAGE_CHUNK = 500
# SET expressions see the row as it was, so the address follows the newer time.
_ADD_USAGE = (
    "UPDATE tokens SET usage_count = usage_count + batch.column2,"
    " last_use_time = max(coalesce(tokens.last_use_time, 0), batch.column3),"
    " last_use_ip = CASE WHEN batch.column3 >= coalesce(tokens.last_use_time, 0)"
    " THEN batch.column4 ELSE tokens.last_use_ip END"
    " FROM (VALUES {rows}) AS batch WHERE tokens.id = batch.column1"
)
# The old hash stays only while it has time left; a grace of 0 clears it.
_ROTATE = (
    "UPDATE tokens SET previous_hash = CASE WHEN ? > ? THEN secret_hash END,"
    " previous_until = CASE WHEN ? > ? THEN ? END,"
    " secret_hash = ?, sealed_value = ?, update_time = ?, secret_time = ?"
    f" WHERE id = ? AND revoke_time IS NULL RETURNING {_COLUMNS}"
)
_END_GRACE = (
    "UPDATE tokens SET previous_hash = NULL, previous_until = NULL, update_time = ?"
    " WHERE id = ? AND previous_hash = ? AND previous_until > ? AND revoke_time IS NULL"
    f" RETURNING {_COLUMNS}"
)
_LIST_EVENTS = statements.list_events(_mark)
_PAST_SECRET_AGE = statements.count_past_secret_age(_mark)
# Unused tokens (tokengrpc/sweeper.py): found by the reader thread without the
# write lock, then revoked by id under it, on the condition read again there.
_ACTIVITY = "max(coalesce(last_use_time, 0), create_time, secret_time)"
_SWEEP_BATCH = 500
_UNUSED_IDS = (
    f"SELECT id FROM tokens WHERE revoke_time IS NULL AND {_ACTIVITY} <= ? AND id > ?"
    f" ORDER BY id LIMIT {_SWEEP_BATCH}"
)
_REVOKE_UNUSED = (
    "UPDATE tokens SET revoke_time = ?, update_time = ?"
    " WHERE id IN ({ids}) AND revoke_time IS NULL AND " + _ACTIVITY + " <= ?"
    f" RETURNING {_COLUMNS}"
)
# Expiry reminders (tokengrpc/reminders.py): due rows through the partial index
# on reminder_wake, inside the writer's transaction (one writer: stepped once).
_REMINDERS_DUE = (
    f"SELECT {_COLUMNS}, reminder_expiry, reminder_next, reminder_wake FROM tokens"
    " WHERE reminder_wake <= ? ORDER BY reminder_wake LIMIT ?"
)
#: Where the reminder state follows the record's columns in a row of ``_REMINDERS_DUE``.
_STATE = len(_COLUMNS.split(","))
_SET_REMINDER = (
    "UPDATE tokens SET reminder_expiry = ?, reminder_next = ?, reminder_wake = ? WHERE id = ?"
)
# Rows that can need no reminder: revoked, or (no maximum age) without an expiry.
_SLEEP_REMINDERS = (
    "UPDATE tokens SET reminder_expiry = NULL, reminder_next = NULL, reminder_wake = NULL"
    " WHERE reminder_wake <= ? AND (revoke_time IS NOT NULL OR (? AND expire_time IS NULL))"
)
_DUE = outbox.due(_mark)
_CLAIM = outbox.claim(_mark)
_FINISH = outbox.finish(_mark)
_RETRY = outbox.retry(_mark)
_LIST = statements.list_tokens(_mark)
_PAGED = statements.paged_tokens(statements.numbered_question_mark)
_BY_NAME = statements.service_tokens_by_name(_mark, hint=" INDEXED BY tokens_service_by_name")
#: A kept count: one row, read on the loop thread.
_COUNT = statements.count_tokens(_mark)
#: Pages up to this size (plus the one row that tells whether more follow)
#: are read on the loop thread; bigger ones in the reader thread.
_INLINE_PAGE = 200


@functools.lru_cache(maxsize=4096)
def _strings(text: str) -> tuple[str, ...]:
    """Decoded JSON lists, cached: the same few scope lists come back all the time."""
    return tuple(json.loads(text))


def _json(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


# List columns are JSON text.
_record = functools.partial(statements.token_record, strings=_strings)
_event = functools.partial(statements.event_record, strings=_strings)
_insert_params = functools.partial(statements.insert_params, strings=_json)
_event_params = functools.partial(statements.event_params, strings=_json)


def _identity(path: Path) -> tuple[int, int] | None:
    """Device and inode of ``path``, or None if it is gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class SqliteEngine:
    """An ``Engine`` on one SQLite file."""

    def __init__(self, connections: Connections, path: Path | None = None) -> None:
        self._db = connections
        #: The file the connections opened, to notice it being deleted or
        #: replaced under us: writes would then go to a file nobody will read.
        self._path = path
        self._file = _identity(path) if path is not None else None
        self._health = WriteHealth()
        self._write_lock = asyncio.Lock()
        self._group = GroupCommit(self._write_lock, self._insert_batch)

    @classmethod
    async def open(cls, data_dir: Path) -> SqliteEngine:
        """Migrate ``tokens.db`` in ``data_dir`` (created 0600) and connect to it."""
        path = data_dir / DB_FILE
        await asyncio.to_thread(prepare, path)
        return cls(await Connections.open(path), path)

    @property
    def writable(self) -> bool:
        return self._health.writable

    @property
    def around_write(self) -> AroundWrite | None:
        """Wrapped around every statement of the writer (``AroundWrite``): tests
        make a slow or failing disk with it."""
        return self._db.around_write

    @around_write.setter
    def around_write(self, around: AroundWrite | None) -> None:
        self._db.around_write = around

    async def _records(self, sql: str, params: tuple[object, ...]) -> tuple[TokenRecord, ...]:
        return tuple(_record(row) for row in await self._db.read(sql, params))

    async def _locked(self, work: Callable[[], Awaitable[T]]) -> T:
        """A write, alone on the writer connection; disk failures become ``Unavailable``."""
        async with self._write_lock:
            self._same_file()
            with mapped(self._health):
                return await work()

    async def _transaction(self, work: Callable[[], Awaitable[T]]) -> T:
        return await self._locked(functools.partial(self._db.transaction, work))

    def _same_file(self) -> None:
        """Refuse to write into a file that is no longer the store (deleted or
        replaced on disk): nothing written there would survive a restart."""
        if self._path is None or _identity(self._path) == self._file:
            return
        self._health.stop("the store's file was removed or replaced; refusing writes until restart")
        raise Unavailable(
            "the store's file was removed or replaced under the running server; restart it"
        )

    async def insert(self, new: NewToken) -> TokenRecord:
        """Rows inserted together share one statement and one commit (``GroupCommit``)."""
        if new.only_into_empty_store:
            return await self._transaction(functools.partial(self._insert_first, new))
        return await self._group.insert(new)

    async def _insert_first(self, new: NewToken) -> TokenRecord:
        """The first token of an empty store (inside the writer's transaction)."""
        if next(iter(await self._db.fetch("SELECT EXISTS (SELECT 1 FROM tokens)")))[0]:
            raise StoreNotEmpty
        (record,) = await self._insert_with_events([new])
        self._health.healed()
        return record

    async def _insert_batch(self, news: Sequence[NewToken]) -> list[TokenRecord | Exception]:
        """A group commit's rows (the write lock held), in statements of ``_INSERT_BATCH``."""
        outcomes: list[TokenRecord | Exception] = []
        for start in range(0, len(news), _INSERT_BATCH):
            chunk = news[start : start + _INSERT_BATCH]
            try:
                self._same_file()
                with mapped(self._health):
                    outcomes += await self._insert_rows(chunk)
                self._health.healed()
            except Exception as error:
                outcomes += [error] * len(chunk)
        return outcomes

    async def _insert_rows(self, news: Sequence[NewToken]) -> Sequence[TokenRecord | Exception]:
        try:
            return await self._db.transaction(functools.partial(self._insert_with_events, news))
        except sqlite3.IntegrityError:
            if len(news) == 1:
                return [NameTaken(news[0].name)]
            # One duplicate name fails the whole statement: insert one by one.
            return [(await self._insert_rows([new]))[0] for new in news]

    async def _insert_with_events(self, news: Sequence[NewToken]) -> list[TokenRecord]:
        """The rows and their CREATED events (inside the caller's transaction)."""
        rows = [_insert_params(new) for new in news]
        if len(rows) == 1:
            found = await self._db.fetch(_INSERT, rows[0])
        else:
            sql = statements.insert_tokens(_mark, len(rows))
            found = await self._db.fetch(sql, [v for row in rows for v in row])
        # Rows get ascending ids in VALUES order; RETURNING's own order is unspecified.
        records = sorted((_record(row) for row in found), key=lambda record: record.id)
        events = [
            _event_params(EventAction.CREATED, (record.id, record.owner), new.now, new.actor, ())
            for record, new in zip(records, news, strict=True)
        ]
        await self._insert_events(events)
        return records

    async def _insert_events(self, events: Sequence[tuple[object, ...]]) -> None:
        for start in range(0, len(events), _INSERT_BATCH):
            chunk = events[start : start + _INSERT_BATCH]
            sql = statements.insert_events(_mark, len(chunk))
            await self._db.execute(sql, [value for row in chunk for value in row])

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        """Insert many rows in one transaction (imports, benchmarks); return their ids.

        Ids are consecutive: the write lock and the transaction keep anyone
        else from taking one in between. Each row gets its CREATED event.
        """
        rows = [_insert_params(new) for new in news]
        insert = _INSERT.partition(" RETURNING")[0]

        async def insert_all() -> int:
            found = await self._db.fetch(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tokens'), 0)"
            )
            await self._db.execute_many(insert, rows)
            first = int(next(iter(found))[0]) + 1
            await self._insert_events(
                [
                    _event_params(
                        EventAction.CREATED, (first + index, new.owner), new.now, new.actor, ()
                    )
                    for index, new in enumerate(news)
                ]
            )
            return first

        first = await self._transaction(insert_all)
        return range(first, first + len(rows))

    async def get(self, token_id: int) -> TokenRecord | None:
        records = await self._records(_GET, (token_id,))
        return records[0] if records else None

    async def get_service_token(self, name: str) -> TokenRecord | None:
        records = await self._records(_GET_SERVICE, (name,))
        return records[0] if records else None

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        keyset = query.offset == 0
        if query.after_name is not None:
            statement = _BY_NAME[query.include_revoked]
            params: tuple[object, ...] = (query.after_name, query.after_id, query.limit)
            if query.limit <= _INLINE_PAGE + 1:
                return await self._records(statement, params)
            return [_record(row) for row in await self._db.read_in_thread(statement, params)]
        if keyset and query.limit <= _INLINE_PAGE + 1:
            statement = _LIST[query.include_revoked, keyset]
            return await self._records(statement, statements.list_tokens_params(query))
        if query.after_id == 0 and not keyset:
            statement = _PAGED[query.include_revoked]
            params = (query.owner, query.offset, query.limit)
        else:
            statement = _LIST[query.include_revoked, keyset]
            params = statements.list_tokens_params(query)
        # An offset walks the index up to it (or back from the end, up to half
        # the owner's tokens): too long to hold the loop.
        return [_record(row) for row in await self._db.read_in_thread(statement, params)]

    async def count(self, query: ListQuery) -> int:
        rows = await self._db.read(_COUNT[query.include_revoked], (query.owner,))
        return int(rows[0][0])

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        sql, params = statements.update_token(token_id, changes, now, _mark, _json)

        async def update() -> Iterable[Any]:
            try:
                rows = await self._db.fetch(sql, params)
            except sqlite3.IntegrityError as exc:
                raise NameTaken(changes.name or "") from exc
            await self._audit(rows, EventAction.UPDATED, now, actor, changes.fields())
            return rows

        return _returned(await self._transaction(update))

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        async def revoke() -> Iterable[Any]:
            rows = await self._db.fetch(_REVOKE, (now, now, token_id))
            await self._audit(rows, EventAction.REVOKED, now, actor, ("revoke_time",))
            return rows

        return _returned(await self._transaction(revoke))

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        now, until = rotation.now, rotation.previous_until or 0
        params = (
            until, now, until, now, until, rotation.secret_hash, rotation.sealed_value, now, now,
        )  # fmt: skip
        fields = ("secret",) if rotation.sealed_value is None else ("secret", "value")

        async def rotate() -> Iterable[Any]:
            rows = await self._db.fetch(_ROTATE, (*params, token_id))
            await self._audit(rows, EventAction.ROTATED, now, actor, fields)
            return rows

        return _returned(await self._transaction(rotate))

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        async def end() -> Iterable[Any]:
            rows = await self._db.fetch(_END_GRACE, (now, token_id, previous_hash, now))
            await self._audit(rows, EventAction.REVOKED, now, actor, (PREVIOUS_SECRET,))
            return rows

        return _returned(await self._transaction(end))

    async def _audit(
        self,
        rows: Iterable[Any],
        action: EventAction,
        now: int,
        actor: Actor,
        fields: Sequence[str] = (),
    ) -> None:
        """The event of a change whose rows came back (none: nothing changed, no event)."""
        # Rows are RETURNING {_COLUMNS}: the id first, the owner second.
        events = [_event_params(action, (row[0], row[1]), now, actor, fields) for row in rows]
        if events:
            await self._insert_events(events)

    async def record_value_read(self, token_id: int, now: int, actor: Actor) -> None:
        async def record() -> None:
            rows = await self._db.fetch(_GET, (token_id,))
            await self._audit(rows, EventAction.VALUE_READ, now, actor)

        await self._transaction(record)

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        statement = _LIST_EVENTS[query.owner is not None, query.token_id is not None]
        rows = await self._db.read_in_thread(statement, statements.list_events_params(query))
        return [_event(row) for row in rows]

    async def revoke_unused(
        self, cutoff: int, now: int, token_id: int | None = None
    ) -> Sequence[TokenRecord]:
        if token_id is not None:
            return await self._revoke_unused([token_id], cutoff, now)
        revoked: Sequence[TokenRecord] = ()
        after = 0
        while ids := [
            row[0] for row in await self._db.read_in_thread(_UNUSED_IDS, (cutoff, after))
        ]:
            revoked = (*revoked, *await self._revoke_unused(ids, cutoff, now))
            after = ids[-1]
        return revoked

    async def _revoke_unused(
        self, ids: Sequence[int], cutoff: int, now: int
    ) -> tuple[TokenRecord, ...]:
        sql = _REVOKE_UNUSED.format(ids=", ".join("?" * len(ids)))
        actor = Actor(reason=REASON_INACTIVE)

        async def revoke() -> tuple[Any, ...]:
            rows = tuple(await self._db.fetch(sql, (now, now, *ids, cutoff)))
            await self._audit(rows, EventAction.REVOKED, now, actor, ("revoke_time",))
            return rows

        return tuple(_record(row) for row in await self._transaction(revoke))

    async def next_reminder_wake(self) -> int | None:
        rows = await self._db.read(
            "SELECT min(reminder_wake) FROM tokens WHERE reminder_wake IS NOT NULL", ()
        )
        return rows[0][0] if rows else None

    async def advance_reminders(
        self, now: int, step: ReminderStep, limit: int, *, only_own_expiries: bool
    ) -> int:
        async def advance() -> int:
            await self._db.execute(_SLEEP_REMINDERS, (now, only_own_expiries))
            rows = list(await self._db.fetch(_REMINDERS_DUE, (now, limit)))
            events = []
            for row in rows:
                record = _record(row)
                state, action = step(
                    record, ReminderState(row[_STATE], row[_STATE + 1], row[_STATE + 2])
                )
                params = (state.expiry, state.next_due, state.wake, record.id)
                await self._db.execute(_SET_REMINDER, params)
                if action is not None:
                    events.append(
                        _event_params(action, (record.id, record.owner), now, NO_ACTOR, ())
                    )
            await self._insert_events(events)
            return len(rows)

        return await self._transaction(advance)

    async def plan_reminders(self, max_secret_age: int | None, now: int) -> bool:
        async def plan() -> bool:
            found = list(await self._db.fetch("SELECT max_secret_age FROM reminder_plan"))
            if found and found[0][0] == max_secret_age:
                return False
            # A row already awake keeps its earlier wake: the time its expiry was
            # set. Without a maximum age, a token without an expiry needs nothing
            # (one planned under an age goes to sleep at its next reminder).
            await self._db.execute(
                "UPDATE tokens SET reminder_wake = min(coalesce(reminder_wake, ?), ?)"
                " WHERE revoke_time IS NULL AND (expire_time IS NOT NULL OR ? IS NOT NULL)",
                (now, now, max_secret_age),
            )
            await self._db.execute(
                "INSERT INTO reminder_plan (id, max_secret_age) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET max_secret_age = excluded.max_secret_age",
                (max_secret_age,),
            )
            return True

        return await self._transaction(plan)

    async def add_usage(self, uses: Mapping[int, Usage]) -> None:
        if not uses:
            return
        params = [
            (token_id, use.count, use.last_use_time, use.last_use_ip or None)
            for token_id, use in uses.items()
        ]

        async def add() -> None:
            for start in range(0, len(params), _USAGE_CHUNK):
                chunk = params[start : start + _USAGE_CHUNK]
                sql = _ADD_USAGE.format(rows=", ".join(["(?, ?, ?, ?)"] * len(chunk)))
                await self._db.execute(sql, [value for row in chunk for value in row])

        # One transaction, so a batch costs one fsync, not one per token.
        await self._transaction(add)

    # The webhook outbox (``outbox.py``): the trigger fills it; these hand it out.

    async def set_webhook_urls(self, urls: Sequence[str]) -> int:
        known = await self._db.read("SELECT url FROM webhook_endpoints", ())
        if {row[0] for row in known} == set(urls):
            return 0  # most starts: no write
        marks = ", ".join("?" * len(urls))

        async def replace() -> int:
            gone = f"SELECT id FROM webhook_endpoints WHERE url NOT IN ({marks})"
            dropped = await self._db.fetch(
                f"DELETE FROM webhook_outbox WHERE endpoint_id IN ({gone}) RETURNING id", urls
            )
            await self._db.execute(f"DELETE FROM webhook_endpoints WHERE id IN ({gone})", urls)
            await self._db.execute_many(
                "INSERT OR IGNORE INTO webhook_endpoints (url) VALUES (?)", [(url,) for url in urls]
            )
            return len(list(dropped))

        return await self._transaction(replace)

    async def claim_deliveries(self, now: int, lease_until: int, limit: int) -> Sequence[Outgoing]:
        # Read first: most polls find nothing due, and need no write. In the
        # reader thread: a long queue held back by a failing URL is a long walk.
        if not await self._db.read_in_thread(_DUE, (now, 1)):
            return []

        async def claim() -> Sequence[Outgoing]:
            ids = [row[0] for row in await self._db.fetch(_CLAIM, (lease_until, now, limit))]
            if not ids:
                return []
            sql = outbox.outgoing(f"IN ({', '.join('?' * len(ids))})")
            return [outbox.outgoing_record(row, _strings) for row in await self._db.fetch(sql, ids)]

        return await self._transaction(claim)

    async def finish_delivery(self, row_id: int) -> None:
        await self._locked(functools.partial(self._db.execute, _FINISH, (row_id,)))

    async def retry_delivery(self, row_id: int, attempts: int, due: int) -> None:
        await self._locked(functools.partial(self._db.execute, _RETRY, (attempts, due, row_id)))

    async def oldest_undelivered(self) -> int | None:
        rows = await self._db.read_in_thread(outbox.OLDEST)
        return int(rows[0][0]) if rows else None

    # Start-up reads: their errors are not mapped (there is no client to answer yet).

    async def is_empty(self) -> bool:
        rows = await self._db.reader.execute_fetchall("SELECT NOT EXISTS (SELECT 1 FROM tokens)")
        return bool(next(iter(rows))[0])

    async def count_past_secret_age(self, now: int, max_secret_age: int) -> int:
        params = (now, now - max_secret_age)
        rows = await self._db.read_in_thread(_PAST_SECRET_AGE, params)
        return int(rows[0][0])

    async def key_fingerprint(self) -> bytes | None:
        rows = await self._db.reader.execute_fetchall("SELECT fingerprint FROM secret_key")
        return next((bytes(row[0]) for row in rows), None)

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        async def record() -> Iterable[Any]:
            await self._db.execute(
                "INSERT OR IGNORE INTO secret_key (id, fingerprint) VALUES (1, ?)", (fingerprint,)
            )
            return await self._db.fetch("SELECT fingerprint FROM secret_key")

        rows = await self._transaction(record)
        return bytes(next(iter(rows))[0])

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        rows = await self._db.reader.execute_fetchall(
            "SELECT sealed_value, secret_hash FROM tokens WHERE sealed_value IS NOT NULL LIMIT 1"
        )
        return next(((bytes(row[0]), bytes(row[1])) for row in rows), None)

    async def ping(self) -> None:
        await self._db.read_in_thread("SELECT 1 FROM tokens LIMIT 1")

    async def probe_write(self) -> None:
        """A write that leaves no trace but needs fresh disk room (64 KiB of WAL, pages
        that then stay free for later rows), to see if the disk takes writes again."""

        # Two commits: pages freed in the transaction that wrote them are never written.
        for sql in ("INSERT INTO write_probe VALUES (zeroblob(65536))", "DELETE FROM write_probe"):
            await self._locked(functools.partial(self._db.execute, sql))
        self._health.healed()

    async def close(self) -> None:
        await self._group.close()  # queued creations land before the connections close
        await self._db.close()


def _returned(rows: Iterable[Any]) -> TokenRecord | None:
    """The row a write returned, if any."""
    return next((_record(row) for row in rows), None)


__all__ = ["DB_FILE", "SqliteEngine"]
