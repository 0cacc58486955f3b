"""The canonical /v1 routes, generated from the proto annotations, over live HTTP."""

from __future__ import annotations

import time

import pytest

from tests.helpers import LiveGateway


async def test_create_get_patch_revoke(gateway: LiveGateway) -> None:
    client, admin = gateway.client, gateway.admin
    created = await client.post(
        "/v1/tokens",
        json={"name": "rest", "scopes": ["write"], "allowedIps": ["10.0.0.0/8"], "owner": "ann"},
        headers=admin,
    )
    assert created.status_code == 200
    body = created.json()
    gateway.service.plaintexts.append(body["plaintext"])
    token = body["token"]
    assert isinstance(token["id"], str), "int64 is a JSON string"
    assert token["status"] == "TOKEN_STATUS_ACTIVE"
    assert token["expireTime"] is None, "unpopulated fields are emitted"
    assert token["usageCount"] == "0"

    got = await client.get(f"/v1/tokens/{token['id']}", headers=admin)
    assert got.json()["name"] == "rest", "response_body: the token itself"
    trailing = await client.get(f"/v1/tokens/{token['id']}/", headers=admin)
    assert trailing.json() == got.json() | {
        "usageCount": trailing.json()["usageCount"],
        "lastUseTime": trailing.json()["lastUseTime"],
    }

    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    patched = await client.patch(
        f"/v1/tokens/{token['id']}", json={"name": "renamed", "expireTime": expiry}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed"
    assert patched.json()["expireTime"] == expiry
    assert patched.json()["scopes"] == ["write"], "the mask comes from the body's fields"

    masked = await client.patch(
        f"/v1/tokens/{token['id']}?updateMask=active",
        json={"active": False, "name": "ignored"},
        headers=admin,
    )
    assert (masked.json()["active"], masked.json()["name"]) == (False, "renamed")

    revoked = await client.delete(f"/v1/tokens/{token['id']}", headers=admin)
    assert revoked.json()["status"] == "TOKEN_STATUS_REVOKED"


async def test_list_with_query_parameters(gateway: LiveGateway) -> None:
    for index in range(3):
        await gateway.service.create(f"t{index}", owner="q")
    client, admin = gateway.client, gateway.admin
    first = await client.get("/v1/tokens?owner=q&pageSize=2", headers=admin)
    body = first.json()
    assert [t["name"] for t in body["tokens"]] == ["t0", "t1"]
    assert "totalSize" not in body, "counted only for page-number listings"
    second = await client.get(
        "/v1/tokens", params={"owner": "q", "page_size": "2", "page_token": body["nextPageToken"]},
        headers=admin,
    )  # fmt: skip
    assert [t["name"] for t in second.json()["tokens"]] == ["t2"]
    assert second.json()["nextPageToken"] == ""
    revoked = await client.get("/v1/tokens?owner=q&showRevoked=true&page=1", headers=admin)
    assert revoked.json()["totalSize"] == "3"
    nobody = await client.get("/v1/tokens?owner=nobody&page=1", headers=admin)
    assert nobody.json()["totalSize"] == "0", "a count that was made is shown, zero too"


async def test_service_tokens_by_name_and_value(gateway: LiveGateway) -> None:
    client, admin = gateway.client, gateway.admin
    created = await client.post(
        "/v1/tokens", json={"name": "ci bot", "serviceToken": True}, headers=admin
    )
    gateway.service.plaintexts.append(created.json()["plaintext"])
    by_name = await client.get("/v1/service-tokens/ci%20bot", headers=admin)
    assert by_name.json()["name"] == "ci bot"
    value = await client.get("/v1/service-tokens/ci%20bot/value", headers=admin)
    assert value.json()["value"] == created.json()["plaintext"]
    by_id = await client.get(f"/v1/tokens/{created.json()['token']['id']}/value", headers=admin)
    assert by_id.json()["value"] == created.json()["plaintext"]


async def test_introspection_custom_verb(gateway: LiveGateway) -> None:
    service = gateway.service
    _, subject = await service.create("subject", owner="s", scopes=["read"])
    answer = await gateway.client.post(
        "/v1/tokens:introspect", json={"token": subject}, headers=gateway.admin
    )
    assert answer.json()["active"] is True
    assert answer.json()["token"]["owner"] == "s"
    inactive = await gateway.client.post(
        "/v1/tokens:introspect", json={"token": "junk"}, headers=gateway.admin
    )
    assert inactive.json() == {"active": False, "token": None}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "mentions"),
    [
        ("GET", "/v1/tokens/999", None, 404, 5, "not found"),
        ("GET", "/v1/tokens/abc", None, 400, 3, "'id' must be an integer"),
        ("GET", "/v1/tokens?bogus=1", None, 400, 3, "bogus"),
        ("GET", "/v1/tokens?pageSize=1&pageSize=2", None, 400, 3, "more than once"),
        ("GET", "/v1/tokens?showRevoked=maybe", None, 400, 3, "showRevoked"),
        ("POST", "/v1/tokens", {"name": "x", "nmae": "typo"}, 400, 3, "nmae"),
        ("POST", "/v1/tokens", {"name": 5}, 400, 3, "name"),
        ("POST", "/v1/tokens?name=x", {"name": "x"}, 400, 3, "name"),
        ("POST", "/v1/tokens", {"name": ""}, 400, 3, "name"),
        ("POST", "/v1/tokens", [1, 2], 400, 3, "object"),
        ("PATCH", "/v1/tokens/1", {"owner": "x"}, 400, 3, "owner"),
        ("GET", "/v1/tokens/%zz", None, 400, 3, "percent"),
        ("GET", "/v1/nothing", None, 404, 5, "no route"),
        ("PUT", "/v1/tokens", None, 405, 12, "not allowed"),
        ("POST", "/v1/tokens:unknownVerb", {}, 404, 5, "no route"),
    ],
)
async def test_errors_are_google_rpc_status(
    gateway: LiveGateway,
    method: str,
    path: str,
    body: object,
    status: int,
    code: int,
    mentions: str,
) -> None:
    before = gateway.service.snapshot()
    response = await gateway.client.request(method, path, json=body, headers=gateway.admin)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"code", "message", "details"}
    assert payload["code"] == code
    assert mentions.lower() in payload["message"].lower()
    if status == 405:
        assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    assert gateway.service.snapshot() == before


async def test_validation_details_are_bad_request(gateway: LiveGateway) -> None:
    response = await gateway.client.post(
        "/v1/tokens", json={"name": " ", "allowedIps": ["nope"]}, headers=gateway.admin
    )
    assert response.status_code == 400
    details = response.json()["details"]
    assert details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fields = {v["field"] for v in details[0]["fieldViolations"]}
    assert fields == {"name", "allowed_ips"}


async def test_unauthenticated_and_forbidden(gateway: LiveGateway) -> None:
    no_auth = await gateway.client.get("/v1/tokens")
    assert (no_auth.status_code, no_auth.json()["code"]) == (401, 16)
    _, reader = await gateway.service.create("reader", owner="r")
    denied = await gateway.client.post(
        "/v1/tokens", json={"name": "x"}, headers=gateway.auth(reader)
    )
    assert (denied.status_code, denied.json()["code"]) == (403, 7)
