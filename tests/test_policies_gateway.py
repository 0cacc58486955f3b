"""Policies over time in the HTTP families (CONTRACT section 12): each reports
the effective expiry in its own field and refuses a later one with its own
validation error, naming the setting; ``me`` shows a pending token as
inactive. In-process, as ``serve`` runs the gateway, on SQLite (the gateway
never sees the store; tests/test_policies.py holds the rules on both engines)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from tests.helpers import (
    MAX_SECRET_AGE,
    LiveGateway,
    bearer,
    start_gateway,
    start_service,
    stop_gateway,
    stop_service,
)
from tokengrpc.v1 import tokens_pb2 as pb

HOUR_S = MAX_SECRET_AGE // 1_000_000


@pytest.fixture
async def aged(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    service = await start_service(tmp_path / "data", max_secret_age=MAX_SECRET_AGE)
    live = await start_gateway(service, "in-process")
    try:
        yield live
    finally:
        await stop_gateway(live)
        await stop_service(service)


def _named(text: str) -> None:
    assert "--max-secret-age" in text
    assert "TOKENGRPC_MAX_SECRET_AGE" in text
    assert "1h" in text


async def test_every_family_reports_the_effective_expiry(aged: LiveGateway) -> None:
    service = aged.service
    _, user = await service.create("mine", owner="admin", scopes=["write", "introspect"])
    created = await aged.client.post("/api/v1/me/tokens", headers=aged.auth(user),
                                     json={"name": "laptop"})  # fmt: skip
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    made = dt.datetime.fromisoformat(data["created_at"]).timestamp()
    assert dt.datetime.fromisoformat(data["expires_at"]).timestamp() == made + HOUR_S

    made_admin = await aged.client.post("/_/token", headers=aged.admin, json={"name": "svc"})
    assert made_admin.status_code == 201, made_admin.text
    body = made_admin.json()
    assert body["expiration_date"] == body["created_at"] + HOUR_S * 1000

    introspected = await aged.client.post(
        "/oauth/introspect", headers=aged.admin, data={"token": user}
    )
    claims = introspected.json()
    assert claims["exp"] == claims["iat"] + HOUR_S


async def test_every_family_refuses_a_later_expiry_in_its_own_words(aged: LiveGateway) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    me = await aged.client.post(
        "/api/v1/me/tokens",
        headers=aged.admin,
        json={"name": "laptop", "expires_at": later.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    assert me.status_code == 422, me.text
    (said,) = me.json()["errors"]["expires_at"]
    _named(said)
    assert later.strftime("%H:%M:%S") not in said

    millis = int(later.timestamp() * 1000)
    admin = await aged.client.post(
        "/_/token", headers=aged.admin, json={"name": "svc", "expiration_date": millis}
    )
    assert admin.status_code == 400, admin.text
    _named(admin.json()["error"])
    assert str(millis) not in admin.json()["error"]

    v1 = await aged.client.post(
        "/v1/tokens",
        headers=aged.admin,
        json={"name": "x", "owner": "o", "expireTime": later.isoformat().replace("+00:00", "Z")},
    )
    assert v1.status_code == 400, v1.text
    _named(v1.text)


async def test_admin_sending_back_the_expiry_it_read_stores_nothing(aged: LiveGateway) -> None:
    made = await aged.client.post("/_/token", headers=aged.admin, json={"name": "svc"})
    assert made.status_code == 201, made.text
    before = aged.service.snapshot()
    shown = made.json()["expiration_date"]
    again = await aged.client.put(
        "/_/token", headers=aged.admin, json={"name": "svc", "expiration_date": shown}
    )
    assert again.status_code == 200, again.text
    assert again.json()["expiration_date"] == shown
    assert aged.service.snapshot() == before


async def test_me_shows_a_pending_token_as_inactive(aged: LiveGateway) -> None:
    soon = timestamp_pb2.Timestamp()
    soon.FromSeconds(int(dt.datetime.now(dt.UTC).timestamp()) + 600)
    created = await aged.service.stub.CreateToken(
        pb.CreateTokenRequest(name="later", owner="admin", not_before=soon),
        metadata=bearer(aged.service.admin_token),
    )
    aged.service.plaintexts.append(created.plaintext)
    assert created.token.status == pb.TOKEN_STATUS_PENDING
    listed = await aged.client.get("/api/v1/me/tokens", headers=aged.admin)
    assert listed.status_code == 200, listed.text
    statuses = {item["name"]: item["status"] for item in listed.json()["data"]}
    assert statuses["later"] == "inactive"


async def test_v1_events_say_why_a_token_was_revoked_by_value(aged: LiveGateway) -> None:
    token_id, plaintext = await aged.service.create("leaked", owner="alice")
    revoked = await aged.client.post("/oauth/revoke", data={"token": plaintext})
    assert revoked.status_code == 200, revoked.text
    events = await aged.client.get(f"/v1/tokens/{token_id}/events", headers=aged.admin)
    assert events.status_code == 200, events.text
    newest = events.json()["events"][0]
    assert (newest["action"], newest["reason"]) == ("TOKEN_EVENT_ACTION_REVOKED", "by_value")
    assert newest["detail"] == ""
