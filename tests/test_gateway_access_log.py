"""A gateway in another process than the service logs who the caller was.

The service names the token a call authenticated with in trailing metadata
(never for a failed authentication); the gateway puts that id on its HTTP
access line and never hands the metadata on to an HTTP client.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import pytest

from tests.helpers import bearer
from tests.processes import serve, start_gateway
from tokengrpc import plaintext
from tokengrpc.logs import CALLER_ID_METADATA
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

#: Well formed, checksum and all, but never issued.
FORGED = "7|tgr_0123456789abcdefghijABCDEFGHIJ0123456789abcdef"
#: What the processes print on stdout for scripts (sharing the pipe with stderr here).
STDOUT_LINES = ("bootstrap token written to ", "grpc listening on ", "http listening on ",
                "shutting down")  # fmt: skip

#: (HTTP method, route template, status) -> who the line must name: "admin",
#: "reader" (a token without scopes) or None.
EXPECTED = {
    ("GET", "/v1/tokens", 200): "admin",
    ("GET", "/api/token", 200): "admin",  # a legacy family: several calls, one line
    ("GET", "/v1/tokens/{id}", 404): "admin",  # refused after authentication
    ("POST", "/v1/tokens", 403): "reader",  # refused after authentication
    ("GET", "/api/token", 401): None,  # a real-looking secret that was never issued
    ("GET", "/api/v1/me/tokens", 401): None,
    ("GET", "/healthz", 200): None,  # no authentication at all
    ("PROPFIND", "/auth/check", 200): "reader",  # forward auth names the token it checked
    ("GET", "/auth/check", 403): "reader",  # and the token it refused for a scope
    ("GET", "/auth/check", 401): None,
    ("HEAD", "/auth/check", 401): None,  # a revoked token: found, but named by nobody
    ("DELETE", "/auth/check", 401): None,  # the reader's id with another secret
}
#: Who presents a request of EXPECTED, where the line must name nobody.
PRESENTS = {("HEAD", "/auth/check", 401): "revoked", ("DELETE", "/auth/check", 401): "wrong"}
#: The path a request of EXPECTED goes to, where it is not its route.
PATHS = {
    "/v1/tokens/{id}": "/v1/tokens/999",
    "/auth/check": "/auth/check/below/it?x=1",
    ("GET", "/auth/check", 403): "/auth/check?scope=deploy",
}


async def _reader(grpc_address: str, admin: str) -> tuple[int, dict[str, str]]:
    """A token holding no scope (so that creating one is refused, 403, after
    authentication), and what the requests present: secrets by name."""
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        made = await stub.CreateToken(
            pb.CreateTokenRequest(name="reader", owner="alice"), metadata=bearer(admin)
        )
        gone = await stub.CreateToken(
            pb.CreateTokenRequest(name="gone", owner="alice"), metadata=bearer(admin)
        )
        await stub.RevokeToken(pb.RevokeTokenRequest(id=gone.token.id), metadata=bearer(admin))
    # Well formed, checksum and all: only its hash tells it from the reader's.
    wrong = plaintext.join(made.token.id, plaintext.new_secret("tgr_"))
    presented = {"admin": admin, "reader": made.plaintext, "revoked": gone.plaintext,
                 "wrong": wrong}  # fmt: skip
    return made.token.id, presented


async def _drive(http_address: str, secrets: dict[str, str]) -> None:
    """Every request of EXPECTED, once; no response may carry the service's metadata."""
    async with httpx.AsyncClient(base_url=f"http://{http_address}") as client:
        for (method, route, status), who in EXPECTED.items():
            key = (method, route, status)
            path = PATHS.get(key, PATHS.get(route, route))
            secret = secrets.get(PRESENTS.get(key, who) or "", FORGED)
            headers = {} if route == "/healthz" else {"Authorization": f"Bearer {secret}"}
            body = {"name": "refused"} if method == "POST" else None
            response = await client.request(method, path, headers=headers, json=body)
            assert response.status_code == status, (method, path, response.text)
            names = {name.lower() for name in response.headers}
            assert CALLER_ID_METADATA not in names, (method, path)
            assert not any("caller" in name for name in names), (method, path)


def _check_lines(lines: list[str], records: list[dict[str, object]], ids: dict[str, int],
                 secrets: list[str]) -> None:  # fmt: skip
    for secret in secrets:
        hidden = secret.partition("|")[2]
        assert not any(hidden in line for line in lines), "a secret reached the output"
    http = [r for r in records if r["surface"] == "http"]
    found = {(r["method"], r["route"], r["status"]): r["token_id"] for r in http}
    assert len(http) == len(EXPECTED), http
    wanted = {key: (None if who is None else ids[who]) for key, who in EXPECTED.items()}
    assert found == wanted
    print(f"{len(http)} HTTP lines: {found}")


