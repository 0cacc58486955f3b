"""The rows of a live service's store, read behind its back, on either engine.

Tests compare the store before and after a request without going through the
code under test, so these read the database directly: ``sqlite3`` on the file
for SQLite, a short ``asyncpg`` connection for PostgreSQL. Both give the same
shape (a list of tuples) so a comparison means the same on both engines.

The synchronous helpers run PostgreSQL's queries on a thread of their own:
they are called from inside a running event loop, which must not be re-entered.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

# Columns a request may legitimately change without changing the store's
# meaning: a successful authentication counts a use, from an address.
USAGE_COLUMNS = frozenset({"usage_count", "last_use_time", "last_use_ip"})
#: Where expiry reminders stand: moved by the service's own timer at any time
#: (tokengrpc/sweeper.py), so left out of snapshots like the usage columns.
REMINDER_COLUMNS = frozenset({"reminder_expiry", "reminder_next", "reminder_wake"})
_UNSNAPPED = USAGE_COLUMNS | REMINDER_COLUMNS
#: Columns ``set_column`` may write (a constant list, so no name from a test
#: ever reaches SQL unchecked).
_SETTABLE = frozenset({"revoke_time", "expire_time", "active"})
_TABLES = ("tokens", "token_events")


def _blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end on a new loop in another thread, and wait for it."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(work))
        except BaseException as error:  # handed to the caller as it is
            failure.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


async def _fetch(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(record) for record in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


def snapshot(data_dir: Path, database_url: str) -> list[tuple[object, ...]]:
    """Every token row minus usage and reminder columns, then every audit event, by id."""
    if database_url:
        return _blocking(_pg_snapshot(database_url))
    with contextlib.closing(sqlite3.connect(data_dir / "tokens.db")) as db:
        names = [row[1] for row in db.execute("PRAGMA table_info(tokens)")]
        keep = ", ".join(n for n in names if n not in _UNSNAPPED)
        rows = list(db.execute(f"SELECT {keep} FROM tokens ORDER BY id"))  # noqa: S608
        return rows + list(db.execute("SELECT * FROM token_events ORDER BY id"))


async def _pg_snapshot(url: str) -> list[tuple[object, ...]]:
    columns = await _fetch(
        url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'tokens'"
        " ORDER BY ordinal_position",
    )
    keep = ", ".join(str(c[0]) for c in columns if c[0] not in _UNSNAPPED)
    rows = await _fetch(url, f"SELECT {keep} FROM tokens ORDER BY id")  # noqa: S608
    return rows + await _fetch(url, "SELECT * FROM token_events ORDER BY id")


def set_column(data_dir: Path, database_url: str, token_id: int, column: str, value: int) -> None:
    """Write one column of one token behind the service's back (a state no RPC makes)."""
    assert column in _SETTABLE, column
    if database_url:
        # PostgreSQL's ``active`` is a boolean; the others are integers.
        sql = f"UPDATE tokens SET {column} = $1 WHERE id = $2"  # noqa: S608
        pg_value: object = bool(value) if column == "active" else value
        _blocking(_fetch(database_url, sql, pg_value, token_id))
        return
    with contextlib.closing(sqlite3.connect(data_dir / "tokens.db")) as db, db:
        db.execute(f"UPDATE tokens SET {column} = ? WHERE id = ?", (value, token_id))  # noqa: S608


def usage_count(data_dir: Path, database_url: str, token_id: int) -> int:
    """The usage count the store holds now (not the service's pending one)."""
    if database_url:
        sql = "SELECT usage_count FROM tokens WHERE id = $1"
        ((count,),) = _blocking(_fetch(database_url, sql, token_id))
        return int(str(count))
    with contextlib.closing(sqlite3.connect(data_dir / "tokens.db")) as db:
        (count,) = db.execute("SELECT usage_count FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return int(count)


async def rows_holding(url: str, needles: Sequence[str]) -> dict[str, int]:
    """How many rows of each table hold any of ``needles`` in their text form.

    A row's text form spells ``bytea`` as hex, so pass a secret both as text and
    as the hex of its bytes to find it either way.
    """
    found: dict[str, int] = {}
    for table in _TABLES:
        rows = await _fetch(
            url,
            f"SELECT count(*) FROM {table} AS r WHERE EXISTS"  # noqa: S608 (a constant name)
            " (SELECT 1 FROM unnest($1::text[]) AS n WHERE strpos(r::text, n) > 0)",
            list(needles),
        )
        found[table] = int(str(rows[0][0]))
    return found


def secret_needles(plaintexts: Sequence[str]) -> list[str]:
    """The secret part of each plaintext, as text and as the hex of its bytes."""
    secrets = [p.partition("|")[2] for p in plaintexts]
    return [form for s in secrets if s for form in (s, s.encode().hex())]
