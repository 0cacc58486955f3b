"""The one place that picks an engine for the settings."""

from __future__ import annotations

from tokengrpc.config import Settings
from tokengrpc.store.base import TokenStore
from tokengrpc.store.sqlite import open_sqlite


async def open_store(settings: Settings) -> TokenStore:
    """The store the settings name: today always SQLite in the data dir."""
    return await open_sqlite(settings.data_dir)
