"""Every HTTP route against bad credentials and bad bodies: its family's error
shape, the right status, nothing stored, and the gateway still up afterwards."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.helpers import LiveGateway

Shape = Callable[[httpx.Response], bool]


def solder_shape(response: httpx.Response) -> bool:
    return set(response.json()) == {"error"}


def admin_shape(response: httpx.Response) -> bool:
    body = response.json()
    return set(body) == {"error"} and isinstance(body["error"], str)


def problem_shape(response: httpx.Response) -> bool:
    body = response.json()
    return response.headers["content-type"] == "application/problem+json" and {
        "type", "title", "status", "detail", "instance", "trace_id",
    } <= set(body) and body["status"] == response.status_code  # fmt: skip


def status_shape(response: httpx.Response) -> bool:
    return set(response.json()) == {"code", "message", "details"}


# (method, path, takes a JSON body, shape)
ROUTES: list[tuple[str, str, bool, Shape]] = [
    ("GET", "/api/token", False, solder_shape),
    ("POST", "/api/token", True, solder_shape),
    ("DELETE", "/api/token/424242", False, solder_shape),
    ("GET", "/api/v1/me/tokens", False, problem_shape),
    ("POST", "/api/v1/me/tokens", True, problem_shape),
    ("DELETE", "/api/v1/me/tokens/424242", False, problem_shape),
    ("POST", "/_/token", True, admin_shape),
    ("GET", "/_/token", False, admin_shape),
    ("PUT", "/_/token", True, admin_shape),
    ("DELETE", "/_/token", True, admin_shape),
    ("GET", "/_/token/value?name=x", False, admin_shape),
    ("POST", "/v1/tokens", True, status_shape),
    ("GET", "/v1/tokens", False, status_shape),
    ("GET", "/v1/tokens/424242", False, status_shape),
    ("PATCH", "/v1/tokens/424242", True, status_shape),
    ("DELETE", "/v1/tokens/424242", False, status_shape),
    ("GET", "/v1/tokens/424242/value", False, status_shape),
    ("GET", "/v1/service-tokens/x", False, status_shape),
    ("DELETE", "/v1/service-tokens/x", False, status_shape),
    ("GET", "/v1/service-tokens/x/value", False, status_shape),
    ("POST", "/v1/tokens:introspect", True, status_shape),
]
IDS = [f"{method} {path}" for method, path, _, _ in ROUTES]
GOOD_BODY = b'{"name": "valid"}'
# A body each route accepts: the credential is what is wrong (a stranger's bad
# body is 401 too: tests/test_gateway_bodies.py).
GOOD_BODIES = {"/v1/tokens:introspect": b'{"token": "x"}'}


@pytest.mark.parametrize(("method", "path", "has_body", "shape"), ROUTES, ids=IDS)
async def test_bad_credentials(
    gateway: LiveGateway, method: str, path: str, has_body: bool, shape: Shape
) -> None:
    before = gateway.service.snapshot()
    good = gateway.service.admin_token
    for headers in (
        {},
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {good[:-1]}{'A' if good[-1] != 'A' else 'B'}"},
    ):
        response = await gateway.client.request(
            method,
            path,
            content=GOOD_BODIES.get(path, GOOD_BODY) if has_body else None,
            headers=headers,
        )
        assert response.status_code == 401, (headers, response.text)
        assert shape(response), response.text
        assert good.partition("|")[2] not in response.text
    assert gateway.service.snapshot() == before
    await gateway.healthy()


BAD_BODIES = {
    "invalid JSON": (b'{"name": ', 400),
    "a JSON array": (b'["name"]', 400),
    "a JSON string": (b'"name"', 400),
    "not UTF-8": (b'{"name": "\xff"}', 400),
    "2 MiB": (b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}', 413),
}


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [(m, p, s) for m, p, has_body, s in ROUTES if has_body],
    ids=[i for i, r in zip(IDS, ROUTES, strict=True) if r[2]],
)
@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_bodies(
    gateway: LiveGateway, method: str, path: str, shape: Shape, case: str
) -> None:
    before = gateway.service.snapshot()
    body, status = BAD_BODIES[case]
    response = await gateway.client.request(method, path, content=body, headers=gateway.admin)
    assert response.status_code == status, response.text
    assert shape(response), response.text
    assert gateway.service.snapshot() == before
    await gateway.healthy()


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/api/token", solder_shape),
        ("/api/v1/me/tokens", problem_shape),
        ("/_/token", admin_shape),
    ],
)
async def test_legacy_families_ignore_unknown_fields(
    gateway: LiveGateway, path: str, shape: Shape
) -> None:
    response = await gateway.client.post(
        path, json={"name": "extra", "unknown": [1, 2], "colour": "blue"}, headers=gateway.admin
    )
    assert response.status_code == 201, response.text
    body = response.json()
    plaintext = body.get("value") or body.get("plaintext") or body["token"]["plaintext"]
    gateway.service.plaintexts.append(plaintext)


@pytest.mark.parametrize(
    "name", ["caf\u00e9 \u2615", "100%25 sure", "slash/inside", "\u65e5\u672c"]
)
async def test_unicode_and_percent_names(gateway: LiveGateway, name: str) -> None:
    created = await gateway.client.post("/_/token", json={"name": name}, headers=gateway.admin)
    assert created.status_code == 201
    gateway.service.plaintexts.append(created.json()["value"])
    value = await gateway.client.get("/_/token/value", params={"name": name}, headers=gateway.admin)
    assert value.json()["name"] == name
    if "/" not in name:
        encoded = httpx.URL("/v1/service-tokens/").join(name.replace("%", "%25")).raw_path.decode()
        by_name = await gateway.client.get(encoded, headers=gateway.admin)
        assert by_name.json()["name"] == name


async def test_the_gateway_survives_everything_at_once(gateway: LiveGateway) -> None:
    before = gateway.service.snapshot()
    for method, path, has_body, _ in ROUTES:
        for body in (b"{", b"[]", b"\x00\x01", b""):
            await gateway.client.request(method, path, content=body if has_body else None)
            await gateway.client.request(
                method, path, content=body if has_body else None, headers=gateway.admin
            )
    for odd in ("/api/token/%", "/v1/tokens/%zz", "/../../etc/passwd", "/v1/tokens/" + "9" * 40):
        response = await gateway.client.get(odd, headers=gateway.admin)
        assert response.status_code in (400, 404)
    # Bodies with bad content but admin auth may have been refused only.
    assert len(gateway.service.snapshot()) == len(before)
    await gateway.healthy()
