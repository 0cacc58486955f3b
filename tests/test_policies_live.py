"""Policies over time end to end, in real time: ``tokengrpc serve`` with short
durations through its flags, on each engine, over HTTP; and the ``token``
commands. The clock-moving tests are in tests/test_policies.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import new_store, run_cli, serve

ENGINES = ("sqlite", "postgres")
#: How long a state may take to show (a correctness bound, never a speed).
WITHIN = 20.0


def _url(request: pytest.FixtureRequest) -> list[str]:
    engine = request.node.callspec.params["engine"]
    return ["--database", request.getfixturevalue("database_url")] if engine == "postgres" else []


async def _until(client: httpx.AsyncClient, token: str, status: int) -> float:
    """Polls ``GET /v1/tokens`` with ``token`` until it answers ``status``; returns
    the wall time (seconds) just after that answer came: the server judged the
    request no later than this."""
    deadline = time.monotonic() + WITHIN
    while True:
        answer = await _list(client, token)
        if answer.status_code == status:
            return time.time()
        assert time.monotonic() < deadline, f"still {answer.status_code}"
        await asyncio.sleep(0.05)  # real time must pass: there is no event to await


async def _list(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/tokens", headers={"Authorization": f"Bearer {token}"})


def _rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("engine", ENGINES)
async def test_secrets_stop_at_the_maximum_age_and_each_start_counts_them(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--grpc-listen", "127.0.0.1:0",
              "--http-listen", "127.0.0.1:0", *_url(request)]  # fmt: skip
    server = await serve(*common, "--max-secret-age", "3s", until="http")
    try:
        admin = (data / "bootstrap-token").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            auth = {"Authorization": f"Bearer {admin}"}
            listed = await client.get("/v1/tokens", headers=auth)
            assert listed.status_code == 200, listed.text
            (own,) = listed.json()["tokens"]
            created = dt.datetime.fromisoformat(own["createTime"]).timestamp()
            expires = dt.datetime.fromisoformat(own["expireTime"]).timestamp()
            assert expires == pytest.approx(created + 3, abs=1e-6)
            later = {"name": "later", "expireTime": _rfc3339(created + 60)}
            made = await client.post("/v1/tokens", headers=auth, json=later)
            assert made.status_code == 400
            said = made.json()["details"][0]["fieldViolations"][0]["description"]
            assert "--max-secret-age" in said
            assert "3s" in said
            stopped = await _until(client, admin, 401)
            assert stopped >= created + 3  # never before its time
    finally:
        code, _ = await server.stop()
    assert code == 0
    again = await serve(*common, "--max-secret-age", "3s", until="http")
    _, output = await again.stop()
    assert "max secret age 3s: 1 token(s) that would otherwise authenticate no longer do" in (
        "\n".join(again.lines) + output
    )


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_token_authenticates_from_its_not_before(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    server = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0",
                         "--http-listen", "127.0.0.1:0", *_url(request), until="http")  # fmt: skip
    try:
        admin = (data / "bootstrap-token").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            start = time.time() + 2
            made = await client.post(
                "/v1/tokens",
                headers={"Authorization": f"Bearer {admin}"},
                json={"name": "soon", "owner": "alice", "notBefore": _rfc3339(start)},
            )
            assert made.status_code == 200, made.text
            assert made.json()["token"]["status"] == "TOKEN_STATUS_PENDING"
            token = made.json()["plaintext"]
            assert (await _list(client, token)).status_code == 401
            began = await _until(client, token, 200)
            assert began >= start  # never before its not_before
    finally:
        code, _ = await server.stop()
    assert code == 0


def test_the_token_commands_say_pending_the_effective_expiry_and_why(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    new_store(data)
    soon = _rfc3339(time.time() + 3600)
    made = run_cli("token", "create", "--data-dir", data, "--name", "soon", "--owner", "alice",
                   "--not-before", soon)  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = run_cli("token", "list", "--data-dir", data, "--owner", "alice",
                     "--max-secret-age", "2h")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    row = listed.stdout.splitlines()[1].split("\t")
    assert row[1] == "pending"
    expires = dt.datetime.fromisoformat(row[5]).timestamp()
    assert expires == pytest.approx(time.time() + 7200, abs=120)
    with contextlib.closing(sqlite3.connect(Path(data) / "tokens.db")) as db:
        reasons = db.execute("SELECT reason, detail FROM token_events").fetchall()
    assert reasons == [("cli", "")]