async def test_serve_with_a_network_upstream_logs_the_caller_in_json(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--http-upstream", "network",
        "--log-format", "json", until="http",
    )  # fmt: skip
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    try:
        reader_id, secrets = await _reader(server.address("grpc"), admin)
        await _drive(server.address("http"), secrets)
    finally:
        code, output = await server.stop()
    assert code == 0, output
    lines = [*server.lines, *output.splitlines()]
    records = [json.loads(line) for line in lines if not line.startswith(STDOUT_LINES)]
    access = [r for r in records if r["logger"] == "tokengrpc.access"]
    _check_lines(lines, access, {"admin": 1, "reader": reader_id}, [*secrets.values(), FORGED])
    # The service's own lines for the checks behind /auth/check: the same names.
    checks: dict[object, set[object]] = {}
    for record in access:
        if record["surface"] == "grpc" and str(record["method"]).endswith("/CheckToken"):
            checks.setdefault(record["status"], set()).add(record["token_id"])
    assert checks == {"OK": {reader_id}, "PERMISSION_DENIED": {reader_id},
                      "UNAUTHENTICATED": {None}}  # fmt: skip


def _fields(line: str) -> dict[str, object]:
    """A text access line's ``key=value`` pairs (``-`` is None, digits are numbers)."""
    pairs = dict(pair.split("=", 1) for pair in line.split(": ", 1)[1].split())
    return {
        key: None if value == "-" else int(value) if value.isdigit() else value
        for key, value in pairs.items()
    }


async def test_a_separate_gateway_logs_the_caller_in_text(tmp_path: Path) -> None:
    server = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http")
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    gateway = await start_gateway(server.address("grpc"))
    try:
        reader_id, secrets = await _reader(server.address("grpc"), admin)
        await _drive(gateway.address("http"), secrets)
    finally:
        code, output = await gateway.stop()
        served = await server.stop()
    assert code == 0, output
    assert served[0] == 0, served[1]
    lines = [*gateway.lines, *output.splitlines()]
    access = [_fields(line) for line in lines if " INFO tokengrpc.access: " in line]
    _check_lines(lines, access, {"admin": 1, "reader": reader_id}, [*secrets.values(), FORGED])


async def test_the_service_names_an_authenticated_caller_in_trailing_metadata(
    tmp_path: Path,
) -> None:
    """On success and on a refusal after authentication; never for a failed one."""
    server = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
                         "--no-metrics", "--no-access-log")  # fmt: skip
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    try:
        reader_id, secrets = await _reader(server.address("grpc"), admin)
        reader = secrets["reader"]
        async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
            stub = tokens_pb2_grpc.TokenServiceStub(channel)
            call = stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(admin))
            await call
            assert (CALLER_ID_METADATA, "1") in tuple(await call.trailing_metadata())

            outcomes: dict[grpc.StatusCode, tuple[tuple[str, str | bytes], ...]] = {}
            refused = (
                stub.CreateToken(pb.CreateTokenRequest(name="no"), metadata=bearer(reader)),
                stub.GetToken(pb.GetTokenRequest(id=999), metadata=bearer(admin)),
                stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(FORGED)),
            )
            for failing in refused:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await failing
                outcomes[error.value.code()] = tuple(error.value.trailing_metadata() or ())

            # A check names the token it refused for a scope, and nobody else.
            checks: list[tuple[grpc.StatusCode, tuple[tuple[str, str | bytes], ...]]] = []
            for who in ("reader", "revoked", "wrong"):
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.CheckToken(
                        pb.CheckTokenRequest(required_scopes=["deploy"]),
                        metadata=bearer(secrets[who]),
                    )
                checks.append((error.value.code(), tuple(error.value.trailing_metadata() or ())))
    finally:
        code, output = await server.stop()
    assert code == 0, output
    denied = outcomes[grpc.StatusCode.PERMISSION_DENIED]
    assert (CALLER_ID_METADATA, str(reader_id)) in denied
    # The status details still travel beside it.
    assert any(key == "grpc-status-details-bin" for key, _ in denied)
    assert (CALLER_ID_METADATA, "1") in outcomes[grpc.StatusCode.NOT_FOUND]
    unauthenticated = outcomes[grpc.StatusCode.UNAUTHENTICATED]
    assert not any(key == CALLER_ID_METADATA for key, _ in unauthenticated)
    named = [(code, [value for key, value in pairs if key == CALLER_ID_METADATA])
             for code, pairs in checks]  # fmt: skip
    assert named == [
        (grpc.StatusCode.PERMISSION_DENIED, [str(reader_id)]),
        (grpc.StatusCode.UNAUTHENTICATED, []),
        (grpc.StatusCode.UNAUTHENTICATED, []),
    ]
