"""The admin family against a live server, checked against seed 002."""

from __future__ import annotations

import json
import os
import time

import pytest

from gateway.admin import described
from tests.fixtures import seeds
from tests.helpers import LiveGateway, bearer
from tokengrpc.store import NewToken
from tokengrpc.v1 import tokens_pb2 as pb

FUTURE_MS = (int(time.time()) + 86_400 * 365) * 1000


def _future(request: dict[str, object]) -> dict[str, object]:
    return {**request, "expiration_date": FUTURE_MS}


async def test_the_seed_example_expiry_is_in_the_past(gateway: LiveGateway) -> None:
    # The seed's example date (2021-09-30) has passed; every create and update
    # route refuses an expiry in the past, so the example itself is a 400.
    before = gateway.service.snapshot()
    response = await gateway.client.post(
        "/_/token", json=seeds.ADMIN_CREATE_REQUEST, headers=gateway.admin
    )
    assert response.status_code == 400
    assert response.json() == {"error": "expiration_date: must be in the future"}
    assert gateway.service.snapshot() == before


async def test_create_list_update_value_delete(gateway: LiveGateway) -> None:
    admin = gateway.admin
    created = await gateway.client.post(
        "/_/token", json=_future(seeds.ADMIN_CREATE_REQUEST), headers=admin
    )
    assert created.status_code == 201
    body = created.json()
    gateway.service.plaintexts.append(body["value"])
    assert set(body) == {*seeds.ADMIN_OBJECT_FIELDS, "value"}
    assert body["name"] == "example"
    assert body["expiration_date"] == FUTURE_MS
    assert (body["active"], body["write"], body["usage_count"]) == (True, True, 0)
    assert body["last_used_at"] is None
    assert isinstance(body["created_at"], int)
    assert body["created_at"] == body["updated_at"]

    duplicate = await gateway.client.post("/_/token", json={"name": "example"}, headers=admin)
    assert duplicate.status_code == 409
    assert set(duplicate.json()) == {"error"}

    await gateway.client.post("/_/token", json={"name": "another"}, headers=admin)
    listed = await gateway.client.get("/_/token", headers=admin)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()] == ["another", "example"]
    assert all(set(t) == set(seeds.ADMIN_OBJECT_FIELDS) for t in listed.json())
    another = listed.json()[0]
    assert (another["expiration_date"], another["write"], another["active"]) == (None, True, True)

    value = await gateway.client.get(f"/_/token/value?{seeds.ADMIN_VALUE_QUERY}", headers=admin)
    assert value.json() == {"name": "example", "value": body["value"]}

    updated = await gateway.client.put(
        "/_/token", json={"name": "example", "write": False, "active": False}, headers=admin
    )
    assert updated.status_code == 200
    after = updated.json()
    assert (after["write"], after["active"], after["expiration_date"]) == (False, False, FUTURE_MS)
    assert after["updated_at"] >= after["created_at"]

    kept = await gateway.client.put("/_/token", json={"name": "example"}, headers=admin)
    assert kept.json()["write"] is False, "absent fields keep their values"

    deleted = await gateway.client.request(
        "DELETE", "/_/token", json={"name": "example"}, headers=admin
    )
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": "example"})
    gone = await gateway.client.get("/_/token/value?name=example", headers=admin)
    assert gone.status_code == 404
    # The name is free again once revoked.
    reused = await gateway.client.post("/_/token", json={"name": "example"}, headers=admin)
    assert reused.status_code == 201
    gateway.service.plaintexts.append(reused.json()["value"])


