"""The SQLite engine and what only it needs: migrations in ``PRAGMA user_version``,
the counter file that announces changes to the processes on one data dir."""

from __future__ import annotations

from pathlib import Path

from tokengrpc.store.cached import CachingStore
from tokengrpc.store.sqlite.engine import DB_FILE, SqliteEngine, prepare
from tokengrpc.store.sqlite.generation import Generation

GENERATION_FILE = "tokens.db-generation"


def migrate_sqlite(data_dir: Path) -> tuple[int, int]:
    """Migrate ``tokens.db`` in ``data_dir`` (made 0700, as ``serve`` makes it); the
    schema versions before and after."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return prepare(data_dir / DB_FILE)


async def open_sqlite(data_dir: Path) -> CachingStore:
    """The store on ``tokens.db`` in ``data_dir``: the engine, its counter, the cache."""
    engine = await SqliteEngine.open(data_dir)
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
    "migrate_sqlite",
    "open_sqlite",
]
