"""``/auth/check`` itself (contract sections 10 and 11), on both gateways:
what it reads and what it never reads, the answers Envoy's ``Check`` gives,
the ``CheckToken`` RPC behind it, and hostile input kept bounded.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from tests.helpers import LiveGateway, bearer
from tokengrpc import extauthz
from tokengrpc.v1 import tokens_pb2 as pb


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _envoy_denial(answer: external_auth_pb2.CheckResponse) -> tuple[int, dict[str, str], object]:
    denied = answer.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return denied.status.code, headers, json.loads(denied.body)


async def test_denials_are_the_ones_envoys_check_sends(gateway: LiveGateway) -> None:
    _, reader = await gateway.service.create("reader", owner="alice", scopes=["read"])
    answers = [
        (extauthz.UNAUTHENTICATED, await gateway.client.get("/auth/check")),
        (extauthz.FORBIDDEN, await gateway.client.get("/auth/check?scope=x", headers=auth(reader))),
    ]
    for envoy, ours in answers:
        status, headers, body = _envoy_denial(envoy)
        assert ours.status_code == status
        assert ours.json() == body
        assert ours.content == envoy.denied_response.body.encode()
        for name, value in headers.items():
            assert ours.headers[name] == value
        assert ours.headers["cache-control"] == "no-store"
    unavailable = _envoy_denial(extauthz.UNAVAILABLE)
    assert unavailable[:2] == (503, {"content-type": "application/json"})


async def test_what_it_reads_and_what_it_does_not(gateway: LiveGateway) -> None:
    client = gateway.client
    token_id, token = await gateway.service.create("t", owner="alice", scopes=["a", "b,c"])
    allowed = await client.get("/auth/check", headers=auth(token))
    assert allowed.status_code == 200
    assert allowed.content == b""
    assert allowed.headers["cache-control"] == "no-store"
    assert allowed.headers["x-token-id"] == str(token_id)
    assert allowed.headers["x-token-scopes"] == "a b,c"

    async def check(path: str, *lines: str, method: str = "GET", body: bytes = b"") -> int:
        headers = [("authorization", f"Bearer {token}")]
        headers += [("x-required-scopes", line) for line in lines]
        return (await client.request(method, path, headers=headers, content=body)).status_code

    # Every X-Required-Scopes line counts, each split on spaces (a scope may hold a comma).
    assert await check("/auth/check", "a", "b,c") == 200
    assert await check("/auth/check", "a b,c") == 200
    assert await check("/auth/check", "a", "b") == 403
    assert await check("/auth/check/x", "a  b,c") == 200
    # The query's scope on /auth/check itself only: below it, it is the protected request's.
    assert await check("/auth/check?scope=a&scope=b,c") == 200
    assert await check("/auth/check?scope=a&scope=z") == 403
    assert await check("/auth/check/?scope=z") == 200
    assert await check("/auth/check/deploy?scope=z&scope") == 200
    # A requirement that cannot be read is never dropped.
    assert await check("/auth/check?scope=%ff") == 403
    assert await check("/auth/check?" + "&".join(["scope=a"] * 1001)) == 403
    latin = [(b"authorization", f"Bearer {token}".encode()), (b"x-required-scopes", b"a")]
    unreadable = await client.get("/auth/check", headers=[*latin, (b"x-required-scopes", b"\xff")])
    assert unreadable.status_code == 403
    # Any method; the body is never read (a large one is not refused for its size).
    for method in ("POST", "DELETE", "PROPFIND", "PURGE", "OPTIONS", "HEAD"):
        assert await check("/auth/check/api", method=method) == 200, method
    assert await check("/auth/check", method="PUT", body=b"x" * (4 * 1024 * 1024)) == 200
    # Not a prefix of other paths.
    assert (await client.get("/auth/checked", headers=auth(token))).status_code == 404


async def test_the_client_address_is_walked_and_a_use_counted(gateway: LiveGateway) -> None:
    token_id, token = await gateway.service.create("ip", owner="alice", allowed_ips=["10.1.2.3"])
    # The test's loopback connection is a trusted proxy: its X-Forwarded-For is believed.
    headers = {**auth(token), "X-Forwarded-For": "10.1.2.3"}
    assert (await gateway.client.get("/auth/check/x", headers=headers)).status_code == 200
    # Left of an address that is not a trusted proxy, nothing is believed.
    forged = {**auth(token), "X-Forwarded-For": "10.1.2.3, 192.0.2.1"}
    assert (await gateway.client.get("/auth/check/x", headers=forged)).status_code == 401
    await gateway.service.core.usage.flush()
    got = await gateway.service.stub.GetToken(
        pb.GetTokenRequest(id=token_id), metadata=bearer(gateway.service.admin_token)
    )
    assert got.token.usage_count == 1
    assert got.token.last_use_ip == "10.1.2.3"


async def test_check_token_over_grpc_and_its_canonical_route(gateway: LiveGateway) -> None:
    service = gateway.service
    token_id, token = await service.create("svc", service_token=True, scopes=["read"])
    answer = await service.stub.CheckToken(
        pb.CheckTokenRequest(required_scopes=["read"]), metadata=bearer(token)
    )
    assert [(h.name, h.value) for h in answer.identity_headers] == [
        ("x-token-id", str(token_id)),
        ("x-token-name", "svc"),
        ("x-token-scopes", "read"),
    ]
    refusals = {
        grpc.StatusCode.PERMISSION_DENIED: (["read write"], bearer(token)),
        grpc.StatusCode.UNAUTHENTICATED: ([], bearer(token) * 2),
    }
    for code, (required, metadata) in refusals.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.stub.CheckToken(
                pb.CheckTokenRequest(required_scopes=required), metadata=metadata
            )
        assert refused.value.code() == code
        assert token not in (refused.value.details() or "")
    # A requirement longer than any token could meet is not read to its end.
    for huge in (["read " * 80_000], ["read"] * 80_000):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.stub.CheckToken(
                pb.CheckTokenRequest(required_scopes=huge), metadata=bearer(token)
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    canonical = await gateway.client.post(
        "/v1/tokens:check", json={"requiredScopes": ["read"]}, headers=auth(token)
    )
    assert canonical.status_code == 200
    assert canonical.json()["identityHeaders"][0] == {"name": "x-token-id", "value": str(token_id)}


# Hostile input (contract section 10): bounded, linear, never a 500. Each
# head stays under the 16 KiB limit, so that the endpoint does the work.
HOSTILE: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "a long sub-path": ("GET", "/auth/check/" + "a/" * 5000, []),
    "a malformed escape below": ("GET", "/auth/check/%zz/%", []),
    "odd method": ("M-SEARCH", "/auth/check", []),
    "hundreds of scope lines": ("GET", "/auth/check", [("x-required-scopes", "s")] * 600),
    "one long scope line": ("GET", "/auth/check", [("x-required-scopes", " ".join(["s"] * 7000))]),
    "repeated authorization": ("GET", "/auth/check", [("authorization", "Bearer 1|x")] * 500),
    "hundreds of forwarded hops": (
        "GET",
        "/auth/check",
        [("x-forwarded-for", "127.0.0.1")] * 500,
    ),
    "a huge header": ("GET", "/auth/check", [("x-junk", "j" * 15000)]),
    "the query's limit": ("GET", "/auth/check?" + "&".join(["scope=s"] * 999), []),
}


async def test_hostile_requests_are_bounded(gateway: LiveGateway) -> None:
    _, token = await gateway.service.create("h", owner="alice", scopes=["s"])
    probe = httpx.AsyncClient(base_url=str(gateway.client.base_url), timeout=30)
    worst = 0.0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal worst
        while not done.is_set():
            started = time.perf_counter()
            assert (await probe.get("/healthz")).status_code == 200
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    try:
        for what, (method, path, headers) in HOSTILE.items():
            for presented in ([], [("authorization", f"Bearer {token}")]):
                sent = (
                    headers
                    if any(k == "authorization" for k, _ in headers)
                    else [*headers, *presented]
                )
                response = await gateway.client.request(method, path, headers=sent)
                assert response.status_code in (200, 401, 403), (what, response.status_code)
                assert token not in response.text
    finally:
        done.set()
        await poller
        await probe.aclose()
    print(f"worst /healthz latency under hostile forward-auth checks: {worst * 1000:.1f} ms")
    assert worst < 1.0
    # Over the limit of a head: 431, and the gateway still answers.
    too_big = await gateway.client.get("/auth/check", headers=[("x-junk", "j" * 17000)])
    assert too_big.status_code == 431
    assert (await gateway.client.get("/auth/check", headers=auth(token))).status_code == 200
