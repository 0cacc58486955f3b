"""``tokengrpc migrate``: bring whichever store the settings name up to date."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from tokengrpc.config import Settings
from tokengrpc.store.postgres.dsn import is_postgres
from tokengrpc.store.postgres.open import migrate_postgres


def _migrate_sqlite(path: Path) -> tuple[int, int]:
    from tokengrpc.store.migrations import LATEST, migrate

    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # as every start makes it
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute("PRAGMA journal_mode = WAL")
        return migrate(connection), LATEST
    finally:
        connection.close()


async def migrate_store(settings: Settings) -> tuple[int, int]:
    """The schema versions before and after, as every start would migrate."""
    if is_postgres(settings.database_url):
        return await migrate_postgres(settings.database_url)
    from tokengrpc.store.sqlite import DB_FILE

    return await asyncio.to_thread(_migrate_sqlite, settings.data_dir / DB_FILE)
