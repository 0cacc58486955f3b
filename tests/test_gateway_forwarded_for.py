"""``allowed_ips`` end to end through HTTP: the gateway reads X-Forwarded-For
from the right, passes the client it found on, and the service decides.

The test client connects from loopback, which the gateway trusts by default
(as a proxy in front of it would be). The token is limited to 203.0.113.9:
it gets in only when the nearest proxy says that address, never when the
client wrote it at the left itself, and never through a gateway that does
not trust its peer. Every family, both upstreams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import start_http
from tests.helpers import LiveGateway, LiveService

CLIENT = "203.0.113.9"
OTHER = "198.51.100.1"

#: (X-Forwarded-For headers in order, whether the limited token gets in)
CASES: list[tuple[tuple[str, ...], bool]] = [
    ((f"{OTHER}, {CLIENT}",), True),
    ((f"{CLIENT}, {OTHER}",), False),  # the left entry is the client's own writing
    ((CLIENT,), True),
    ((f"{OTHER}, {CLIENT}, 127.0.0.1",), True),  # one more trusted proxy on the way
    ((f"{CLIENT}, {OTHER}, 127.0.0.1",), False),
    ((OTHER, CLIENT), True),  # several headers are one list, in order
    ((CLIENT, OTHER), False),
    ((f"{CLIENT}, garbage",), False),  # nothing left of garbage is believed
    # Entries with a port, or bracketed, read as the service reads them.
    ((f"{OTHER}, {CLIENT}:51234",), True),
    ((f"{OTHER}:80, {CLIENT}:51234, 127.0.0.1:8080",), True),
    ((f"{CLIENT}:51234, {OTHER}:80",), False),
    ((f"{OTHER}, [::ffff:{CLIENT}]:443",), True),
    ((f"{CLIENT}, {OTHER}:99999",), False),  # not a port: garbage
    ((), False),  # the peer itself, 127.0.0.1
]


async def _admitted(
    client: httpx.AsyncClient,
    route: str,
    token: str,
    forwarded: tuple[str, ...],
    used_from: str = CLIENT,
) -> bool:
    headers = [("Authorization", f"Bearer {token}"), *(("X-Forwarded-For", v) for v in forwarded)]
    if route == "/oauth/introspect":
        form = {"token": token, "client_ip": used_from}
        response = await client.post(route, data=form, headers=headers)
    else:
        response = await client.get(route, headers=headers)
    assert response.status_code in (200, 401), (route, forwarded, response.text)
    if route == "/oauth/introspect" and response.status_code == 200:
        # The introspected token is the caller itself, used from where it may
        # be (a restricted token introspected without an address is not active).
        assert response.json()["active"] is True
    return response.status_code == 200


ROUTES = ("/api/token", "/api/v1/me/tokens", "/v1/tokens", "/oauth/introspect")


async def _limited(service: LiveService) -> str:
    _, token = await service.create(
        "limited", owner="remote", scopes=["write", "introspect"], allowed_ips=[CLIENT]
    )
    return token


@pytest.mark.parametrize("route", ROUTES)
async def test_forwarded_for_is_read_from_the_right_in_every_family(
    gateway: LiveGateway, route: str
) -> None:
    token = await _limited(gateway.service)
    before = gateway.service.snapshot()
    wrong = [
        (forwarded, expected)
        for forwarded, expected in CASES
        if await _admitted(gateway.client, route, token, forwarded) is not expected
    ]
    assert wrong == []
    assert gateway.service.snapshot() == before


@pytest.fixture(params=["network", "in-process"])
async def untrusting(
    service: LiveService, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that trusts only 192.0.2.0/24: its loopback clients are clients."""
    upstream = service.server.in_process if request.param == "in-process" else service.target
    http = await start_http(upstream, "127.0.0.1:0", trusted_proxies=("192.0.2.0/24",))
    try:
        async with httpx.AsyncClient(base_url=f"http://{http.address}", timeout=30) as client:
            yield client
    finally:
        await http.stop()


@pytest.mark.parametrize("route", ROUTES)
async def test_an_untrusted_peer_cannot_claim_an_address(
    service: LiveService, untrusting: httpx.AsyncClient, route: str
) -> None:
    token = await _limited(service)
    _, local = await service.create(
        "local", owner="remote", scopes=["introspect"], allowed_ips=["127.0.0.1"]
    )
    before = service.snapshot()
    for forwarded, _ in CASES:
        assert not await _admitted(untrusting, route, token, forwarded), forwarded
        # What it does see is the peer: a token limited to loopback gets in.
        assert await _admitted(untrusting, route, local, forwarded, "127.0.0.1"), forwarded
    assert service.snapshot() == before
