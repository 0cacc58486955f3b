"""The tests' PostgreSQL server starts wherever the clone is (tests/postgres.py).

As root it runs as ``nobody``, who cannot enter a ``mktemp -d`` directory,
``/root`` or a 0700 home: the venv holding pgserver's binaries may be there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from tests.postgres import INSTALL, remove_server, start_server


async def test_a_server_starts_from_binaries_behind_a_private_directory(tmp_path: Path) -> None:
    # A venv's site-packages as pgserver's wheel lays it out, in a 0700 directory.
    site = tmp_path / "clone" / "site-packages"
    site.mkdir(parents=True)
    (tmp_path / "clone").chmod(0o700)
    (site / "pgserver").symlink_to(INSTALL.parent)
    (site / "pgserver.libs").symlink_to(INSTALL.parent.parent / "pgserver.libs")
    server = await asyncio.to_thread(start_server, site / "pgserver" / INSTALL.name)
    try:
        url = await asyncio.to_thread(server.new_database)
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(remove_server, server)
