"""The SQLite engine and what only it needs: migrations in ``PRAGMA user_version``,
the counter file that announces changes to the processes on one data dir."""

from __future__ import annotations

from pathlib import Path

from tokengrpc.store.cached import CachingStore
from tokengrpc.store.sqlite.engine import DB_FILE, SqliteEngine
from tokengrpc.store.sqlite.generation import Generation

GENERATION_FILE = "tokens.db-generation"


async def open_sqlite(data_dir: Path) -> CachingStore:
    """The store on ``tokens.db`` in ``data_dir``: the engine, its counter, the cache."""
    engine = await SqliteEngine.open(data_dir)
    try:
        changes = Generation(data_dir / GENERATION_FILE)
    except BaseException:
        await engine.close()
        raise
    return CachingStore(engine, changes)


__all__ = ["DB_FILE", "GENERATION_FILE", "Generation", "SqliteEngine", "open_sqlite"]
