"""What the gateway passes upstream, seen by a recording TokenService.

The real service cannot be made slow or asked what metadata it saw, so these
two checks use a small recording servicer on a real gRPC server instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from gateway.app import start_http
from gateway.upstream import parse_timeout
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc


class Recording(tokens_pb2_grpc.TokenServiceServicer):
    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}
        self.time_remaining: float | None = None

    async def ListTokens(
        self,
        request: pb.ListTokensRequest,
        context: grpc.aio.ServicerContext[pb.ListTokensRequest, pb.ListTokensResponse],
    ) -> pb.ListTokensResponse:
        self.metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.time_remaining = context.time_remaining()
        if request.owner == "slow":
            await asyncio.sleep(2)
        return pb.ListTokensResponse()


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Recording, httpx.AsyncClient]]:
    servicer = Recording()  # type: ignore[abstract]  # only ListTokens is called
    server = grpc.aio.server()
    tokens_pb2_grpc.add_TokenServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = await start_http(f"127.0.0.1:{port}", "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{http.address}") as client:
        yield servicer, client
    await http.stop()
    await server.stop(0)


async def test_headers_become_metadata(recorded: tuple[Recording, httpx.AsyncClient]) -> None:
    servicer, client = recorded
    response = await client.get(
        "/v1/tokens",
        headers={"Authorization": "Bearer abc", "X-Request-Id": "req-1", "grpc-timeout": "20S"},
    )
    assert response.status_code == 200
    assert servicer.metadata["authorization"] == "Bearer abc"
    assert servicer.metadata["x-request-id"] == "req-1"
    assert servicer.metadata["x-forwarded-for"] == "127.0.0.1"
    assert servicer.time_remaining is not None
    assert 15 < servicer.time_remaining < 21  # the header, give or take clock rounding


async def test_forwarded_for_from_a_trusted_proxy(
    recorded: tuple[Recording, httpx.AsyncClient],
) -> None:
    servicer, client = recorded
    await client.get("/v1/tokens", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
    assert servicer.metadata["x-forwarded-for"] == "203.0.113.9"


async def test_grpc_timeout_is_the_deadline(recorded: tuple[Recording, httpx.AsyncClient]) -> None:
    _, client = recorded
    response = await client.get("/v1/tokens?owner=slow", headers={"grpc-timeout": "100m"})
    assert response.status_code == 504
    assert response.json()["code"] == 4


def test_parse_timeout() -> None:
    assert parse_timeout("5S") == 5
    assert parse_timeout("100m") == pytest.approx(0.1)
    assert parse_timeout("2H") == 7200
    assert parse_timeout("bogus") is None
    assert parse_timeout("123456789S") is None
    assert parse_timeout(None) is None