async def test_the_value_authenticates(gateway: LiveGateway) -> None:
    created = await gateway.client.post("/_/token", json={"name": "svc"}, headers=gateway.admin)
    value = created.json()["value"]
    gateway.service.plaintexts.append(value)
    listed = await gateway.client.get("/api/token", headers=gateway.auth(value))
    assert listed.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/_/token", {"name": "x"}),
        ("GET", "/_/token", None),
        ("PUT", "/_/token", {"name": "x"}),
        ("DELETE", "/_/token", {"name": "x"}),
        ("GET", "/_/token/value?name=x", None),
    ],
)
async def test_401_without_and_403_without_admin(
    gateway: LiveGateway, method: str, path: str, body: dict[str, object] | None
) -> None:
    service = gateway.service
    _, writer = await service.create("writer", owner="w", scopes=["write"])
    await gateway.client.post("/_/token", json={"name": "x"}, headers=gateway.admin)
    before = service.snapshot()
    for headers, status in (({}, 401), (gateway.auth("1|bad"), 401), (gateway.auth(writer), 403)):
        response = await gateway.client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert set(response.json()) == {"error"}
    assert service.snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/_/token", {"name": "nope", "active": True}, 404),
        ("DELETE", "/_/token", {"name": "nope"}, 404),
        ("GET", "/_/token/value?name=nope", None, 404),
        ("GET", "/_/token/value", None, 400),
        ("GET", "/_/token/value?name=", None, 400),
        ("POST", "/_/token", {}, 400),
        ("POST", "/_/token", {"name": 3}, 400),
        ("POST", "/_/token", {"name": "x", "expiration_date": "tomorrow"}, 400),
        ("POST", "/_/token", {"name": "x", "expiration_date": -5}, 400),
        ("POST", "/_/token", {"name": "x", "expiration_date": 1.5}, 400),
        ("POST", "/_/token", {"name": "x", "expiration_date": True}, 400),
        ("POST", "/_/token", {"name": "x", "active": "yes"}, 400),
        ("POST", "/_/token", {"name": "x", "write": 1}, 400),
        ("POST", "/_/token", {"name": "n" * 256}, 400),
        ("PUT", "/_/token", {"name": "x", "expiration_date": 1632960000000}, 400),
        ("DELETE", "/_/token", {}, 400),
    ],
)
async def test_bad_requests(
    gateway: LiveGateway, method: str, path: str, body: dict[str, object] | None, status: int
) -> None:
    created = await gateway.client.post("/_/token", json={"name": "x"}, headers=gateway.admin)
    gateway.service.plaintexts.append(created.json()["value"])
    before = gateway.service.snapshot()
    response = await gateway.client.request(method, path, json=body, headers=gateway.admin)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"]
    assert gateway.service.snapshot() == before
    await gateway.healthy()


async def test_the_list_is_streamed_by_name_byte_for_byte_as_the_whole_answer(
    gateway: LiveGateway,
) -> None:
    """Past one page of the service, GET /_/token is sent page by page in the
    service's name order, exactly the bytes of the list sorted and sent whole."""
    service = gateway.service
    now = time.time_ns() // 1000
    # Names whose id order, code point order and a locale's order all differ.
    names = [f"{'ÄaZé☃'[n % 5]}{(n * 7919) % 450} tök" for n in range(450)]
    ids = await service.core.store.insert_many(
        [NewToken("", name, os.urandom(32), ("write",), True, None, (), now + n)
         for n, name in enumerate(names)]
    )  # fmt: skip
    for revoked in (ids[0], ids[199], ids[-1]):
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=revoked), metadata=bearer(service.admin_token)
        )
    async with gateway.client.stream("GET", "/_/token", headers=gateway.admin) as got:
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert "content-length" not in got.headers
        body = await got.aread()
    # What the gateway answered before it streamed: every page by id, sorted.
    whole = await service.stub.ListTokens(
        pb.ListTokensRequest(service_tokens=True, page_size=1000),
        metadata=bearer(service.admin_token),
    )
    assert len(whole.tokens) == 447
    expected = [described(t) for t in sorted(whole.tokens, key=lambda t: (t.name, t.id))]
    assert body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()

    # One page: answered whole, with its length, as before.
    for token_id in [*ids[1:199], *ids[200:250]]:
        await service.stub.RevokeToken(
            pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
        )
    small = await gateway.client.get("/_/token", headers=gateway.admin)
    assert small.headers["content-length"] == str(len(small.content))
    kept = [t for t in whole.tokens if t.id not in ids[1:250]]
    assert (
        small.content
        == json.dumps(
            [described(t) for t in sorted(kept, key=lambda t: (t.name, t.id))],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
