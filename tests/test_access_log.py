"""The access log of a real ``tokengrpc serve``: one parseable line per request on
either surface, with the documented fields, and never a secret it saw."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from tests.helpers import bearer
from tests.processes import clean_env, serve
from tokengrpc.logs import ACCESS_FIELDS
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

#: Well formed, checksum and all, but never issued.
FORGED = "7|tgr_0123456789abcdefghijABCDEFGHIJ0123456789abcdef"
#: What the process prints on stdout for scripts (it shares the pipe with stderr here).
STDOUT_LINES = ("bootstrap token written to ", "grpc listening on ", "http listening on ",
                "shutting down")  # fmt: skip


async def _drive_grpc(target: str, admin: str, secrets: list[str]) -> int:
    """Every RPC, and refused callers; returns how many calls were made."""
    calls = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        auth = (*bearer(admin), ("x-request-id", "req-grpc-1"))
        made = await stub.CreateToken(
            pb.CreateTokenRequest(name="svc-logs", service_token=True, scopes=["write"]),
            metadata=auth,
        )
        secrets.append(made.plaintext)
        await stub.ListTokens(pb.ListTokensRequest(service_tokens=True), metadata=auth)
        await stub.GetToken(pb.GetTokenRequest(id=made.token.id), metadata=auth)
        await stub.UpdateToken(
            pb.UpdateTokenRequest(token=pb.Token(id=made.token.id, active=False),
                                  update_mask=field_mask_pb2.FieldMask(paths=["active"])),
            metadata=auth,
        )  # fmt: skip
        value = await stub.GetTokenValue(pb.GetTokenValueRequest(id=made.token.id), metadata=auth)
        secrets.append(value.value)
        await stub.IntrospectToken(pb.IntrospectTokenRequest(token=made.plaintext), metadata=auth)
        await stub.RevokeToken(pb.RevokeTokenRequest(id=made.token.id), metadata=auth)
        calls += 7
        wrong_secret = admin[:-3] + ("aaa" if not admin.endswith("aaa") else "bbb")
        for presented in (FORGED, wrong_secret, made.plaintext):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(presented))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            calls += 1
    return calls


async def _drive_http(address: str, admin: str, secrets: list[str]) -> tuple[int, list[str]]:
    """A route of every family, failures included; returns the count and the me trace ids."""
    headers = {"Authorization": f"Bearer {admin}"}
    forged = {"Authorization": f"Bearer {FORGED}"}
    requests = 0
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:

        async def send(method: str, path: str, status: int, **kwargs: object) -> httpx.Response:
            nonlocal requests
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            requests += 1
            assert response.status_code == status, (path, response.text)
            return response

        made = await send("POST", "/api/token", 201, json={"name": "laptop"}, headers=headers)
        secrets.append(made.json()["token"]["plaintext"])
        await send("GET", "/api/token", 200, headers=headers)
        await send("GET", "/api/token", 401, headers=forged)
        await send("DELETE", f"/api/token/{made.json()['token']['id']}", 200, headers=headers)
        mine = await send("POST", "/api/v1/me/tokens", 201, json={"name": "cli"}, headers=headers)
        secrets.append(mine.json()["plaintext"])
        await send("GET", "/api/v1/me/tokens?page=1", 200, headers=headers)
        refused = await send("GET", "/api/v1/me/tokens", 401, headers=forged)
        await send("DELETE", f"/api/v1/me/tokens/{mine.json()['data']['id']}", 204, headers=headers)
        value = await send("POST", "/_/token", 201, json={"name": "deployer"}, headers=headers)
        secrets.append(value.json()["value"])
        await send("GET", "/_/token", 200, headers=headers)
        await send("PUT", "/_/token", 200, json={"name": "deployer", "write": False},
                   headers=headers)  # fmt: skip
        read = await send("GET", "/_/token/value?name=deployer", 200, headers=headers)
        secrets.append(read.json()["value"])
        await send("DELETE", "/_/token", 200, json={"name": "deployer"}, headers=headers)
        await send("GET", "/_/token", 401, headers=forged)
        await send("GET", "/v1/tokens", 200, headers={**headers, "x-request-id": "req-http-1"})
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        await send("GET", "/v1/tokens/1", 200, headers={**headers, "traceparent": parent})
        await send("POST", "/oauth/introspect", 200, data={"token": FORGED}, headers=headers)
        await send("GET", "/auth/check?scope=deploy", 403, headers=headers)
        await send("GET", "/healthz", 200)
        await send("GET", "/readyz", 200)
        await send("GET", "/metrics", 200)
        await send("GET", "/openapi.json", 200)
        # A plaintext pasted into a path, a header and a query: none may be logged.
        await send("GET", f"/{admin.replace('|', '%7C')}", 404, headers=headers)
        await send("GET", "/api/token", 200, headers={**headers, "x-request-id": admin})
        await send("GET", f"/_/token/value?name={admin}", 404, headers=headers)
    return requests, [refused.json()["trace_id"]]


async def test_every_request_leaves_one_json_line_and_no_secret(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--log-format", "json", until="http",
    )  # fmt: skip
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    secrets = [admin, FORGED]
    try:
        calls = await _drive_grpc(server.address("grpc"), admin, secrets)
        requests, trace_ids = await _drive_http(server.address("http"), admin, secrets)
    finally:
        code, output = await server.stop()
    assert code == 0, output
    lines = [*server.lines, *output.splitlines()]
    for secret in secrets:
        hidden = secret.partition("|")[2]
        assert not any(hidden in line for line in lines), "a secret reached the output"

    records = []
    for line in lines:
        if line.startswith(STDOUT_LINES):
            continue
        records.append(json.loads(line))  # every other line is JSON
    for record in records:
        assert {"time", "level", "logger"} <= record.keys(), record
    access = [r for r in records if r["logger"] == "tokengrpc.access"]
    for record in access:
        assert set(ACCESS_FIELDS) <= record.keys(), record
        assert isinstance(record["duration_ms"], float | int)
        assert record["client"] == "127.0.0.1"
    grpc_lines = [r for r in access if r["surface"] == "grpc"]
    http_lines = [r for r in access if r["surface"] == "http"]
    assert len(grpc_lines) == calls
    assert len(http_lines) == requests
    print(f"{calls} gRPC calls and {requests} HTTP requests, {len(records)} JSON lines")

    created = next(r for r in grpc_lines if r["method"].endswith("/CreateToken"))
    assert created["status"] == "OK"
    assert created["token_id"] == 1  # the bootstrap token's id, never its secret
    assert created["trace_id"] == "req-grpc-1"
    refused = [r for r in grpc_lines if r["status"] == "UNAUTHENTICATED"]
    assert len(refused) == 3
    assert all(r["token_id"] is None for r in refused)

    routes = {(r["method"], r["route"], r["status"]) for r in http_lines}
    assert ("DELETE", "/api/token/{tokenId}", 200) in routes
    assert ("DELETE", "/api/v1/me/tokens/{id}", 204) in routes
    assert ("GET", "(unmatched)", 404) in routes
    listed = next(r for r in http_lines if r["route"] == "/v1/tokens")
    assert listed["trace_id"] == "req-http-1"
    assert listed["token_id"] == 1
    forbidden = next(r for r in http_lines if r["route"] == "/auth/check")
    assert (forbidden["status"], forbidden["token_id"]) == (403, 1)  # the token it refused
    parented = next(r for r in http_lines if r["route"] == "/v1/tokens/{id}")
    assert parented["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for trace_id in trace_ids:
        uuid.UUID(trace_id)
        me = [r for r in http_lines if r["trace_id"] == trace_id]
        assert len(me) == 1
        assert (me[0]["route"], me[0]["status"], me[0]["token_id"]) == (
            "/api/v1/me/tokens", 401, None,
        )  # fmt: skip


async def test_text_lines_and_no_access_log(tmp_path: Path) -> None:
    env = clean_env(TOKENGRPC_LOG_FORMAT="text")
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", env=env, until="http",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
        assert (await client.get("/healthz")).status_code == 200
    _, output = await server.stop()
    line = next(line for line in output.splitlines() if "tokengrpc.access" in line)
    assert " INFO tokengrpc.access: surface=http method=GET route=/healthz status=200 " in line
    assert "token_id=- client=127.0.0.1 trace_id=-" in line

    quiet = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--no-access-log", until="http",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://{quiet.address('http')}") as client:
        assert (await client.get("/healthz")).status_code == 200
    _, output = await quiet.stop()
    assert "tokengrpc.access" not in output


async def test_a_secret_sent_as_request_id_is_not_logged(tmp_path: Path) -> None:
    """The secret part of a plaintext fits the request-id alphabet (no ``|``);
    sent as ``x-request-id``, alone or inside a longer id, it is dropped on
    both surfaces while ordinary ids (UUIDs, 32 hex digits) are still logged."""
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--log-format", "json", until="http",
    )  # fmt: skip
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    secret = admin.partition("|")[2]
    pasted = (secret, f"req-{secret}", f"{secret}.1", secret.removeprefix("tgr_"))
    kept = (str(uuid.uuid4()), uuid.uuid4().hex)
    try:
        async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
            stub = tokens_pb2_grpc.TokenServiceStub(channel)
            for request_id in (*pasted, *kept):
                metadata = (*bearer(admin), ("x-request-id", request_id))
                await stub.ListTokens(pb.ListTokensRequest(), metadata=metadata)
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            for request_id in (*pasted, *kept):
                headers = {"Authorization": f"Bearer {admin}", "x-request-id": request_id}
                assert (await client.get("/api/token", headers=headers)).status_code == 200
    finally:
        code, output = await server.stop()
    assert code == 0, output
    lines = [*server.lines, *output.splitlines()]
    assert not any(secret.removeprefix("tgr_")[:20] in line for line in lines)
    access = [
        json.loads(line)
        for line in lines
        if not line.startswith(STDOUT_LINES) and "tokengrpc.access" in line
    ]
    for surface in ("grpc", "http"):
        traced = [r["trace_id"] for r in access if r["surface"] == surface]
        assert traced == [None] * len(pasted) + list(kept), surface
