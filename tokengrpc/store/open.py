"""The one place that picks an engine for the settings and puts the layers on it.

An engine package opens its engine and its change announcement, nothing
more; the layers every engine gets are composed here alone (docs/store.md).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tokengrpc.config import Settings
from tokengrpc.store.base import StoreMissing, TokenStore
from tokengrpc.store.cached import CachingStore
from tokengrpc.store.counting import CountingStore
from tokengrpc.store.engine import Changes, Engine
from tokengrpc.store.postgres.dsn import is_postgres
from tokengrpc.store.postgres.open import migrate_postgres, open_postgres
from tokengrpc.store.sqlite.connections import DB_FILE
from tokengrpc.store.sqlite.open import migrate_sqlite, open_sqlite


def layered(engine: Engine, changes: Changes) -> CountingStore:
    """The store on ``engine``: uses counted, over the read cache, over the engine.

    The returned store owns both: closing it closes them.
    """
    return CountingStore(CachingStore(engine, changes))


async def open_store(settings: Settings, *, create: bool = True) -> TokenStore:
    """The store the settings name: SQLite in the data dir, or the PostgreSQL database.

    Only ``serve`` and ``migrate`` ``create`` one: a ``token`` command pointed
    at the wrong place must say so, not make a store no server knows.
    """
    if is_postgres(settings.database_url):
        return layered(*await open_postgres(settings.database_url, create=create))
    _sqlite_dir(settings.data_dir, create)
    return layered(*await open_sqlite(settings.data_dir))


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
