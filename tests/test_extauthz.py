"""Envoy's external authorization against tokengrpc, through a real Envoy.

Each test starts Envoy (config: tests/fixtures/envoy-ext-authz.yaml) in front
of an upstream that echoes the headers it received, and sends real HTTP
requests to Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.asgiserver import AsgiServer
from tests.envoyproxy import CONFIG, LiveEnvoy, echo_app, start_envoy
from tests.helpers import LiveService, bearer
from tokengrpc.store import EventAction, EventQuery
from tokengrpc.v1 import tokens_pb2 as pb

UNAUTHENTICATED_BODY = {"error": "Unauthenticated."}


@dataclass
class Stack:
    service: LiveService
    upstream: AsgiServer
    envoy: LiveEnvoy
    http: httpx.AsyncClient

    async def get(
        self, path: str = "/", token: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> httpx.Response:
        sent = list(headers)
        if token is not None:
            sent.append(("authorization", f"Bearer {token}"))
        return await self.http.get(path, headers=sent)

    async def usage(self, token_id: int) -> int:
        await self.service.core.usage.flush()  # counts are batched; write them now
        response = await self.service.stub.GetToken(
            pb.GetTokenRequest(id=token_id), metadata=bearer(self.service.admin_token)
        )
        return response.token.usage_count


def received(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers the upstream got, lowercase names, in order."""
    assert response.status_code == 200, response.text
    return [(name.lower(), value) for name, value in response.json()["headers"]]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def assert_unauthenticated(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, (what, response.status_code)
    assert response.headers["www-authenticate"] == "Bearer", what
    assert response.json() == UNAUTHENTICATED_BODY, what


@contextlib.asynccontextmanager
async def running(service: LiveService, folder: Path, envoy_token: str) -> AsyncIterator[Stack]:
    upstream = await AsgiServer.start(echo_app)
    envoy = await start_envoy(
        folder, tokengrpc_port=service.port, upstream_port=upstream.port, token=envoy_token
    )
    http = httpx.AsyncClient(base_url=envoy.base_url, timeout=30)
    try:
        yield Stack(service, upstream, envoy, http)
    finally:
        await http.aclose()
        await envoy.stop()
        await upstream.stop()


@pytest.fixture
async def stack(service: LiveService, tmp_path: Path) -> AsyncIterator[Stack]:
    """Envoy authenticated to tokengrpc with a service token holding ``introspect``."""
    _, token = await service.create("envoy", service_token=True, scopes=["introspect"])
    async with running(service, tmp_path / "envoy", token) as live:
        yield live


async def test_each_kind_of_token_passes_with_its_identity_and_without_its_secret(
    stack: Stack,
) -> None:
    service = stack.service
    alice_id, alice = await service.create("CI deploy, % done", owner="alice", scopes=["read"])
    svc_id, svc = await service.create(
        "billing", service_token=True, scopes=["read", "write"], allowed_ips=["127.0.0.1"]
    )

    personal = received(await stack.get("/things", alice))
    assert values(personal, "x-token-id") == [str(alice_id)]
    assert values(personal, "x-token-owner") == ["alice"]
    assert [unquote(v) for v in values(personal, "x-token-name")] == ["CI deploy, % done"]
    assert values(personal, "x-token-scopes") == ["read"]
    assert values(personal, "authorization") == []

    # A service token has no owner: the header is absent, even if the client sent one.
    forged = [("x-token-owner", "root"), ("x-token-id", "1"), ("X-Token-Scopes", "admin")]
    machine = received(await stack.get("/things", svc, forged))
    assert values(machine, "x-token-id") == [str(svc_id)]
    assert values(machine, "x-token-owner") == []
    assert values(machine, "x-token-name") == ["billing"]
    assert values(machine, "x-token-scopes") == ["read write"]
    assert values(machine, "authorization") == []
    for _, value in machine + personal:
        assert svc not in value
        assert alice not in value

    # An allowed check counts one use, as any authentication does.
    assert await stack.usage(alice_id) == 1
    assert await stack.usage(svc_id) == 1


async def test_forged_identity_headers_are_replaced(stack: Stack) -> None:
    token_id, token = await stack.service.create("t", owner="bob", scopes=["a", "b"])
    forged = [
        ("x-token-id", "1"),
        ("x-token-id", "2"),
        ("x-token-owner", "admin"),
        ("x-token-name", "root"),
        ("x-token-scopes", "admin"),
        ("x-token-scopes", "write"),
    ]
    headers = received(await stack.get("/", token, forged))
    assert values(headers, "x-token-id") == [str(token_id)]
    assert values(headers, "x-token-owner") == ["bob"]
    assert values(headers, "x-token-name") == ["t"]
    assert values(headers, "x-token-scopes") == ["a b"]


async def _expiry_recorded(service: LiveService, token_id: int) -> None:
    """Once the service has recorded the token's EXPIRED event (CONTRACT section
    12: within 2 s of the expiry), after which nothing in the store moves."""
    deadline = time.monotonic() + 15
    while True:
        found = await service.core.store.list_events(EventQuery(limit=10, token_id=token_id))
        if any(event.action == EventAction.EXPIRED for event in found):
            return
        assert time.monotonic() < deadline, "no EXPIRED event"
        await asyncio.sleep(0.05)


async def test_every_bad_token_is_denied_the_same_way(stack: Stack) -> None:
    service = stack.service
    revoked_id, revoked = await service.create("revoked", owner="alice")
    inactive_id, inactive = await service.create("inactive", owner="alice")
    _, elsewhere = await service.create("elsewhere", owner="alice", allowed_ips=["10.9.9.9"])
    soon = timestamp_pb2.Timestamp()
    soon.FromNanoseconds(time.time_ns() + 1_000_000_000)
    expired = await service.stub.CreateToken(
        pb.CreateTokenRequest(name="expired", owner="alice", expire_time=soon),
        metadata=bearer(service.admin_token),
    )
    service.plaintexts.append(expired.plaintext)
    admin = bearer(service.admin_token)
    await service.stub.RevokeToken(pb.RevokeTokenRequest(id=revoked_id), metadata=admin)
    await service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=inactive_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=admin,
    )
    _, good = await service.create("good", owner="alice")
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown = "999999|" + good.partition("|")[2]
    await asyncio.sleep(max(0.0, soon.ToNanoseconds() / 1e9 - time.time()) + 0.05)
    await _expiry_recorded(service, expired.token.id)
    before = service.snapshot()

    assert_unauthenticated(await stack.get("/"), "no token")
    cases = {
        "malformed": "not-a-token",
        "bad checksum": tampered,
        "unknown id": unknown,
        "revoked": revoked,
        "expired": expired.plaintext,
        "inactive": inactive,
        "wrong address": elsewhere,
    }
    for what, token in cases.items():
        response = await stack.get("/", token)
        assert_unauthenticated(response, what)
        assert token not in response.text
    odd_headers = {
        "basic scheme": [("authorization", f"Basic {good}")],
        "two authorization headers": [
            ("authorization", f"Bearer {good}"),
            ("authorization", f"Bearer {good}"),
        ],
        "bearer without a token": [("authorization", "Bearer")],
        # The client's own X-Forwarded-For is not its address (use_remote_address).
        "forged address": [
            ("authorization", f"Bearer {elsewhere}"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
    }
    for what, headers in odd_headers.items():
        assert_unauthenticated(await stack.get("/", headers=headers), what)
    assert service.snapshot() == before
    # The good token still passes: the denials were about the others.
    assert received(await stack.get("/", good))


async def test_required_scopes_of_a_route(stack: Stack) -> None:
    _, reader = await stack.service.create("reader", owner="alice", scopes=["read"])
    _, deployer = await stack.service.create("deployer", owner="alice", scopes=["read", "deploy"])
    _, admin_only = await stack.service.create("admin", owner="alice", scopes=["admin"])

    forbidden = await stack.get("/deploy/now", reader)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "Forbidden."}
    # Opaque scopes are matched exactly: admin does not stand in for "deploy".
    assert (await stack.get("/deploy/now", admin_only)).status_code == 403
    allowed = received(await stack.get("/deploy/now", deployer))
    assert values(allowed, "x-token-scopes") == ["read deploy"]
    # Other routes demand nothing more than an active token.
    assert received(await stack.get("/other", reader))
    assert_unauthenticated(await stack.get("/deploy/now"), "no token on a scoped route")


async def test_a_revocation_takes_effect_on_the_next_request(stack: Stack) -> None:
    token_id, token = await stack.service.create("soon gone", owner="alice")
    assert received(await stack.get("/", token))
    await stack.service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=token_id), metadata=bearer(stack.service.admin_token)
    )
    assert_unauthenticated(await stack.get("/", token), "revoked just now")


