"""Start on a SQLite data dir: migrate ``tokens.db``, connect to it, map its counter file.

A file SQLite refuses at start (a full disk, say) becomes ``StoreUnusable``:
one line for the operator, never SQLite's text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tokengrpc.store.sqlite.connections import DB_FILE, prepare
from tokengrpc.store.sqlite.engine import SqliteEngine
from tokengrpc.store.sqlite.errors import cannot_open
from tokengrpc.store.sqlite.generation import Generation

GENERATION_FILE = "tokens.db-generation"


def migrate_sqlite(data_dir: Path) -> tuple[int, int]:
    """Migrate ``tokens.db`` in ``data_dir`` (made 0700, as ``serve`` makes it); the
    schema versions before and after."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return prepare(data_dir / DB_FILE)
    except sqlite3.Error as error:
        raise cannot_open(data_dir, error) from None


async def open_sqlite(data_dir: Path) -> tuple[SqliteEngine, Generation]:
    """The engine on ``tokens.db`` in ``data_dir`` and the counter that announces
    its changes; ``tokengrpc.store.open.layered`` puts the store over them."""
    try:
        engine = await SqliteEngine.open(data_dir)
    except sqlite3.Error as error:
        raise cannot_open(data_dir, error) from None
    try:
        changes = Generation(data_dir / GENERATION_FILE)
    except BaseException:
        await engine.close()
        raise
    return engine, changes
