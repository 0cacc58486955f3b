"""The connections to one SQLite file, and the one door to its writer.

One writer connection does every write (the engine holds a lock around it);
a second connection, on aiosqlite's thread, does the reads, so a long write
never queues a read behind it. WAL mode lets both, and other processes
sharing the file, proceed at once.

The hot path (one token by primary key, a small keyset page) skips the
aiosqlite thread hop: a read-only connection on the event loop's own thread
answers it directly. A WAL reader does not wait for writers; should SQLite
still say "busy" (a recovery or checkpoint in progress), the read goes to
the thread instead of blocking the loop (docs/performance.md says why).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from tokengrpc.store.sqlite.errors import mapped
from tokengrpc.store.sqlite.migrations import LATEST, migrate

DB_FILE = "tokens.db"

T = TypeVar("T")

#: Wrapped around every statement of the writer connection: ``around(sql, run)``
#: must return ``await run()``'s result. A public seam for tests (a slow or
#: failing disk on demand) and tracing.
AroundWrite = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


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


def _inline_reader(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, cached_statements=32)
    connection.execute("PRAGMA query_only = 1")
    connection.execute("PRAGMA busy_timeout = 0")  # never block the event loop
    return connection


class Connections:
    """The reader, the writer and the loop thread's read-only connection."""

    def __init__(
        self, reader: aiosqlite.Connection, writer: aiosqlite.Connection, inline: sqlite3.Connection
    ) -> None:
        #: The reader thread's connection, for reads whose errors are not mapped.
        self.reader = reader
        self._writer = writer
        self._inline = inline
        #: See ``AroundWrite``; None runs statements as they are.
        self.around_write: AroundWrite | None = None

    @classmethod
    async def open(cls, path: Path) -> Connections:
        """Connect to a prepared (migrated) database file."""
        return cls(
            await _connect(path, writer=False),
            await _connect(path, writer=True),
            _inline_reader(path),
        )

    # The writer: only under the engine's write lock.

    async def _around(self, sql: str, run: Callable[[], Awaitable[T]]) -> T:
        around = self.around_write
        if around is None:
            return await run()
        result: T = await around(sql, run)
        return result

    async def execute(self, sql: str, params: Any = ()) -> None:
        await self._around(sql, functools.partial(self._writer.execute, sql, params))

    async def fetch(self, sql: str, params: Any = ()) -> Iterable[Any]:
        fetch = functools.partial(self._writer.execute_fetchall, sql, params)
        return await self._around(sql, fetch)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._around(sql, functools.partial(self._writer.executemany, sql, rows))

    async def transaction(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work`` in one immediate transaction: one fsync for many statements."""
        await self.execute("BEGIN IMMEDIATE")
        try:
            result = await work()
        except BaseException:
            # SQLite may have rolled back already (it does on a full disk).
            if self._writer.in_transaction:
                await self.execute("ROLLBACK")
            raise
        await self.execute("COMMIT")
        return result

    # Reads.

    async def read(self, sql: str, params: Sequence[object]) -> list[Any]:
        """Run a short read inline; fall back to the reader thread if SQLite is busy.

        Any engine error falls back, not only "busy": a file that is no longer
        a database then fails there too, and is mapped to ``Unavailable``.
        """
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.Error:
            return await self.read_in_thread(sql, params)

    async def read_in_thread(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """A read too long to hold the loop for; disk failures become ``Unavailable``."""
        with mapped():
            return list(await self.reader.execute_fetchall(sql, params))

    async def close(self) -> None:
        self._inline.close()
        await self.reader.close()
        await self._writer.close()
