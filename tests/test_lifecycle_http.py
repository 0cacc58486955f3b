"""The token lifecycle over HTTP: the canonical routes from the annotations,
``POST /oauth/revoke`` (RFC 7009) and the admin family's value after a rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LiveGateway
from tests.processes import clean_env, new_store, run_cli


async def _works(gateway: LiveGateway, token: str) -> bool:
    answer = await gateway.client.get("/v1/tokens", headers=gateway.auth(token))
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


async def _create(gateway: LiveGateway, **body: object) -> tuple[str, str]:
    answer = await gateway.client.post("/v1/tokens", json=body, headers=gateway.admin)
    assert answer.status_code == 200, answer.text
    created = answer.json()
    gateway.service.plaintexts.append(created["plaintext"])
    return created["token"]["id"], created["plaintext"]


async def test_rotate_with_grace_over_http(gateway: LiveGateway) -> None:
    token_id, old = await _create(gateway, name="ci", owner="alice", scopes=["write"])
    answer = await gateway.client.post(
        f"/v1/tokens/{token_id}:rotate", json={"grace_period": "1s"}, headers=gateway.admin
    )
    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    new = rotated["plaintext"]
    gateway.service.plaintexts.append(new)
    assert rotated["token"]["id"] == token_id
    assert await _works(gateway, old)
    assert await _works(gateway, new)
    gateway.service.clock.advance(1.2)  # past the one-second grace, once
    assert not await _works(gateway, old)
    assert await _works(gateway, new)


async def test_rotated_service_token_value_over_the_admin_family(gateway: LiveGateway) -> None:
    _, old = await _create(gateway, name="deploy", service_token=True)
    answer = await gateway.client.post(
        "/v1/service-tokens/deploy:rotate", json={}, headers=gateway.admin
    )
    assert answer.status_code == 200, answer.text
    new = answer.json()["plaintext"]
    gateway.service.plaintexts.append(new)
    value = await gateway.client.get("/_/token/value?name=deploy", headers=gateway.admin)
    assert value.status_code == 200, value.text
    assert value.json() == {"name": "deploy", "value": new}
    assert new != old


@pytest.mark.parametrize(
    "grace", ["-1s", "604801s", "bogus", "1", 5, "1.5.3s", "9999999999999999999s"]
)
async def test_bad_grace_periods_over_http(gateway: LiveGateway, grace: object) -> None:
    token_id, plaintext = await _create(gateway, name="ci", owner="alice")
    before = gateway.service.snapshot()
    answer = await gateway.client.post(
        f"/v1/tokens/{token_id}:rotate", json={"grace_period": grace}, headers=gateway.admin
    )
    assert answer.status_code == 400, answer.text
    assert "grace_period" in answer.text
    assert gateway.service.snapshot() == before
    assert await _works(gateway, plaintext)


async def test_rotate_a_revoked_token_over_http(gateway: LiveGateway) -> None:
    token_id, _ = await _create(gateway, name="ci", owner="alice")
    revoked = await gateway.client.delete(f"/v1/tokens/{token_id}", headers=gateway.admin)
    assert revoked.status_code == 200
    answer = await gateway.client.post(
        f"/v1/tokens/{token_id}:rotate", json={}, headers=gateway.admin
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == 9  # FAILED_PRECONDITION


async def test_revoke_by_value_on_the_canonical_route_needs_no_auth(gateway: LiveGateway) -> None:
    _, plaintext = await _create(gateway, name="leaked", owner="alice")
    for _ in range(2):  # known, then already revoked: the same answer
        answer = await gateway.client.post("/v1/tokens:revokeByValue", json={"token": plaintext})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {}
    assert not await _works(gateway, plaintext)
    unknown = await gateway.client.post("/v1/tokens:revokeByValue", json={"token": "9|nope"})
    assert (unknown.status_code, unknown.json()) == (200, {})
    missing = await gateway.client.post("/v1/tokens:revokeByValue", json={})
    assert missing.status_code == 400
    assert plaintext not in missing.text


async def test_oauth_revoke_rfc_7009(gateway: LiveGateway) -> None:
    token_id, plaintext = await _create(gateway, name="leaked", owner="alice")
    unknown = plaintext.replace(f"{token_id}|", "999999|", 1)
    answers = []
    for token in (plaintext, plaintext, unknown, "garbage"):
        answer = await gateway.client.post(
            "/oauth/revoke", data={"token": token, "token_type_hint": "access_token"}
        )
        answers.append((answer.status_code, answer.content))
    assert answers == [(200, b"")] * 4
    assert not await _works(gateway, plaintext)
    before = gateway.service.snapshot()
    for body in ({}, {"token": ""}, {"token_type_hint": "access_token"}):
        missing = await gateway.client.post("/oauth/revoke", data=body)
        assert missing.status_code == 400
        assert missing.json() == {"error": "invalid_request"}
    assert gateway.service.snapshot() == before


async def test_oauth_revoke_of_a_replaced_secret_ends_only_its_grace(
    gateway: LiveGateway,
) -> None:
    token_id, old = await _create(gateway, name="ci", owner="alice", scopes=["write"])
    answer = await gateway.client.post(
        f"/v1/tokens/{token_id}:rotate", json={"grace_period": "600s"}, headers=gateway.admin
    )
    assert answer.status_code == 200, answer.text
    new = answer.json()["plaintext"]
    gateway.service.plaintexts.append(new)
    revoked = await gateway.client.post("/oauth/revoke", data={"token": old})
    assert (revoked.status_code, revoked.content) == (200, b"")
    assert not await _works(gateway, old)
    assert await _works(gateway, new)


async def test_events_over_http(gateway: LiveGateway) -> None:
    token_id, plaintext = await _create(gateway, name="ci", owner="alice", scopes=["write"])
    await _create(gateway, name="other", owner="bob")
    rotated = await gateway.client.post(
        f"/v1/tokens/{token_id}:rotate", json={}, headers=gateway.auth(plaintext)
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["plaintext"]
    gateway.service.plaintexts.append(new)
    mine = await gateway.client.get(f"/v1/tokens/{token_id}/events", headers=gateway.auth(new))
    assert mine.status_code == 200, mine.text
    events = mine.json()["events"]
    assert [e["action"] for e in events] == [
        "TOKEN_EVENT_ACTION_ROTATED",
        "TOKEN_EVENT_ACTION_CREATED",
    ]
    assert events[0]["actorTokenId"] == token_id
    assert events[0]["clientIp"] == "127.0.0.1"
    assert new not in mine.text
    assert plaintext.partition("|")[2] not in mine.text
    listed = await gateway.client.get("/v1/events", headers=gateway.auth(new))
    assert {e["tokenId"] for e in listed.json()["events"]} == {token_id}
    everything = await gateway.client.get("/v1/events?page_size=2", headers=gateway.admin)
    assert len(everything.json()["events"]) == 2
    assert everything.json()["nextPageToken"]


@pytest.mark.parametrize(
    "query",
    ["page_size=abc", "page_size=-1", "page_token=forged", "page_size=99999999999", "bogus=1"],
)
async def test_bad_event_queries_over_http(gateway: LiveGateway, query: str) -> None:
    before = gateway.service.snapshot()
    answer = await gateway.client.get(f"/v1/events?{query}", headers=gateway.admin)
    assert answer.status_code == 400, answer.text
    assert gateway.service.snapshot() == before


async def test_last_use_ip_over_http(gateway: LiveGateway) -> None:
    token_id, plaintext = await _create(gateway, name="ci", owner="alice")
    assert await _works(gateway, plaintext)
    answer = await gateway.client.get(f"/v1/tokens/{token_id}", headers=gateway.admin)
    assert answer.json()["lastUseIp"] == "127.0.0.1"


async def test_the_document_lists_the_lifecycle_routes(gateway: LiveGateway) -> None:
    paths = (await gateway.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/tokens/{id}:rotate",
        "/v1/service-tokens/{name}:rotate",
        "/v1/tokens:revokeByValue",
        "/v1/events",
        "/v1/tokens/{token_id}/events",
        "/oauth/revoke",
    ):
        assert "post" in paths[path] or "get" in paths[path], path


def test_cli_rotate_and_events(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    env = clean_env()
    new_store(data)
    created = run_cli("token", "create", "--data-dir", data, "--name", "ci", "--service", env=env)
    assert created.returncode == 0, created.stderr
    old = created.stdout.strip()
    rotated = run_cli("token", "rotate", "--data-dir", data, "ci", "--grace", "1h30m", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith(old.partition("|")[0] + "|")
    assert new != old
    bad = run_cli("token", "rotate", "--data-dir", data, "ci", "--grace", "8d", env=env)
    assert bad.returncode == 1
    assert "grace_period" in bad.stderr
    malformed = run_cli("token", "rotate", "--data-dir", data, "ci", "--grace", "soon", env=env)
    assert malformed.returncode == 2
    events = run_cli("token", "events", "--data-dir", data, env=env)
    assert events.returncode == 0, events.stderr
    lines = events.stdout.splitlines()
    assert lines[0].startswith("TIME\tACTION")
    assert [line.split("\t")[1] for line in lines[1:]] == ["rotated", "created"]
    assert [line.split("\t")[3] for line in lines[1:]] == ["0", "0"]
    for secret in (old, new):
        assert secret.partition("|")[2] not in events.stdout
