"""The client address behind trusted proxies, over gRPC with allowed_ips tokens.

``x-forwarded-for`` is read from the right, past trusted proxies; what the
client wrote itself (the left) is never believed; garbage ends the walk at
the last trusted hop; an untrusted peer's header is ignored altogether.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import LiveService, bearer, stop_service
from tokengrpc.config import Settings
from tokengrpc.server import Core, GrpcServer
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

HOPS = "127.0.0.1, "

#: (x-forwarded-for entries, whether a token limited to 10.0.0.0/24 and
#: 2001:db8::/32 gets in). The test peer is 127.0.0.1, a trusted proxy.
CASES: list[tuple[tuple[str, ...], bool]] = [
    ((), False),
    (("10.0.0.5",), True),
    (("  10.0.0.5  ",), True),
    (("10.0.0.5, 127.0.0.1",), True),
    (("10.0.0.5, ::1, 127.0.0.2",), True),
    (("10.0.0.5,[::1]",), True),
    (("10.0.0.5, 127.0.0.1:8080",), True),
    # The client wrote the left entry; the proxy appended what it saw.
    (("10.0.0.5, 192.0.2.1",), False),
    (("192.0.2.1, 10.0.0.5",), True),
    (("10.0.0.5, 192.0.2.1, 127.0.0.1",), False),
    # Several metadata entries are one list, in order.
    (("10.0.0.5", "192.0.2.1"), False),
    (("192.0.2.1", "10.0.0.5"), True),
    (("192.0.2.1", "10.0.0.5, 127.0.0.1"), True),
    # Garbage: nothing left of it is believed; the last trusted hop is the client.
    (("10.0.0.5, garbage",), False),
    (("garbage, 10.0.0.5",), True),
    (("10.0.0.5, garbage, 127.0.0.1",), False),
    (("10.0.0.5,",), False),
    (("10.0.0.5, ",), False),
    (("10.0.0.5", ""), False),
    (("10.0.0.5, 10.0.0.6:99999",), False),
    (("10.0.0.5, [10.0.0.6",), False),
    (("10.0.0.5, unknown",), False),
    # Spellings of one address.
    (("10.0.0.5:443",), True),
    (("::ffff:10.0.0.5",), True),
    (("2001:db8::1",), True),
    (("[2001:db8::1]",), True),
    (("[2001:db8::1]:443",), True),
    (("2001:db8::1%eth0",), True),
    (("2001:db9::1",), False),
    # Long lists: the walk examines at most 32 entries from the right.
    (("10.0.0.5, " + HOPS * 20 + "127.0.0.1",), True),
    (("10.0.0.5, " + HOPS * 40 + "127.0.0.1",), False),
    (("10.0.0.5, " + "192.0.2.1, " * 300 + "10.0.0.7",), True),
]


async def _start(data_dir: Path, trusted: tuple[str, ...]) -> LiveService:
    settings = Settings(data_dir=data_dir, trusted_proxies=trusted, usage_flush_interval=0.05)
    core = await Core.open(settings)
    server = GrpcServer(core)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    admin = (data_dir / "bootstrap-token").read_text().strip()
    return LiveService(core, server, port, data_dir, channel, stub, admin)


@pytest.fixture
async def untrusting(tmp_path: Path) -> AsyncIterator[LiveService]:
    """A service that trusts only 192.0.2.0/24: its loopback peers are clients."""
    live = await _start(tmp_path / "untrusting", ("192.0.2.0/24",))
    try:
        yield live
    finally:
        await stop_service(live)


async def _gets_in(service: LiveService, token: str, forwarded: tuple[str, ...]) -> bool:
    metadata = (*bearer(token), *(("x-forwarded-for", value) for value in forwarded))
    try:
        await service.stub.ListTokens(pb.ListTokensRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return True
    assert code == grpc.StatusCode.UNAUTHENTICATED
    return False


async def test_forwarded_for_from_a_trusted_proxy_is_read_from_the_right(
    service: LiveService,
) -> None:
    _, limited = await service.create(
        "limited", owner="f", allowed_ips=["10.0.0.0/24", "2001:db8::/32"]
    )
    before = service.snapshot()
    wrong = [
        (forwarded, expected)
        for forwarded, expected in CASES
        if await _gets_in(service, limited, forwarded) is not expected
    ]
    assert wrong == []
    assert service.snapshot() == before


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(untrusting: LiveService) -> None:
    _, remote = await untrusting.create("remote", owner="u", allowed_ips=["10.0.0.0/24"])
    _, local = await untrusting.create("local", owner="u", allowed_ips=["127.0.0.1"])
    before = untrusting.snapshot()
    for forwarded, _ in CASES:
        assert not await _gets_in(untrusting, remote, forwarded), forwarded
        assert await _gets_in(untrusting, local, forwarded), forwarded
    assert untrusting.snapshot() == before
