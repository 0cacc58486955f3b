"""The SQLite engine (the embedded default), through aiosqlite: SQL and concurrency only.

One writer connection, guarded by a lock, does every write; a second
connection does the reads, so a long write never queues a read behind it.
WAL mode lets both, and other processes sharing the file, proceed at once.

The hot path (one token by primary key, a small keyset page) skips the
aiosqlite thread hop: a read-only connection on the event loop's own thread
answers it in microseconds, where the hop costs about 150 µs. A WAL reader
does not wait for writers; should SQLite still say "busy" (a recovery or
checkpoint in progress), the read goes to the thread instead of blocking the
loop.

Caching and change announcement are layers over this (docs/store.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from tokengrpc.errors import Unavailable
from tokengrpc.store import statements
from tokengrpc.store.base import (
    NO_ACTOR,
    PREVIOUS_SECRET,
    SERVICE_OWNER,
    Actor,
    EventAction,
    EventQuery,
    EventRecord,
    ListQuery,
    NameTaken,
    NewToken,
    Rotation,
    StoreNotEmpty,
    TokenChanges,
    TokenRecord,
    Usage,
)
from tokengrpc.store.sqlite.migrations import LATEST, migrate

log = logging.getLogger(__name__)

DB_FILE = "tokens.db"

T = TypeVar("T")

#: Wrapped around every statement of the writer connection: ``around(sql, run)``
#: must return ``await run()``'s result. A public seam for tests (a slow or
#: failing disk on demand) and tracing.
AroundWrite = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]

_COLUMNS = statements.TOKEN_COLUMNS
_GET = statements.get_token(statements.question_mark)
_GET_SERVICE = statements.get_service_token(statements.question_mark)
_INSERT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Rows per group-commit statement: ten parameters each, well under SQLite's limit.
_INSERT_BATCH = 500
_INSERT = (
    "INSERT INTO tokens (owner, name, secret_hash, scopes, active, expire_time, allowed_ips,"
    f" create_time, update_time, sealed_value) VALUES {_INSERT_VALUES} RETURNING {_COLUMNS}"
)
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
    " secret_hash = ?, sealed_value = ?, update_time = ?"
    f" WHERE id = ? AND revoke_time IS NULL RETURNING {_COLUMNS}"
)
_END_GRACE = (
    "UPDATE tokens SET previous_hash = NULL, previous_until = NULL, update_time = ?"
    " WHERE id = ? AND previous_hash = ? AND previous_until > ? AND revoke_time IS NULL"
    f" RETURNING {_COLUMNS}"
)
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENTS = (
    "INSERT INTO token_events (event_time, action, token_id, owner, actor_token_id,"
    " actor_owner, client_ip, changed_fields) VALUES {rows}"
)
_LIST_EVENTS = statements.list_events(statements.question_mark)
_LIST = statements.list_tokens(statements.question_mark)
_COUNT = statements.count_tokens(statements.question_mark)
# Counting stops after this many rows, so it can run on the loop thread; an
# owner with more is counted in the reader thread.
_INLINE_COUNT = 1000
_COUNT_UP_TO = {
    include_revoked: "SELECT count(*) FROM (SELECT 1 FROM tokens WHERE owner = ?"
    + ("" if include_revoked else " AND revoke_time IS NULL")
    + f" LIMIT {_INLINE_COUNT + 1})"
    for include_revoked in (False, True)
}


@functools.lru_cache(maxsize=4096)
def _strings(text: str) -> tuple[str, ...]:
    """Decoded JSON lists, cached: the same few scope lists come back all the time."""
    return tuple(json.loads(text))


def _event_params(
    action: EventAction,
    token: tuple[int, str],
    now: int,
    actor: Actor,
    fields: Sequence[str] = (),
) -> tuple[object, ...]:
    """One event row: the token's id and owner, the actor, and field names only."""
    return (
        now,
        int(action),
        *token,
        actor.token_id,
        actor.owner,
        actor.client_ip,
        _json(tuple(fields)),
    )


