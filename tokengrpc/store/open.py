"""The one place that picks an engine for the settings."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tokengrpc.config import Settings
from tokengrpc.store.base import StoreMissing, TokenStore
from tokengrpc.store.postgres.dsn import is_postgres
from tokengrpc.store.postgres.open import migrate_postgres, open_postgres
from tokengrpc.store.sqlite import DB_FILE, migrate_sqlite, open_sqlite


async def open_store(settings: Settings, *, create: bool = True) -> TokenStore:
    """The store the settings name: SQLite in the data dir, or the PostgreSQL database.

    Only ``serve`` and ``migrate`` ``create`` one: a ``token`` command pointed
    at the wrong place must say so, not make a store no server knows.
    """
    if is_postgres(settings.database_url):
        return await open_postgres(settings.database_url, create=create)
    _sqlite_dir(settings.data_dir, create)
    return await open_sqlite(settings.data_dir)


def _sqlite_dir(data_dir: Path, create: bool) -> None:
    if create:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    elif not os.path.isfile(data_dir / DB_FILE):
        raise StoreMissing(
            f"no store in {data_dir}: give the data dir of a server (--data-dir),"
            " or create one with 'tokengrpc migrate'"
        )


async def migrate_store(settings: Settings) -> tuple[int, int]:
    """Migrate the store the settings name, as every start does; the versions before and after."""
    if is_postgres(settings.database_url):
        return await migrate_postgres(settings.database_url)
    return await asyncio.to_thread(migrate_sqlite, settings.data_dir)
