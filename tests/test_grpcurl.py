"""grpcurl, the real binary, against a live server: reflection is enough."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha.reflection_pb2 import (
    ServerReflectionRequest,
    ServerReflectionResponse,
)

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


async def test_list_shows_both_reflection_services(service: LiveService) -> None:
    services = (await grpcurl(service.target, "list")).split()
    assert "grpc.reflection.v1.ServerReflection" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    described = await grpcurl(service.target, "describe", "grpc.reflection.v1.ServerReflection")
    assert (
        "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )"
        in described
    )
    message = await grpcurl(
        service.target, "describe", "grpc.reflection.v1.ServerReflectionResponse"
    )
    assert ".grpc.reflection.v1.ListServiceResponse list_services_response = 6;" in message


async def _ask_v1(
    service: LiveService, request: ServerReflectionRequest
) -> ServerReflectionResponse:
    """One request over ``grpc.reflection.v1`` on a raw channel, as a v1-only client sends it."""
    call = service.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=ServerReflectionRequest.SerializeToString,
        response_deserializer=ServerReflectionResponse.FromString,
    )
    answers = [answer async for answer in call(iter([request]), timeout=10)]
    assert len(answers) == 1
    answer: ServerReflectionResponse = answers[0]
    return answer


async def test_reflection_v1_lists_and_describes(service: LiveService) -> None:
    listed = await _ask_v1(service, ServerReflectionRequest(list_services=""))
    names = [s.name for s in listed.list_services_response.service]
    assert len(names) == len(set(names))
    assert {
        "tokengrpc.v1.TokenService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(names)
    found = await _ask_v1(
        service, ServerReflectionRequest(file_containing_symbol="tokengrpc.v1.TokenService")
    )
    # The files (the service's and its imports) build a pool that knows every RPC.
    pool = descriptor_pool.DescriptorPool()
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dependency in by_name[name].dependency:
            add(dependency)
        pool.Add(by_name[name])
        added.add(name)

    for name in by_name:
        add(name)
    methods = {m.name for m in pool.FindServiceByName("tokengrpc.v1.TokenService").methods}
    assert {"CreateToken", "ListTokens", "IntrospectToken"} <= methods
    itself = await _ask_v1(
        service, ServerReflectionRequest(file_by_filename="grpc/reflection/v1/reflection.proto")
    )
    (raw,) = itself.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"
    missing = await _ask_v1(service, ServerReflectionRequest(file_containing_symbol="no.Such"))
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
