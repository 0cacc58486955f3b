"""grpcurl, the real binary, against a live server: reflection is enough."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from tests.helpers import LiveService

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


async def grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_list_and_describe_without_proto_files(service: LiveService) -> None:
    services = (await grpcurl(service.target, "list")).split()
    assert "tokengrpc.v1.TokenService" in services
    assert "grpc.health.v1.Health" in services
    described = await grpcurl(service.target, "describe", "tokengrpc.v1.TokenService")
    for rpc in ("CreateToken", "ListTokens", "GetToken", "UpdateToken", "RevokeToken"):
        assert f"rpc {rpc} (" in described
    assert "rpc IntrospectToken ( .tokengrpc.v1.IntrospectTokenRequest )" in described
    message = await grpcurl(service.target, "describe", "tokengrpc.v1.Token")
    assert ".google.protobuf.Timestamp expire_time = 6;" in message


async def test_health_check(service: LiveService) -> None:
    answer = json.loads(await grpcurl(service.target, "grpc.health.v1.Health/Check"))
    assert answer == {"status": "SERVING"}


async def test_create_list_revoke_with_the_bootstrap_token(service: LiveService) -> None:
    auth = ("-H", f"authorization: Bearer {service.admin_token}")
    created = json.loads(
        await grpcurl(
            *auth,
            "-d",
            '{"name": "from grpcurl", "scopes": ["write"]}',
            service.target,
            "tokengrpc.v1.TokenService/CreateToken",
        )
    )
    service.plaintexts.append(created["plaintext"])
    token_id = created["token"]["id"]
    assert created["token"]["name"] == "from grpcurl"
    assert created["token"]["status"] == "TOKEN_STATUS_ACTIVE"
    assert created["plaintext"].startswith(f"{token_id}|tgr_")

    listed = json.loads(
        await grpcurl(*auth, "-d", "{}", service.target, "tokengrpc.v1.TokenService/ListTokens")
    )
    assert [t["name"] for t in listed["tokens"]] == ["bootstrap", "from grpcurl"]

    revoked = json.loads(
        await grpcurl(
            *auth,
            "-d",
            json.dumps({"id": token_id}),
            service.target,
            "tokengrpc.v1.TokenService/RevokeToken",
        )
    )
    assert revoked["token"]["status"] == "TOKEN_STATUS_REVOKED"


async def test_errors_show_up_in_grpcurl(service: LiveService) -> None:
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-d",
        "{}",
        service.target,
        "tokengrpc.v1.TokenService/ListTokens",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode != 0
    assert "Unauthenticated" in err.decode()
