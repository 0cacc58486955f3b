from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    LiveGateway,
    LiveService,
    start_gateway,
    start_service,
    stop_gateway,
    stop_service,
)
from tests.postgres import External, PgServer, remove_server, start_server

#: The contract suite's ``open_store`` fixture, parametrized by engine.
pytest_plugins = ["tests.stores"]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[LiveService]:
    live = await start_service(tmp_path / "data")
    try:
        yield live
    finally:
        await stop_service(live)
        # Whatever a test did, no plaintext may have reached the database.
        for path in (tmp_path / "data").glob("tokens.db*"):
            content = path.read_bytes()
            for plaintext in live.plaintexts:
                secret = plaintext.partition("|")[2].encode()
                assert secret not in content, f"a plaintext secret was found in {path.name}"


@pytest.fixture(params=["network", "in-process"])
async def gateway(
    service: LiveService, request: pytest.FixtureRequest
) -> AsyncIterator[LiveGateway]:
    """Every gateway test runs both ways: over a gRPC channel and in-process."""
    live = await start_gateway(service, request.param)
    try:
        yield live
    finally:
        await stop_gateway(live)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | External]:
    """``TOKENGRPC_TEST_DATABASE_URL`` when set, else a private server for the session."""
    url = os.environ.get("TOKENGRPC_TEST_DATABASE_URL")
    if url:
        yield External(url)
        return
    server = start_server()
    try:
        yield server
    finally:
        remove_server(server)


@pytest.fixture
def database_url(postgres_server: PgServer | External) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.new_database()
