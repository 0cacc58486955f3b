"""Every setting given to ``serve`` reaches every ``--workers`` process (CONTRACT section 5).

Each setting is given once as a flag and once as a variable, and its effect is
observed over many new connections: the kernel hands each new connection to
one of the processes sharing the port, so all of them answering alike means
every worker has it (a process missing from 24 connections: 1 in 2**23).
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from tests.certs import make_pki
from tests.helpers import bearer
from tests.postgres import PASSWORD
from tests.processes import clean_env, serve
from tokengrpc.config import OPTIONS, Settings, from_json, to_json
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

CONNECTIONS = 24
PREFIX = "wkr_"


def _given(
    how: str, values: dict[str, str], switches: tuple[str, ...]
) -> tuple[list[str], dict[str, str]]:
    """``values`` (and switches turned off) as flags or as variables, named by the table."""
    options = {option.field: option for option in OPTIONS}
    args: list[str] = []
    env: dict[str, str] = {}
    for field, value in values.items():
        option = options[field]
        if how == "flags" and option.flag_name is not None:
            args += [option.flag_name, value]
        else:
            env[option.variable_name] = value
    for field in switches:
        option = options[field]
        if how == "flags" and option.flag_name is not None:
            args.append(option.flag_name)
        else:
            env[option.variable_name] = "off"
    return args, env


@pytest.mark.parametrize("how", ["flags", "variables"])
async def test_every_setting_reaches_every_worker(
    how: str, database_url: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.server()
    data = tmp_path / "data"
    values = {
        "workers": "2",
        "data_dir": str(data),
        "database_url": database_url,
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "tls_cert": str(cert),
        "tls_key": str(key),
        "log_format": "json",
        "http_max_head_bytes": "4096",
        "grpc_max_receive_bytes": "2048",
        "token_prefix": PREFIX,
        "trusted_proxies": "",
        "max_secret_age": "30d",
        # A secret has no flag: a variable either way.
        "secret_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    args, env = _given(how, values, ("metrics_enabled",))
    server = await serve(*args, env=clean_env(**env), until="http")
    try:
        admin = (data / "bootstrap-token").read_text().strip()
        tls = ssl.create_default_context(cafile=str(pki.ca_file))
        http = f"https://{server.address('http')}"
        created: list[str] = []
        for n in range(CONNECTIONS):
            # A client per request: a new connection each time.
            async with httpx.AsyncClient(base_url=http, verify=tls, timeout=10) as client:
                made = await client.post(
                    "/v1/tokens",
                    json={"name": f"w{n}", "owner": "alice"},
                    headers={"Authorization": f"Bearer {admin}", "X-Forwarded-For": "203.0.113.9"},
                )
                assert made.status_code == 200, made.text  # the database and data dir, over TLS
                assert "expireTime" in made.json()["token"]  # the maximum secret age
                created.append(made.json()["plaintext"])
                big = await client.get("/healthz", headers={"X-Padding": "x" * 5000})
                assert big.status_code == 431  # the HTTP limit
                assert (await client.get("/metrics")).status_code == 404  # metrics off
        assert all(plaintext.partition("|")[2].startswith(PREFIX) for plaintext in created)

        credentials = grpc.ssl_channel_credentials(pki.ca_file.read_bytes())
        for _ in range(CONNECTIONS):
            async with grpc.aio.secure_channel(
                server.address("grpc"),
                credentials,
                options=(("grpc.use_local_subchannel_pool", 1),),
            ) as channel:
                stub = tokens_pb2_grpc.TokenServiceStub(channel)
                await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(created[0]))
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.ListTokens(
                        pb.ListTokensRequest(owner="o" * 3000), metadata=bearer(admin)
                    )
                assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        connection = await asyncpg.connect(database_url)
        try:
            stored = await connection.fetchval("SELECT count(*) FROM tokens")
            addresses = await connection.fetch("SELECT DISTINCT client_ip FROM token_events")
        finally:
            await connection.close()
        assert stored == 1 + CONNECTIONS, "every worker wrote to the one database"
        # Trusting no proxy, nobody believed the X-Forwarded-For.
        assert {row[0] for row in addresses} <= {"", "127.0.0.1"}
    finally:
        code, rest = await server.stop()
    assert code == 0
    assert not (data / "tokens.db").exists(), "no worker fell back to SQLite"
    assert not (data / "secret.key").exists(), "every worker had the key"
    output = "\n".join(server.lines) + "\n" + rest
    access = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    # The create and /metrics of each connection (a 431 comes before there is a request).
    assert sum(1 for line in access if line.get("surface") == "http") == 2 * CONNECTIONS
    assert "tokengrpc.access:" not in output, "a worker logged text"
    assert PASSWORD not in output
    warned = "TOKENGRPC_DATABASE_URL" in output
    assert warned == (how == "flags"), "a password on the command line is warned about"


@pytest.mark.parametrize("how", ["flags", "variables"])
async def test_no_access_log_reaches_every_worker(how: str, tmp_path: Path) -> None:
    values = {"workers": "2", "data_dir": str(tmp_path), "http_listen": "127.0.0.1:0",
              "grpc_listen": "127.0.0.1:0"}  # fmt: skip
    args, env = _given(how, values, ("access_log",))
    server = await serve(*args, env=clean_env(**env), until="http")
    http = f"http://{server.address('http')}"
    for _ in range(CONNECTIONS):
        async with httpx.AsyncClient(base_url=http, timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
    code, rest = await server.stop()
    assert code == 0
    assert "tokengrpc.access" not in rest


def test_settings_travel_whole() -> None:
    """Every field, set to something other than its default, comes back as it went."""
    changed: dict[str, object] = {}
    for item in Settings.__dataclass_fields__.values():
        default = getattr(Settings(), item.name)
        if isinstance(default, bool):
            changed[item.name] = not default
        elif isinstance(default, int | float):
            changed[item.name] = default + 1
        elif isinstance(default, tuple):
            changed[item.name] = ("10.0.0.0/8",)
        elif isinstance(default, Path) or "Path" in str(item.type):
            changed[item.name] = Path(f"/x/{item.name}")
        else:
            changed[item.name] = f"value of {item.name}"
    settings = Settings(**changed)  # type: ignore[arg-type]
    assert all(getattr(settings, name) != getattr(Settings(), name) for name in changed)
    assert from_json(to_json(settings)) == settings
