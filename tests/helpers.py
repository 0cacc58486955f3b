"""What the tests share: a live service on port 0 and a look at its store."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2

from tests import rows
from tokengrpc.clock import now_us
from tokengrpc.server import Core, GrpcServer
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
#: The maximum secret age of ``aged_service`` (microseconds): an hour, which
#: the tests pass by moving the service's clock.
MAX_SECRET_AGE = 3600 * 1_000_000


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Clock:
    """What the service's requests read as now (``Core.open``'s ``clock``): real
    time plus however far the test moved it, instead of sleeping past a deadline."""

    offset_us: int = 0

    def __call__(self) -> int:
        return now_us() + self.offset_us

    def advance(self, seconds: float) -> None:
        self.offset_us += round(seconds * 1_000_000)


@dataclass
class LiveService:
    core: Core
    server: GrpcServer
    port: int
    data_dir: Path
    channel: grpc.aio.Channel
    stub: tokens_pb2_grpc.TokenServiceAsyncStub
    # Not in a failing test's output: secrets, and the URL holds a password.
    admin_token: str = field(repr=False)
    #: Every plaintext a test saw, to search the database file for later.
    plaintexts: list[str] = field(default_factory=list, repr=False)
    #: Empty: SQLite in ``data_dir``; else the PostgreSQL database it uses.
    database_url: str = field(default="", repr=False)
    clock: Clock = field(default_factory=Clock)

    @property
    def engine(self) -> str:
        return "postgres" if self.database_url else "sqlite"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def create(
        self,
        name: str,
        *,
        by: str | None = None,
        owner: str = "",
        scopes: Sequence[str] = (),
        service_token: bool = False,
        allowed_ips: Sequence[str] = (),
    ) -> tuple[int, str]:
        """Create a token (by the bootstrap admin unless ``by``); return id and plaintext."""
        response = await self.stub.CreateToken(
            pb.CreateTokenRequest(
                name=name,
                owner=owner,
                scopes=scopes,
                service_token=service_token,
                allowed_ips=allowed_ips,
            ),
            metadata=bearer(by or self.admin_token),
        )
        self.plaintexts.append(response.plaintext)
        return response.token.id, response.plaintext

    def snapshot(self) -> list[tuple[object, ...]]:
        """Every row of the store, minus usage counters, then every audit event,
        for before/after checks (either engine: tests/rows.py)."""
        return rows.snapshot(self.data_dir, self.database_url)


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = status_details(error)
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for violation in bad.field_violations:
                found[violation.field] = violation.description
    return found


async def start_service(data_dir: Path, database_url: str = "", **changes: Any) -> LiveService:
    """A service on port 0: SQLite in ``data_dir``, or the PostgreSQL database
    named; ``changes``: other ``Settings`` fields."""
    from tokengrpc.config import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url, usage_flush_interval=0.05)
    settings = dataclasses.replace(settings, **changes)
    clock = Clock()
    core = await Core.open(settings, clock=clock)
    server = GrpcServer(core, settings=settings)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    admin = (data_dir / "bootstrap-token").read_text().strip()
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    service = LiveService(
        core, server, port, data_dir, channel, stub, admin, [], database_url, clock
    )
    service.plaintexts.append(admin)
    return service


async def start_twin(service: LiveService) -> LiveService:
    """Another process on the same store (data dir and database): the same secret key."""
    return await start_service(service.data_dir, service.database_url)


async def stop_service(service: LiveService) -> None:
    await service.channel.close()
    await service.server.stop(1)
    await service.core.close()


@dataclass
class LiveGateway:
    """A live service with the HTTP gateway in front of it, and an httpx client."""

    service: LiveService
    http: Any
    client: httpx.AsyncClient

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service.admin_token}"}

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def healthy(self) -> None:
        """The gateway still answers a normal request after whatever came before."""
        response = await self.client.get("/api/token", headers=self.admin)
        assert response.status_code == 200, response.text


async def start_gateway(
    service: LiveService, mode: str = "network", *, leak_reports: bool = False
) -> LiveGateway:
    """The gateway over a real gRPC channel, or in-process as ``serve`` runs it."""
    from gateway.app import start_http

    upstream = service.server.in_process if mode == "in-process" else service.target
    http = await start_http(upstream, "127.0.0.1:0", leak_reports=leak_reports)
    client = httpx.AsyncClient(base_url=f"http://{http.address}", timeout=30)
    return LiveGateway(service, http, client)


async def stop_gateway(live: LiveGateway) -> None:
    await live.client.aclose()
    await live.http.stop()
