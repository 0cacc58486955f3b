from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import rows
from tests.helpers import (
    MAX_SECRET_AGE,
    LiveGateway,
    LiveService,
    start_gateway,
    start_service,
    stop_gateway,
    stop_service,
)
from tests.postgres import Databases, External, PgServer, remove_server, start_server

#: The contract suite's ``open_store`` fixture, parametrized by engine.
pytest_plugins = ["tests.stores"]


#: Every service-level test runs on each engine (CONTRACT section 5).
ENGINES = ("sqlite", "postgres")
#: Gateway tests: SQLite each way the gateway reaches the servicers. The
#: gateway never sees the store: what it gets is the gRPC contract, which the
#: service-level tests hold on both engines, so PostgreSQL stands behind it in
#: the smoke modules below only (in-process, as ``serve`` runs it).
GATEWAY_VARIANTS: tuple[tuple[str, str], ...] = (("sqlite", "network"), ("sqlite", "in-process"))
#: Every route's round trip (create, get, list, patch, revoke) and readiness,
#: the one gateway answer that watches the store itself.
POSTGRES_GATEWAY_SMOKE = ("tests.test_transcoder_live", "tests.test_oauth_ops")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``service`` by engine here, once, for every test that uses it
    (directly or through another fixture), and ``gateway`` with it: a gateway
    test runs once per engine and upstream, never on two different stores."""
    names = metafunc.fixturenames
    if "gateway" in names:
        variants = GATEWAY_VARIANTS
        if metafunc.module.__name__ in POSTGRES_GATEWAY_SMOKE:
            variants += (("postgres", "in-process"),)
        ids = [f"{engine}-{mode}" for engine, mode in variants]
        metafunc.parametrize(("service", "gateway"), variants, indirect=True, ids=ids)
    elif "service" in names:
        metafunc.parametrize("service", ENGINES, indirect=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml): two workers a core. A test waits on what it
    started (a server's stop, a subprocess, a database) about as long as it computes."""
    return 2 * len(os.sched_getaffinity(0))


def _scan_files(data_dir: Path, plaintexts: list[str]) -> None:
    """No secret in SQLite's files (the database, its WAL and journal), as bytes."""
    for path in data_dir.glob("tokens.db*"):
        content = path.read_bytes()
        for plaintext in plaintexts:
            secret = plaintext.partition("|")[2].encode()
            assert secret not in content, f"a plaintext secret was found in {path.name}"


@contextlib.asynccontextmanager
async def running(data_dir: Path, database_url: str, **changes: Any) -> AsyncIterator[LiveService]:
    """A live service (``changes``: other ``Settings`` fields), and after it the
    search of its store for every plaintext it saw."""
    live = await start_service(data_dir, database_url, **changes)
    try:
        yield live
    finally:
        await stop_service(live)
    # Whatever a test did, no plaintext may have reached the database.
    _scan_files(data_dir, live.plaintexts)
    if database_url:
        found = await rows.rows_holding(database_url, rows.secret_needles(live.plaintexts))
        assert found == dict.fromkeys(found, 0), f"a plaintext secret was found in rows: {found}"


@pytest.fixture
async def service(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[LiveService]:
    """A live service on the engine the test is parametrized with (see above)."""
    engine = request.param
    url = request.getfixturevalue("database_url") if engine == "postgres" else ""
    async with running(tmp_path / "data", url) as live:
        yield live


@pytest.fixture(params=ENGINES)
async def aged_service(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[LiveService]:
    """A live service whose secrets authenticate ``MAX_SECRET_AGE`` after they
    were issued (CONTRACT section 12), on either engine."""
    url = request.getfixturevalue("database_url") if request.param == "postgres" else ""
    async with running(tmp_path / "data", url, max_secret_age=MAX_SECRET_AGE) as live:
        yield live


@pytest.fixture
async def sqlite_service(tmp_path: Path) -> AsyncIterator[LiveService]:
    """For what only SQLite has: its files on disk, its counter file, its writer."""
    async with running(tmp_path / "data", "") as live:
        yield live


@pytest.fixture
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
def postgres_server() -> Iterator[Databases]:
    """``TOKENGRPC_TEST_DATABASE_URL`` when set, else a private server for the
    session (for each xdist worker): databases on it."""
    url = os.environ.get("TOKENGRPC_TEST_DATABASE_URL")
    server = External(url) if url else start_server()
    databases = Databases(server)
    try:
        yield databases
    finally:
        databases.close()
        if isinstance(server, PgServer):
            remove_server(server)


@pytest.fixture
def database_url(postgres_server: Databases) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    url = postgres_server.take()
    yield url
    postgres_server.give_back(url)
