"""What the gateway passes upstream, seen by a recording TokenService.

The real service cannot be made slow or asked what metadata it saw, so these
two checks use a small recording servicer on a real gRPC server instead.
"""

from __future__ import annotations

import asyncio
import contextlib
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


@contextlib.asynccontextmanager
async def _recording(
    trusted: tuple[str, ...],
) -> AsyncIterator[tuple[Recording, httpx.AsyncClient]]:
    servicer = Recording()  # type: ignore[abstract]  # only ListTokens is called
    server = grpc.aio.server()
    tokens_pb2_grpc.add_TokenServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = await start_http(f"127.0.0.1:{port}", "127.0.0.1:0", trusted)
    async with httpx.AsyncClient(base_url=f"http://{http.address}") as client:
        yield servicer, client
    await http.stop()
    await server.stop(0)


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Recording, httpx.AsyncClient]]:
    """The gateway behind a trusted proxy: loopback (the test) and 10.0.0.0/8."""
    async with _recording(("127.0.0.0/8", "10.0.0.0/8")) as pair:
        yield pair


@pytest.fixture
async def untrusted() -> AsyncIterator[tuple[Recording, httpx.AsyncClient]]:
    """The gateway trusting only 10.0.0.0/8, so the test's loopback peer is a stranger."""
    async with _recording(("10.0.0.0/8",)) as pair:
        yield pair


async def test_headers_become_metadata(recorded: tuple[Recording, httpx.AsyncClient]) -> None:
    servicer, client = recorded
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = await client.get(
        "/v1/tokens",
        headers={"Authorization": "Bearer abc", "X-Request-Id": "req-1", "grpc-timeout": "20S",
                 "traceparent": parent, "tracestate": "vendor=1"},
    )  # fmt: skip
    assert response.status_code == 200
    assert servicer.metadata["authorization"] == "Bearer abc"
    assert servicer.metadata["x-request-id"] == "req-1"
    # Not tracing itself, the gateway passes the client's trace context on as it came.
    assert servicer.metadata["traceparent"] == parent
    assert servicer.metadata["tracestate"] == "vendor=1"
    assert servicer.metadata["x-forwarded-for"] == "127.0.0.1"
    assert servicer.time_remaining is not None
    assert 15 < servicer.time_remaining < 21  # the header, give or take clock rounding


# X-Forwarded-For headers as sent (each string one header) -> the client the
# gateway must name upstream, seen from a trusted peer (127.0.0.1). Trusted:
# loopback and 10.0.0.0/8; 203.0.113.x and 198.51.100.x are not.
FORWARDED: list[tuple[tuple[str, ...], str]] = [
    ((), "127.0.0.1"),
    (("203.0.113.9",), "203.0.113.9"),
    # The client wrote the left entry itself; the trusted proxy appended what it saw.
    (("198.51.100.1, 203.0.113.9",), "203.0.113.9"),
    (("203.0.113.9, 198.51.100.1",), "198.51.100.1"),
    # Trusted proxies on the right are skipped, whatever their order.
    (("203.0.113.9, 10.0.0.1",), "203.0.113.9"),
    (("203.0.113.9, 10.0.0.2, 10.0.0.1",), "203.0.113.9"),
    (("198.51.100.1, 203.0.113.9, 10.0.0.2, 127.0.0.1",), "203.0.113.9"),
    (("10.0.0.1, 203.0.113.9",), "203.0.113.9"),
    # Every hop trusted: the leftmost seen is the client.
    (("10.0.0.3, 10.0.0.2",), "10.0.0.3"),
    # Several headers are one list, in order.
    (("198.51.100.1", "203.0.113.9"), "203.0.113.9"),
    (("203.0.113.9", "10.0.0.1"), "203.0.113.9"),
    # Garbage stops the walk: nothing left of it is believed.
    (("203.0.113.9, garbage, 10.0.0.1",), "10.0.0.1"),
    (("203.0.113.9, 10.0.0.1:99999",), "127.0.0.1"),
    (("203.0.113.9, ,10.0.0.1",), "10.0.0.1"),
    # An entry with a port is its address, as the service reads it.
    (("203.0.113.9, 10.0.0.1:80",), "203.0.113.9"),
    (("198.51.100.1, [2001:db8::7]:443, 10.0.0.1:8080",), "2001:db8::7"),
    # IPv6, and an IPv4-mapped IPv6 address as its IPv4 form.
    (("2001:db8::7, 10.0.0.1",), "2001:db8::7"),
    (("::ffff:203.0.113.9",), "203.0.113.9"),
    # A long forged chain (as long as the 16 KiB head allows) costs the same as
    # a short one and still ends right.
    ((", ".join(["198.51.100.1"] * 1000 + ["203.0.113.9"]),), "203.0.113.9"),
    ((", ".join(["203.0.113.9"] + ["10.0.0.1"] * 100),), "10.0.0.1"),
]


@pytest.mark.parametrize(("sent", "client"), FORWARDED, ids=[str(i) for i in range(len(FORWARDED))])
async def test_forwarded_for_from_a_trusted_proxy_is_walked_from_the_right(
    recorded: tuple[Recording, httpx.AsyncClient], sent: tuple[str, ...], client: str
) -> None:
    servicer, http = recorded
    headers = [("X-Forwarded-For", value) for value in sent]
    response = await http.get("/v1/tokens", headers=headers)
    assert response.status_code == 200
    assert servicer.metadata["x-forwarded-for"] == client


@pytest.mark.parametrize(("sent", "_"), FORWARDED, ids=[str(i) for i in range(len(FORWARDED))])
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    untrusted: tuple[Recording, httpx.AsyncClient], sent: tuple[str, ...], _: str
) -> None:
    servicer, http = untrusted
    headers = [("X-Forwarded-For", value) for value in sent]
    response = await http.get("/v1/tokens", headers=headers)
    assert response.status_code == 200
    assert servicer.metadata["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Authorization", "Bearer caf\u00e9".encode()),
        ("Authorization", b"Bearer \xff\xfe"),
        ("X-Request-Id", b"\xffreq"),
        ("X-Request-Id", b"r" * 5000),
        ("grpc-timeout", b"99999999H"),
        ("grpc-timeout", b"\xff"),
        ("X-Forwarded-For", b"\xff, 203.0.113.9"),
        ("X-Forwarded-Host", b"\xffexample.org"),
        ("traceparent", b"00-\xff"),
    ],
)
async def test_headers_grpc_cannot_carry_are_left_out_not_a_500(
    recorded: tuple[Recording, httpx.AsyncClient], header: str, value: bytes
) -> None:
    servicer, http = recorded
    response = await http.get("/v1/tokens", headers=[(header.encode(), value)])
    assert response.status_code == 200, response.text
    for key, sent in servicer.metadata.items():
        assert sent.isascii(), key
        assert sent.isprintable(), key
        assert len(sent) <= 128, key


async def test_grpc_timeout_is_the_deadline(recorded: tuple[Recording, httpx.AsyncClient]) -> None:
    _, client = recorded
    response = await client.get("/v1/tokens?owner=slow", headers={"grpc-timeout": "100m"})
    assert response.status_code == 504
    assert response.json()["code"] == 4


def test_parse_timeout() -> None:
    assert parse_timeout("5S") == 5
    assert parse_timeout("100m") == pytest.approx(0.1)
    assert parse_timeout("2H") == 3600, "clamped to MAX_TIMEOUT"
    assert parse_timeout("99999999H") == 3600
    assert parse_timeout("bogus") is None
    assert parse_timeout("123456789S") is None
    assert parse_timeout(None) is None
