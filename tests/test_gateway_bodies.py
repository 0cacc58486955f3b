"""Strangers' bodies and one reading of a body (contract section 10).

A route that needs a token authenticates before it reads a large body, and
reports bad input only to an authenticated caller; the routes that need no
token take at most 16 KiB; a body that never arrives whole is never used;
the canonical routes refuse a field named twice, the legacy ones keep the
last, as the PHP applications they reproduce do.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx

from gateway.app import document
from gateway.limits import MAX_FORM_BODY
from gateway.upstream import Upstream
from tests.helpers import LiveGateway
from tests.test_gateway_bad_input import (
    Shape,
    admin_shape,
    problem_shape,
    solder_shape,
    status_shape,
)
from tests.test_gateway_hostile import oauth_shape
from tokengrpc.v1 import tokens_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["TokenService"]
MIB = 1024 * 1024
#: Shaped like a token; only the service can tell it is none.
FORGED = "Bearer 999999|tgr_" + "A" * 46


def _shape(path: str) -> Shape:
    for prefix, shape in (
        ("/api/v1/me/", problem_shape),
        ("/api/token", solder_shape),
        ("/_/", admin_shape),
        ("/oauth/", oauth_shape),
        ("/v1/", status_shape),
        ("/auth/check", solder_shape),  # Envoy Check's denials: {"error": ...}
    ):
        if path.startswith(prefix):
            return shape
    raise AssertionError(f"no family for {path}")


def token_routes(gateway: LiveGateway) -> list[tuple[str, str]]:
    """Every route the OpenAPI document says needs a token, with its variables filled in."""
    found = []
    for path, operations in document(Upstream(gateway.service.channel))["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") != []:
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return found


async def _exchange(gateway: LiveGateway, data: bytes) -> httpx.Response:
    """Send ``data`` and read one answer, keeping the connection open (the body
    promised in ``data`` may never come): a late answer is a failure, not a wait."""
    host, port = gateway.http.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = [_header(line) for line in lines[1:] if line]
            # A HEAD answer names its body's length but carries none.
            length = (
                0 if data.startswith(b"HEAD ") else int(dict(headers).get("content-length", "0"))
            )
            body = await reader.readexactly(length)
        return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body)
    finally:
        writer.close()


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(": ")
    return name.lower(), value


def _head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_strangers_large_body_is_401_before_it_is_read(gateway: LiveGateway) -> None:
    """The answer comes while the promised body is still missing: it was not waited for."""
    before = gateway.service.snapshot()
    routes = token_routes(gateway)
    assert len(routes) > 20, routes
    for method, path in routes:
        for credential in ([], [f"Authorization: {FORGED}"], ["Authorization: Basic x"]):
            for declared in (f"Content-Length: {MIB}", "Transfer-Encoding: chunked"):
                head = _head(method, path, *credential, "Content-Type: application/json", declared)
                answer = await _exchange(
                    gateway, head + (b"1\r\n{\r\n" if "chunked" in declared else b"{")
                )
                assert answer.status_code == 401, (method, path, credential, answer.text)
                assert method == "HEAD" or _shape(path)(answer), (path, answer.text)
    assert gateway.service.snapshot() == before
    await gateway.healthy()


async def test_a_strangers_bad_input_is_401_on_every_canonical_route(
    gateway: LiveGateway,
) -> None:
    """Before: the canonical routes parsed first and told a stranger 400."""
    cases = [
        ("POST", "/v1/tokens", b'{"name": '),
        ("POST", "/v1/tokens", b'{"name": "x", "name": "y"}'),
        ("POST", "/v1/tokens", b'{"nope": 1}'),
        ("PATCH", "/v1/tokens/1", b"[1]"),
        ("POST", "/v1/tokens/1:rotate", b'{"gracePeriod": "forever"}'),
        ("POST", "/v1/tokens:introspect", b"\xff"),
        ("GET", "/v1/tokens?page_size=many", b""),
        ("GET", "/v1/tokens/not-a-number", b""),
    ]
    for method, path, body in cases:
        for headers in ({}, {"Authorization": FORGED}):
            answer = await gateway.client.request(method, path, content=body, headers=headers)
            assert answer.status_code == 401, (method, path, answer.text)
            assert status_shape(answer), answer.text
    # An authenticated caller still hears what is wrong.
    bad = await gateway.client.post("/v1/tokens", content=b'{"name": ', headers=gateway.admin)
    assert bad.status_code == 400, bad.text


async def test_an_authenticated_callers_large_body_is_read(gateway: LiveGateway) -> None:
    """Past 16 KiB a body waits for an authentication call, then is used as before."""
    padded = b'{"name": "padded"' + b" " * (40 * 1024) + b"}"
    created = await gateway.client.post("/v1/tokens", content=padded, headers=gateway.admin)
    assert created.status_code == 200, created.text
    gateway.service.plaintexts.append(created.json()["plaintext"])

    async def chunks() -> Any:
        yield b'{"name": '
        yield b'"chunked"}'

    chunked = await gateway.client.post("/api/token", content=chunks(), headers=gateway.admin)
    assert chunked.status_code == 201, chunked.text
    gateway.service.plaintexts.append(chunked.json()["token"]["plaintext"])

    form = b"name=from+a+form&padding=" + b"%41" * (10 * 1024)
    headers = {**gateway.admin, "Content-Type": "application/x-www-form-urlencoded"}
    me = await gateway.client.post("/api/v1/me/tokens", content=form, headers=headers)
    assert me.status_code == 201, me.text
    gateway.service.plaintexts.append(me.json()["plaintext"])
    assert me.json()["data"]["name"] == "from a form"

    introspected = await gateway.client.post(
        "/oauth/introspect",
        content=b"token="
        + me.json()["plaintext"].replace("|", "%7C").encode()
        + b"&x="
        + b"y" * (MAX_FORM_BODY // 2),
        headers=headers,
    )
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True


async def test_a_form_body_over_its_limit_is_413_whatever_the_caller_holds(
    gateway: LiveGateway,
) -> None:
    """Percent-decoding a form runs in Python: a valid token without the route's
    scope must not make the gateway decode a MiB of escapes (0.15 s of the loop)."""
    created = await gateway.client.post(
        "/v1/tokens", json={"name": "weak", "scopes": []}, headers=gateway.admin
    )
    weak = created.json()["plaintext"]
    gateway.service.plaintexts.append(weak)
    form = {**gateway.auth(weak), "Content-Type": "application/x-www-form-urlencoded"}
    before = gateway.service.snapshot()
    for path in ("/api/token", "/api/v1/me/tokens", "/oauth/introspect"):
        for size in (MAX_FORM_BODY + 1, MIB):
            body = b"name=" + b"%41" * ((size - 5) // 3) + b"A" * ((size - 5) % 3)
            assert len(body) == size
            answer = await gateway.client.post(path, content=body, headers=form)
            assert answer.status_code == 413, (path, size, answer.text)
    # Within the limit the same form is read (and refused for the scope it lacks).
    small = await gateway.client.post("/api/token", content=b"name=x", headers=form)
    assert small.status_code == 403, small.text
    assert gateway.service.snapshot() == before


async def test_the_no_token_routes_take_at_most_16_kib(gateway: LiveGateway) -> None:
    before = gateway.service.snapshot()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for size, status in ((16 * 1024, 200), (16 * 1024 + 1, 413), (17 * 1024, 413)):
        body = b"token=" + b"a" * (size - 6)
        assert len(body) == size
        oauth = await gateway.client.post("/oauth/revoke", content=body, headers=form)
        assert oauth.status_code == status, (size, oauth.text)
        if status == 413:
            assert oauth_shape(oauth), oauth.text
            assert "16 KiB" in oauth.json()["error_description"]

        body = b'{"token": "' + b"a" * (size - 13) + b'"}'
        assert len(body) == size
        canonical = await gateway.client.post("/v1/tokens:revokeByValue", content=body)
        assert canonical.status_code == status, (size, canonical.text)
        if status == 413:
            assert status_shape(canonical), canonical.text
            assert "16 KiB" in canonical.json()["message"]
    # A declared length over the limit is refused before a byte is read.
    for path in ("/oauth/revoke", "/v1/tokens:revokeByValue"):
        answer = await _exchange(gateway, _head("POST", path, f"Content-Length: {17 * 1024}"))
        assert answer.status_code == 413, (path, answer.text)
    assert gateway.service.snapshot() == before


async def _started(tasks: set[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
    """The request tasks once there are some (the server runs on this loop; no
    event says a request reached the application, so look until one has)."""
    async with asyncio.timeout(5):
        while not tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return set(tasks)


async def test_a_body_that_never_arrives_whole_is_never_used(gateway: LiveGateway) -> None:
    """A truncated form is still a valid form: what came must not be acted on."""
    before = gateway.service.snapshot()
    tasks = gateway.http.server.server_state.tasks
    host, port = gateway.http.address.rsplit(":", 1)
    auth = f"Authorization: Bearer {gateway.service.admin_token}"
    form = "Content-Type: application/x-www-form-urlencoded"
    for path, body in (
        ("/api/token", b"name=truncated"),
        ("/api/v1/me/tokens", b"name=truncated"),
        ("/v1/tokens", b'{"name": "truncated"}'),
    ):
        kind = form if path.startswith("/api") else "Content-Type: application/json"
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(_head("POST", path, auth, kind, "Content-Length: 200") + body)
        await writer.drain()
        started = await _started(tasks)
        writer.close()
        _, pending = await asyncio.wait(started, timeout=5)
        assert not pending, "the request ended once its client was gone"
    assert gateway.service.snapshot() == before


async def test_canonical_routes_refuse_a_field_named_twice(gateway: LiveGateway) -> None:
    token_id, _ = await gateway.service.create("rotated", scopes=["write"])
    before = gateway.service.snapshot()
    cases = [
        ("POST", "/v1/tokens", '{"name": "SECRET-A", "name": "SECRET-B"}', "name"),
        (
            "POST",
            "/v1/tokens",
            '{"name": "x", "allowed_ips": ["10.0.0.1"], "allowedIps": ["10.0.0.2"]}',
            "allowed_ips",
        ),
        (
            "POST",
            "/v1/tokens",
            '{"name": "x", "serviceToken": true, "service_token": false}',
            "service_token",
        ),
        (
            "POST",
            f"/v1/tokens/{token_id}:rotate",
            '{"grace_period": "1s", "gracePeriod": "60s"}',
            "grace_period",
        ),
        (
            "POST",
            f"/v1/tokens/{token_id}:rotate",
            '{"gracePeriod": "1s", "gracePeriod": "2s"}',
            "gracePeriod",
        ),
        (
            "PATCH",
            f"/v1/tokens/{token_id}",
            '{"allowed_ips": ["10.0.0.1"], "allowedIps": ["10.0.0.2"]}',
            "token.allowed_ips",
        ),
        (
            "PATCH",
            f"/v1/tokens/{token_id}?update_mask=name",
            '{"name": "SECRET-A", "name": "SECRET-B"}',
            "name",
        ),
        ("POST", "/v1/tokens:introspect", '{"token": "SECRET-A", "token": "SECRET-B"}', "token"),
        (
            "POST",
            "/v1/tokens:introspect",
            '{"clientIp": "10.0.0.1", "client_ip": "10.0.0.2"}',
            "client_ip",
        ),
    ]
    for method, path, body, field in cases:
        answer = await gateway.client.request(
            method, path, content=body.encode(), headers=gateway.admin
        )
        assert answer.status_code == 400, (path, body, answer.text)
        assert status_shape(answer), answer.text
        assert answer.json()["code"] == 3, answer.text  # INVALID_ARGUMENT
        assert f"'{field}'" in answer.json()["message"], (field, answer.text)
        for value in ("SECRET", "10.0.0", "60s"):
            assert value not in answer.text, answer.text
    # No reading of these bodies changed anything.
    assert gateway.service.snapshot() == before
    # Nor is a field named once by each of two objects a repeat.
    once = {"name": "once", "allowedIps": ["10.0.0.1"]}
    created = await gateway.client.post("/v1/tokens", json=once, headers=gateway.admin)
    assert created.status_code == 200, created.text
    gateway.service.plaintexts.append(created.json()["plaintext"])


async def test_legacy_families_keep_the_last_of_a_repeated_field(gateway: LiveGateway) -> None:
    """As PHP's json_decode (and a Laravel form) do: the last value wins."""
    twice = b'{"name": "first", "name": "second"}'
    solder = await gateway.client.post("/api/token", content=twice, headers=gateway.admin)
    assert solder.status_code == 201, solder.text
    gateway.service.plaintexts.append(solder.json()["token"]["plaintext"])
    assert solder.json()["token"]["name"] == "second"

    me = await gateway.client.post("/api/v1/me/tokens", content=twice, headers=gateway.admin)
    assert me.status_code == 201, me.text
    gateway.service.plaintexts.append(me.json()["plaintext"])
    assert me.json()["data"]["name"] == "second"

    admin = await gateway.client.post(
        "/_/token", content=b'{"name": "svc-first", "name": "svc-second"}', headers=gateway.admin
    )
    assert admin.status_code == 201, admin.text
    gateway.service.plaintexts.append(admin.json()["value"])
    assert admin.json()["name"] == "svc-second"
    assert json.loads(twice)["name"] == "second"  # Python's reading, for the record
