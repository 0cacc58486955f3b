"""The one place that picks an engine for the settings."""

from __future__ import annotations

import asyncio

from tokengrpc.config import Settings
from tokengrpc.store.base import TokenStore
from tokengrpc.store.postgres.dsn import is_postgres
from tokengrpc.store.postgres.open import migrate_postgres, open_postgres
from tokengrpc.store.sqlite import migrate_sqlite, open_sqlite


async def open_store(settings: Settings) -> TokenStore:
    """The store the settings name: SQLite in the data dir, or the PostgreSQL database."""
    if is_postgres(settings.database_url):
        return await open_postgres(settings.database_url)
    return await open_sqlite(settings.data_dir)


async def migrate_store(settings: Settings) -> tuple[int, int]:
    """Migrate the store the settings name, as every start does; the versions before and after."""
    if is_postgres(settings.database_url):
        return await migrate_postgres(settings.database_url)
    return await asyncio.to_thread(migrate_sqlite, settings.data_dir)
