"""Stores for the contract suite, one parameter per engine (docs/store.md).

``open_store`` opens another store on the same database each time it is
called: two stand for two processes (or instances) sharing it. Every store
is composed as ``open_store`` composes it (``tokengrpc.store.open.layered``);
``memory`` is the dict-backed engine of ``tests/memory.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.memory import Database, MemoryChanges, MemoryEngine
from tokengrpc.store import TokenStore
from tokengrpc.store.open import layered
from tokengrpc.store.postgres.open import open_postgres
from tokengrpc.store.sqlite import open_sqlite

T = TypeVar("T")


class StoreFactory:
    """Opens another store on the test's database each call.

    ``within``: seconds another store may take to see a write (CONTRACT section
    5): 0 for SQLite, whose processes see it on the very next read; up to 1 s
    for PostgreSQL instances, which hear of it by ``NOTIFY``.
    """

    def __init__(self, open_one: Callable[[], Awaitable[TokenStore]], within: float) -> None:
        self._open_one = open_one
        self.within = within

    async def __call__(self) -> TokenStore:
        return await self._open_one()

    async def seen(self, read: Callable[[], Awaitable[T]], check: Callable[[T], bool]) -> T:
        """What ``read`` returns once ``check`` holds, or after ``within`` whatever it is."""
        deadline = time.monotonic() + self.within
        while True:
            value = await read()
            if check(value) or time.monotonic() >= deadline:
                return value
            await asyncio.sleep(0.002)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    data_dir = tmp_path / "store"
    data_dir.mkdir()
    opened: list[TokenStore] = []
    # A fresh database of the session's PostgreSQL server (tests/postgres.py).
    url = request.getfixturevalue("database_url") if request.param == "postgres" else ""
    memory = Database()

    async def open_one() -> TokenStore:
        if request.param == "memory":
            store = layered(MemoryEngine(memory), MemoryChanges(memory))
        else:
            store = layered(*await (open_postgres(url) if url else open_sqlite(data_dir)))
        opened.append(store)
        return store

    try:
        yield StoreFactory(open_one, 1.0 if url else 0.0)
    finally:
        for store in reversed(opened):
            await store.close()