async def test_a_changed_token_shows_its_new_identity_on_the_next_request(stack: Stack) -> None:
    """The allowing answer is kept per token, and never outlives the token's record."""
    token_id, token = await stack.service.create("before", owner="alice", scopes=["read"])
    for _ in range(3):  # the second and third answers are the kept one
        first = received(await stack.get("/", token))
        assert values(first, "x-token-name") == ["before"]
        assert values(first, "x-token-scopes") == ["read"]
    await stack.service.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=pb.Token(id=token_id, name="after", scopes=["read", "deploy"]),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "scopes"]),
        ),
        metadata=bearer(stack.service.admin_token),
    )
    changed = received(await stack.get("/deploy/now", token))
    assert values(changed, "x-token-name") == ["after"]
    assert values(changed, "x-token-scopes") == ["read deploy"]
    assert await stack.usage(token_id) == 4


async def test_envoy_without_introspect_lets_nothing_through(
    service: LiveService, tmp_path: Path
) -> None:
    _, weak = await service.create("envoy", service_token=True, scopes=["read"])
    _, good = await service.create("good", owner="alice")
    async with running(service, tmp_path / "envoy", weak) as stack:
        for token in (good, service.admin_token, None):
            response = await stack.get("/", token)
            assert response.status_code == 503, response.text
            assert "x-token-id" not in response.text
    async with running(service, tmp_path / "envoy2", "1|tgr_not-a-real-token") as stack:
        assert (await stack.get("/", good)).status_code == 503


