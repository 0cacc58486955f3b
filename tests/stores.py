"""Stores for the contract suite, one parameter per engine (docs/store.md).

``open_store`` opens another store on the same database each time it is
called: two stand for two processes (or instances) sharing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tokengrpc.store import TokenStore
from tokengrpc.store.sqlite import open_sqlite

StoreFactory = Callable[[], Awaitable[TokenStore]]


@pytest.fixture(params=["sqlite"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    data_dir = tmp_path / "store"
    data_dir.mkdir()
    opened: list[TokenStore] = []

    async def open_one() -> TokenStore:
        store = await open_sqlite(data_dir)
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in reversed(opened):
            await store.close()
