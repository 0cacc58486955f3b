"""The SQLite engine and what only it needs: migrations in ``PRAGMA user_version``,
the counter file that announces changes to the processes on one data dir."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tokengrpc.store.cached import CachingStore
from tokengrpc.store.sqlite.engine import DB_FILE, SqliteEngine, prepare
from tokengrpc.store.sqlite.generation import Generation

GENERATION_FILE = "tokens.db-generation"


class StoreUnusable(ValueError):
    """SQLite refused the store at start (a full disk, say): one line for the operator."""


def _cannot_open(data_dir: Path, error: sqlite3.Error) -> StoreUnusable:
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or "disk is full" in str(error):
        reason = "its disk is full"
    else:
        reason = "SQLite cannot read or write it"
    return StoreUnusable(f"cannot open the store in {data_dir}: {reason}")


def migrate_sqlite(data_dir: Path) -> tuple[int, int]:
    """Migrate ``tokens.db`` in ``data_dir`` (made 0700, as ``serve`` makes it); the
    schema versions before and after."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return prepare(data_dir / DB_FILE)
    except sqlite3.Error as error:
        raise _cannot_open(data_dir, error) from None


async def open_sqlite(data_dir: Path) -> CachingStore:
    """The store on ``tokens.db`` in ``data_dir``: the engine, its counter, the cache."""
    try:
        engine = await SqliteEngine.open(data_dir)
    except sqlite3.Error as error:
        raise _cannot_open(data_dir, error) from None
    try:
        changes = Generation(data_dir / GENERATION_FILE)
    except BaseException:
        await engine.close()
        raise
    return CachingStore(engine, changes)


__all__ = [
    "DB_FILE",
    "GENERATION_FILE",
    "Generation",
    "SqliteEngine",
    "StoreUnusable",
    "migrate_sqlite",
    "open_sqlite",
]