def _json(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


# List columns are JSON text.
_record = functools.partial(statements.token_record, strings=_strings)
_event = functools.partial(statements.event_record, strings=_strings)
_insert_params = functools.partial(statements.insert_params, strings=_json)


#: Engine errors that say the disk or the file failed us, not the request.
_DISK_FULL = {sqlite3.SQLITE_FULL}
_UNUSABLE = {
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_READONLY,
}


def _unavailable(error: sqlite3.Error) -> Unavailable | None:
    """The words a client may see for an engine failure (never SQLite's own text), or None."""
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if code in _DISK_FULL or "disk is full" in str(error):
        return Unavailable("the store's disk is full; try again later")
    if code in _UNUSABLE or isinstance(error, sqlite3.OperationalError):
        return Unavailable("the store cannot be read or written right now; try again later")
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    """Device and inode of ``path``, or None if it is gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def prepare(path: Path) -> tuple[int, int]:
    """Set WAL and migrate, on a plain connection before serving starts; the
    schema versions before and after."""
    # Hashes and sealed values are nobody else's business: create it 0600.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute("PRAGMA journal_mode = WAL")
        return migrate(connection), LATEST
    finally:
        connection.close()


async def _connect(path: Path, *, writer: bool) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None)
    await connection.execute("PRAGMA busy_timeout = 10000")
    # FULL: a commit that returned is on disk, even across power loss.
    await connection.execute("PRAGMA synchronous = FULL" if writer else "PRAGMA query_only = 1")
    return connection


#: Pages up to this size (plus the one row that tells whether more follow)
#: are read on the loop thread; bigger ones in the reader thread.
_INLINE_PAGE = 200


def _inline_reader(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, cached_statements=32)
    connection.execute("PRAGMA query_only = 1")
    connection.execute("PRAGMA busy_timeout = 0")  # never block the event loop
    return connection


class SqliteEngine:
    """An ``Engine`` on one SQLite file.

    One write thread protects the single write connection: every write holds
    ``_write_lock``, and concurrent creations share one commit.
    """

    def __init__(
        self,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection,
        inline: sqlite3.Connection,
        path: Path | None = None,
    ) -> None:
        #: The file the connections opened, to notice it being deleted or
        #: replaced under us: writes would then go to a file nobody will read.
        self._path = path
        self._file = _identity(path) if path is not None else None
        self._reader = reader
        self._writer = writer
        self._inline = inline
        #: See ``AroundWrite``; None runs statements as they are.
        self.around_write: AroundWrite | None = None
        self._write_lock = asyncio.Lock()
        #: Rows waiting for the next group commit, each with its caller's future.
        self._queued: list[tuple[NewToken, asyncio.Future[TokenRecord]]] = []
        self._inserting: set[asyncio.Task[None]] = set()
        #: False from a write the disk refused until one succeeds (``/readyz`` says so).
        self.writable = True

    @contextlib.contextmanager
    def _engine_errors(self, *, writing: bool) -> Iterator[None]:
        """Disk and file failures become ``Unavailable``; a write's outcome sets ``writable``."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as error:
            mapped = _unavailable(error)
            if mapped is None:
                raise
            if writing and self.writable:
                self.writable = False
                log.warning("the store refused a write: %s", mapped.message)
            raise mapped from None

    def _healed(self) -> None:
        """A write that needed fresh room succeeded: an insert or ``probe_write``.

        Not any write: a small one can fit in WAL frames already on disk while
        a create still fails, and /readyz would flap.
        """
        if not self.writable:
            self.writable = True
            log.warning("the store takes writes again")

    @classmethod
    async def open(cls, data_dir: Path) -> SqliteEngine:
        """Migrate ``tokens.db`` in ``data_dir`` (created 0600) and connect to it."""
        path = data_dir / DB_FILE
        await asyncio.to_thread(prepare, path)
        return cls(
            await _connect(path, writer=False),
            await _connect(path, writer=True),
            _inline_reader(path),
            path,
        )

    async def _around(self, sql: str, run: Callable[[], Awaitable[T]]) -> T:
        around = self.around_write
        if around is None:
            return await run()
        result: T = await around(sql, run)
        return result

    async def _execute(self, sql: str, params: Any = ()) -> None:
        await self._around(sql, functools.partial(self._writer.execute, sql, params))

    async def _fetch(self, sql: str, params: Any = ()) -> Iterable[Any]:
        fetch = functools.partial(self._writer.execute_fetchall, sql, params)
        return await self._around(sql, fetch)

    async def _execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._around(sql, functools.partial(self._writer.executemany, sql, rows))

    async def _read(self, sql: str, params: Sequence[object]) -> list[Any]:
        """Run a short read inline; fall back to the reader thread if SQLite is busy.

        Any engine error falls back, not only "busy": a file that is no longer
        a database then fails there too, and is mapped to ``Unavailable``.
        """
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.Error:
            with self._engine_errors(writing=False):
                return list(await self._reader.execute_fetchall(sql, params))

    async def _records(self, sql: str, params: tuple[object, ...]) -> tuple[TokenRecord, ...]:
        return tuple(_record(row) for row in await self._read(sql, params))

    async def _locked(self, work: Callable[[], Awaitable[T]], *, checked: bool = False) -> T:
        """A write, alone on the writer connection; disk failures become ``Unavailable``.

        ``checked``: ``work`` looks at the file itself (the group insert, which
        must hand every failure to its queued callers).
        """
        async with self._write_lock:
            if not checked:
                self._same_file()
            with self._engine_errors(writing=True):
                return await work()

    def _same_file(self) -> None:
        """Refuse to write into a file that is no longer the store (deleted or
        replaced on disk): nothing written there would survive a restart."""
        if self._path is None or _identity(self._path) == self._file:
            return
        if self.writable:
            self.writable = False
            log.warning("the store's file was removed or replaced; refusing writes until restart")
        raise Unavailable(
            "the store's file was removed or replaced under the running server; restart it"
        )

    async def _transaction(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work`` in one immediate transaction: one fsync for many statements."""
        await self._execute("BEGIN IMMEDIATE")
        try:
            result = await work()
        except BaseException:
            # SQLite may have rolled back already (it does on a full disk).
            if self._writer.in_transaction:
                await self._execute("ROLLBACK")
            raise
        await self._execute("COMMIT")
        return result

    async def insert(self, new: NewToken) -> TokenRecord:
        """Queue the row; rows queued together are written by one statement.

        A commit costs an fsync and a trip through the writer thread, so
        concurrent creations share one (group commit) instead of queueing
        for the write lock one by one.
        """
        if new.only_into_empty_store:
            return await self._locked(
                functools.partial(self._transaction, functools.partial(self._insert_first, new))
            )
        landed = asyncio.get_running_loop().create_future()
        self._queued.append((new, landed))
        if len(self._queued) == 1:
            task = asyncio.create_task(self._locked(self._insert_queued, checked=True))
            self._inserting.add(task)
            task.add_done_callback(self._inserting.discard)
        record: TokenRecord = await landed
        return record

    async def _insert_first(self, new: NewToken) -> TokenRecord:
        """The first token of an empty store (inside the writer's transaction)."""
        if next(iter(await self._fetch("SELECT EXISTS (SELECT 1 FROM tokens)")))[0]:
            raise StoreNotEmpty
        (record,) = await self._insert_with_events([new])
        self._healed()
        return record

    async def _insert_queued(self) -> None:
        """Insert every queued row (one statement, one commit) and answer each caller."""
        batch, self._queued = self._queued, []
        outcomes: list[TokenRecord | Exception] = []
        for start in range(0, len(batch), _INSERT_BATCH):
            news = [new for new, _ in batch[start : start + _INSERT_BATCH]]
            try:
                self._same_file()
                with self._engine_errors(writing=True):
                    outcomes += await self._insert_rows(news)
                self._healed()
            except Exception as error:
                outcomes += [error] * len(news)
        for (_, landed), outcome in zip(batch, outcomes, strict=True):
            if landed.done():  # its caller gave up waiting
                continue
            if isinstance(outcome, TokenRecord):
                landed.set_result(outcome)
            else:
                landed.set_exception(outcome)

    async def _insert_rows(self, news: Sequence[NewToken]) -> Sequence[TokenRecord | Exception]:
        try:
            return await self._transaction(functools.partial(self._insert_with_events, news))
        except sqlite3.IntegrityError:
            if len(news) == 1:
                return [NameTaken(news[0].name)]
            # One duplicate name fails the whole statement: insert one by one.
            return [(await self._insert_rows([new]))[0] for new in news]

    async def _insert_with_events(self, news: Sequence[NewToken]) -> list[TokenRecord]:
        """The rows and their CREATED events (inside the caller's transaction)."""
        rows = [_insert_params(new) for new in news]
        if len(rows) == 1:
            found = await self._fetch(_INSERT, rows[0])
        else:
            values = ", ".join([_INSERT_VALUES] * len(rows))
            sql = _INSERT.replace(_INSERT_VALUES, values)
            found = await self._fetch(sql, [v for row in rows for v in row])
        # Rows get ascending ids in VALUES order; RETURNING's own order is unspecified.
        records = sorted((_record(row) for row in found), key=lambda record: record.id)
        events = [
            _event_params(EventAction.CREATED, (record.id, record.owner), new.now, new.actor)
            for record, new in zip(records, news, strict=True)
        ]
        await self._insert_events(events)
        return records

    async def _insert_events(self, events: Sequence[tuple[object, ...]]) -> None:
        for start in range(0, len(events), _INSERT_BATCH):
            chunk = events[start : start + _INSERT_BATCH]
            sql = _INSERT_EVENTS.format(rows=", ".join([_EVENT_VALUES] * len(chunk)))
            await self._execute(sql, [value for row in chunk for value in row])

    async def insert_many(self, news: Sequence[NewToken]) -> range:
        """Insert many rows in one transaction (imports, benchmarks); return their ids.

        Ids are consecutive: the write lock and the transaction keep anyone
        else from taking one in between. Each row gets its CREATED event.
        """
        rows = [_insert_params(new) for new in news]
        insert = _INSERT.partition(" RETURNING")[0]

        async def insert_all() -> int:
            found = await self._fetch(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tokens'), 0)"
            )
            await self._execute_many(insert, rows)
            first = int(next(iter(found))[0]) + 1
            await self._insert_events(
                [
                    _event_params(
                        EventAction.CREATED, (first + index, new.owner), new.now, new.actor
                    )
                    for index, new in enumerate(news)
                ]
            )
            return first

        first = await self._locked(functools.partial(self._transaction, insert_all))
        return range(first, first + len(rows))

    async def get(self, token_id: int) -> TokenRecord | None:
        records = await self._records(_GET, (token_id,))
        return records[0] if records else None

    async def get_service_token(self, name: str) -> TokenRecord | None:
        records = await self._records(_GET_SERVICE, (name,))
        return records[0] if records else None

    async def list(self, query: ListQuery) -> Sequence[TokenRecord]:
        keyset = query.offset == 0
        statement = _LIST[query.include_revoked, keyset]
        params = statements.list_tokens_params(query)
        if keyset and query.limit <= _INLINE_PAGE + 1:
            return await self._records(statement, params)
        # An offset walks the index up to it: too long to hold the loop.
        with self._engine_errors(writing=False):
            rows = await self._reader.execute_fetchall(statement, params)
        return [_record(row) for row in rows]

    async def count(self, query: ListQuery) -> int:
        # Most owners have a handful of tokens: count those inline, and leave
        # the thread hop to the few with more than _INLINE_COUNT.
        rows = await self._read(_COUNT_UP_TO[query.include_revoked], (query.owner,))
        counted = int(rows[0][0])
        if counted > _INLINE_COUNT:
            with self._engine_errors(writing=False):
                sql = _COUNT[query.include_revoked]
                rows = list(await self._reader.execute_fetchall(sql, (query.owner,)))
            counted = int(rows[0][0])
        return counted

    async def update(
        self, token_id: int, changes: TokenChanges, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        assignments = ["update_time = ?"]
        params: list[object] = [now]
        for column, value in (
            ("name", changes.name),
            ("scopes", None if changes.scopes is None else _json(changes.scopes)),
            ("active", None if changes.active is None else int(changes.active)),
            ("allowed_ips", None if changes.allowed_ips is None else _json(changes.allowed_ips)),
        ):
            if value is not None:
                assignments.append(f"{column} = ?")
                params.append(value)
        if changes.set_expire_time:
            assignments.append("expire_time = ?")
            params.append(changes.expire_time)
        sql = (
            f"UPDATE tokens SET {', '.join(assignments)}"
            f" WHERE id = ? AND revoke_time IS NULL RETURNING {_COLUMNS}"
        )
        params.append(token_id)

        async def update() -> Iterable[Any]:
            try:
                rows = await self._fetch(sql, params)
            except sqlite3.IntegrityError as exc:
                raise NameTaken(changes.name or "") from exc
            await self._audit(rows, EventAction.UPDATED, now, actor, changes.fields())
            return rows

        return _returned(await self._locked(functools.partial(self._transaction, update)))

    async def revoke(self, token_id: int, now: int, actor: Actor = NO_ACTOR) -> TokenRecord | None:
        async def revoke() -> Iterable[Any]:
            rows = await self._fetch(_REVOKE, (now, now, token_id))
            await self._audit(rows, EventAction.REVOKED, now, actor, ("revoke_time",))
            return rows

        return _returned(await self._locked(functools.partial(self._transaction, revoke)))

    async def rotate(
        self, token_id: int, rotation: Rotation, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        now, until = rotation.now, rotation.previous_until or 0
        params = (until, now, until, now, until, rotation.secret_hash, rotation.sealed_value, now)
        fields = ("secret",) if rotation.sealed_value is None else ("secret", "value")

        async def rotate() -> Iterable[Any]:
            rows = await self._fetch(_ROTATE, (*params, token_id))
            await self._audit(rows, EventAction.ROTATED, now, actor, fields)
            return rows

        return _returned(await self._locked(functools.partial(self._transaction, rotate)))

    async def end_grace(
        self, token_id: int, previous_hash: bytes, now: int, actor: Actor = NO_ACTOR
    ) -> TokenRecord | None:
        async def end() -> Iterable[Any]:
            rows = await self._fetch(_END_GRACE, (now, token_id, previous_hash, now))
            await self._audit(rows, EventAction.REVOKED, now, actor, (PREVIOUS_SECRET,))
            return rows

        return _returned(await self._locked(functools.partial(self._transaction, end)))

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
            rows = await self._fetch(_GET, (token_id,))
            await self._audit(rows, EventAction.VALUE_READ, now, actor)

        await self._locked(functools.partial(self._transaction, record))

    async def list_events(self, query: EventQuery) -> Sequence[EventRecord]:
        statement = _LIST_EVENTS[query.owner is not None, query.token_id is not None]
        # Not cached: an audit listing is rare and must show the latest.
        with self._engine_errors(writing=False):
            rows = await self._reader.execute_fetchall(
                statement, statements.list_events_params(query)
            )
        return [_event(row) for row in rows]

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
                await self._execute(sql, [value for row in chunk for value in row])

        # One transaction, so a batch costs one fsync, not one per token.
        await self._locked(functools.partial(self._transaction, add))

    async def is_empty(self) -> bool:
        rows = await self._reader.execute_fetchall("SELECT NOT EXISTS (SELECT 1 FROM tokens)")
        return bool(next(iter(rows))[0])

    async def key_fingerprint(self) -> bytes | None:
        rows = await self._reader.execute_fetchall("SELECT fingerprint FROM secret_key")
        return next((bytes(row[0]) for row in rows), None)

    async def record_key_fingerprint(self, fingerprint: bytes) -> bytes:
        async def record() -> Iterable[Any]:
            await self._execute(
                "INSERT OR IGNORE INTO secret_key (id, fingerprint) VALUES (1, ?)", (fingerprint,)
            )
            return await self._fetch("SELECT fingerprint FROM secret_key")

        rows = await self._locked(functools.partial(self._transaction, record))
        return bytes(next(iter(rows))[0])

    async def sealed_sample(self) -> tuple[bytes, bytes] | None:
        rows = await self._reader.execute_fetchall(
            "SELECT sealed_value, secret_hash FROM tokens WHERE sealed_value IS NOT NULL LIMIT 1"
        )
        return next(((bytes(row[0]), bytes(row[1])) for row in rows), None)

    async def ping(self) -> None:
        with self._engine_errors(writing=False):
            await self._reader.execute_fetchall("SELECT 1 FROM tokens LIMIT 1")

    async def probe_write(self) -> None:
        """A write that leaves no trace but needs fresh disk room (64 KiB of WAL, pages
        that then stay free for later rows), to see if the disk takes writes again."""

        # Two commits: pages freed in the transaction that wrote them are never written.
        for sql in ("INSERT INTO write_probe VALUES (zeroblob(65536))", "DELETE FROM write_probe"):
            await self._locked(functools.partial(self._execute, sql))
        self._healed()

    async def close(self) -> None:
        while self._inserting:  # queued creations land before the connections close
            await asyncio.gather(*self._inserting, return_exceptions=True)
        self._inline.close()
        await self._reader.close()
        await self._writer.close()


def _returned(rows: Iterable[Any]) -> TokenRecord | None:
    """The row a write returned, if any."""
    return next((_record(row) for row in rows), None)


__all__ = ["DB_FILE", "SERVICE_OWNER", "SqliteEngine"]