async def test_tokengrpc_stopped_means_denied(service: LiveService, tmp_path: Path) -> None:
    _, envoy_token = await service.create("envoy", service_token=True, scopes=["introspect"])
    _, good = await service.create("good", owner="alice")
    async with running(service, tmp_path / "envoy", envoy_token) as stack:
        assert received(await stack.get("/", good))
        await service.server.stop(0)
        response = await stack.get("/", good)
        assert response.status_code == 503, response.text


async def test_check_is_listed_by_reflection_and_refuses_callers_without_introspect(
    service: LiveService,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    names: list[str] = []
    files: list[bytes] = []
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="envoy.service.auth.v3.Authorization"
        ),
    ]
    async for answer in stub.ServerReflectionInfo(iter(requests)):
        names.extend(s.name for s in answer.list_services_response.service)
        files.extend(answer.file_descriptor_response.file_descriptor_proto)
    assert "envoy.service.auth.v3.Authorization" in names
    assert any(b"envoy/service/auth/v3/external_auth.proto" in file for file in files)

    # Called directly: a caller without introspect gets a denial, never OK.
    _, good = await service.create("good", owner="alice")
    check = external_auth_pb2_grpc.AuthorizationStub(service.channel)
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.headers["authorization"] = f"Bearer {good}"
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    for metadata in ((), bearer(good)):
        answer = await check.Check(request, metadata=metadata)
        assert answer.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert answer.denied_response.status.code == 503
    allowed = await check.Check(request, metadata=bearer(service.admin_token))
    assert allowed.status.code == 0
    assert "authorization" in allowed.ok_response.headers_to_remove

    # Envoy's raw header list (encode_raw_headers): two entries are two tokens.
    raw = external_auth_pb2.CheckRequest()
    raw.attributes.source.address.socket_address.address = "127.0.0.1"
    entries = raw.attributes.request.http.header_map.headers
    entries.add(key="authorization", raw_value=f"Bearer {good}".encode())
    answer = await check.Check(raw, metadata=bearer(service.admin_token))
    assert answer.status.code == 0
    entries.add(key="authorization", raw_value=f"Bearer {good}".encode())
    answer = await check.Check(raw, metadata=bearer(service.admin_token))
    assert answer.denied_response.status.code == 401


def test_readme_shows_the_config_the_tests_run() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"```yaml\n{CONFIG.read_text()}```" in readme


async def test_scopes_outside_printable_ascii_reach_the_upstream_encoded(stack: Stack) -> None:
    """Scopes are any printable text without spaces, so, like owner and name,
    they travel percent-encoded where they hold ``%`` or anything outside
    printable ASCII; plain scopes arrive as they are."""
    scopes = ["read", "données", "50%", "日本"]
    token_id, token = await stack.service.create("t", owner="bob", scopes=scopes)
    headers = received(await stack.get("/", token))
    assert values(headers, "x-token-id") == [str(token_id)]
    (joined,) = values(headers, "x-token-scopes")
    print("x-token-scopes:", joined)
    assert joined.isascii()
    assert [unquote(scope) for scope in joined.split(" ")] == scopes
    assert joined.split(" ")[0] == "read"
