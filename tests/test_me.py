"""The me family against a live server, checked against seed 001."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.me import page_window
from tests.fixtures import seeds
from tests.helpers import LiveGateway
from tests.shapes import same_shape

PATH = "/api/v1/me/tokens"
ITEM_VOLATILE = {
    "id": "int",
    "created_at": "seconds_z",
    "last_used_at": "seconds_z?",
    "expires_at": "seconds_z",
    "usage_count": "int",
    "trace_id": "uuid",
}
AS_EXAMPLE_EDU = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.edu"}


async def _owner_with_tokens(gateway: LiveGateway, owner: str, count: int) -> str:
    _, caller = await gateway.service.create("Production Deploy", owner=owner, scopes=["write"])
    for index in range(count - 1):
        await gateway.service.create(f"t{index}", owner=owner)
    return caller


async def test_list_matches_the_seed(gateway: LiveGateway) -> None:
    caller = await _owner_with_tokens(gateway, "me-user", 15)
    response = await gateway.client.get(
        PATH, params={"page": "1"}, headers={**gateway.auth(caller), **AS_EXAMPLE_EDU}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["links"] == seeds.ME_LIST_RESPONSE["links"]
    assert body["meta"] == seeds.ME_LIST_RESPONSE["meta"]
    assert len(body["data"]) == 15
    same_shape(body["data"][0], seeds.ME_LIST_RESPONSE["data"][0], ITEM_VOLATILE)
    for item in body["data"][1:]:
        assert item["last_used_at"] is None
        assert item["status"] == "active"


async def test_an_item_with_expiry_and_addresses(gateway: LiveGateway) -> None:
    _, caller = await gateway.service.create("caller", owner="m", scopes=["write"])
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = await gateway.client.post(
        PATH,
        json={
            "name": "CI Deployments",
            "expires_at": expires,
            "allowed_ips": ["10.0.0.0/24", "203.0.113.12"],
        },
        headers=gateway.auth(caller),
    )
    assert response.status_code == 201
    gateway.service.plaintexts.append(response.json()["plaintext"])
    assert set(response.json()) == {"data", "plaintext"}
    item = response.json()["data"]
    same_shape(
        item, {**seeds.ME_ITEM_EXAMPLE, "last_used_at": None, "usage_count": 0}, ITEM_VOLATILE
    )
    assert item["expires_at"] == expires


def _labels(body: dict[str, object]) -> list[str]:
    meta = body["meta"]
    assert isinstance(meta, dict)
    return [link["label"] for link in meta["links"]]


async def test_the_laravel_link_window(gateway: LiveGateway) -> None:
    caller = await _owner_with_tokens(gateway, "many", 300)  # 15 pages
    expected = {
        1: ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "...", "14", "15"],
        8: ["1", "2", "...", "5", "6", "7", "8", "9", "10", "11", "...", "14", "15"],
        15: ["1", "2", "...", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"],
    }
    for page, middle in expected.items():
        response = await gateway.client.get(
            PATH, params={"page": str(page)}, headers=gateway.auth(caller)
        )
        body = response.json()
        assert _labels(body) == ["« Previous", *middle, "Next »"]
        links = body["meta"]["links"]
        active = [link for link in links if link["active"]]
        assert [link["page"] for link in active] == [page]
        assert links[0]["page"] == (page - 1 if page > 1 else None)
        assert links[-1]["page"] == (page + 1 if page < 15 else None)
        assert body["meta"]["last_page"] == 15
        assert body["meta"]["total"] == 300


def test_window_rules_at_the_edges() -> None:
    assert page_window(1, 1) == [1]
    assert page_window(5, 13) == list(range(1, 14))
    assert page_window(7, 14) == [*range(1, 11), None, 13, 14]
    assert page_window(8, 14) == [1, 2, None, *range(5, 15)]
    assert page_window(50, 100) == [1, 2, None, *range(47, 54), None, 99, 100]


@pytest.mark.parametrize(("raw", "page"), [("abc", 1), ("-1", 1), ("0", 1), ("2.5", 1), ("", 1)])
async def test_bad_page_numbers_mean_page_one(gateway: LiveGateway, raw: str, page: int) -> None:
    caller = await _owner_with_tokens(gateway, "p", 3)
    response = await gateway.client.get(PATH, params={"page": raw}, headers=gateway.auth(caller))
    assert response.status_code == 200
    assert response.json()["meta"]["current_page"] == page
    assert len(response.json()["data"]) == 3


async def test_a_page_past_the_end(gateway: LiveGateway) -> None:
    caller = await _owner_with_tokens(gateway, "p", 3)
    response = await gateway.client.get(
        PATH, params={"page": "99999"}, headers=gateway.auth(caller)
    )
    body = response.json()
    assert body["data"] == []
    assert (body["meta"]["from"], body["meta"]["to"]) == (None, None)
    assert body["meta"]["current_page"] == 99999
    assert body["links"]["prev"].endswith("?page=99998")
    assert body["links"]["next"] is None


async def test_revoked_tokens_are_listed_with_their_status(gateway: LiveGateway) -> None:
    service = gateway.service
    _, caller = await service.create("caller", owner="r", scopes=["write"])
    token_id, _ = await service.create("gone", owner="r")
    deleted = await gateway.client.delete(f"{PATH}/{token_id}", headers=gateway.auth(caller))
    assert deleted.status_code == 204
    assert deleted.content == b""
    listed = await gateway.client.get(PATH, headers=gateway.auth(caller))
    statuses = {item["name"]: item["status"] for item in listed.json()["data"]}
    assert statuses == {"caller": "active", "gone": "revoked"}
    again = await gateway.client.delete(f"{PATH}/{token_id}", headers=gateway.auth(caller))
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"


async def test_401_is_the_seed_problem(gateway: LiveGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await gateway.client.get(PATH, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        same_shape(body, {**seeds.ME_UNAUTHORIZED, "instance": PATH}, {"trace_id": "uuid"})
        assert response.headers["x-trace-id"] == body["trace_id"]


def _must(field: str, rest: str) -> str:
    return f"The {field} field must {rest}."


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "name", "The name field is required."),
        ({"name": 1}, "name", _must("name", "be a string")),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at",
         _must("expires at", "be a valid RFC 3339 date")),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at",
         _must("expires at", "be a date after now")),
        ({"name": "x", "allowed_ips": "10.0.0.1"}, "allowed_ips",
         _must("allowed ips", "be an array")),
        ({"name": "x", "allowed_ips": [1]}, "allowed_ips",
         _must("allowed ips", "be an array of strings")),
        ({"name": "x", "scopes": [None]}, "scopes", _must("scopes", "be an array of strings")),
    ],
)  # fmt: skip
async def test_validation_is_a_422_problem(
    gateway: LiveGateway, body: dict[str, object], field: str, message: str
) -> None:
    before = gateway.service.snapshot()
    response = await gateway.client.post(PATH, json=body, headers=gateway.admin)
    assert response.status_code == 422
    problem = response.json()
    assert problem["title"] == "Unprocessable Content"
    assert problem["errors"] == {field: [message]}
    assert gateway.service.snapshot() == before


async def test_invalid_addresses_come_back_from_the_service(gateway: LiveGateway) -> None:
    before = gateway.service.snapshot()
    response = await gateway.client.post(
        PATH, json={"name": "x", "allowed_ips": ["10.0.0.0/33"]}, headers=gateway.admin
    )
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["allowed_ips"]
    # The item by index, never the value sent (it could be a pasted secret).
    message = response.json()["errors"]["allowed_ips"][0]
    assert "item 0" in message
    assert "10.0.0.0/33" not in message
    assert gateway.service.snapshot() == before


async def test_scopes_default_to_the_callers_without_admin(gateway: LiveGateway) -> None:
    created = await gateway.client.post(PATH, json={"name": "child"}, headers=gateway.admin)
    gateway.service.plaintexts.append(created.json()["plaintext"])
    narrower = await gateway.client.post(
        PATH, json={"name": "narrow", "scopes": ["write"]}, headers=gateway.admin
    )
    gateway.service.plaintexts.append(narrower.json()["plaintext"])
    _, writer = await gateway.service.create("w", owner="z", scopes=["write"])
    wider = await gateway.client.post(
        PATH, json={"name": "wider", "scopes": ["admin"]}, headers=gateway.auth(writer)
    )
    assert wider.status_code == 403
    assert wider.json()["title"] == "Forbidden"
