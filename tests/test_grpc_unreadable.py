"""Request bytes a real ``tokengrpc serve`` cannot read: not a message, or too many.

Every method of every service it serves (found through its own reflection)
gets bytes that do not decode: INVALID_ARGUMENT with a fixed message, one
access line, no traceback. A message over ``--grpc-max-receive-bytes`` is
RESOURCE_EXHAUSTED, except to Check, which never fails a check: it denies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers import bearer
from tests.processes import Serving, serve
from tokengrpc.reflection import register_v1_descriptor
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

#: Small, so that an oversized message is cheap to send.
LIMIT = 4096
#: Not a protobuf message: field 0 does not exist, and the varint never ends.
GARBAGE = b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
FIXED_MESSAGE = "the request is not a valid message"

# The descriptors of every service a server may list (importing registers them).
_REGISTERED = (pb, health_pb2, reflection_pb2, external_auth_pb2)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Serving]:
    serving = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--grpc-max-receive-bytes", str(LIMIT), "--log-format", "json",
    )  # fmt: skip
    try:
        yield serving
    finally:
        if serving.process.returncode is None:
            await serving.stop()


async def _served_methods(channel: grpc.aio.Channel) -> list[MethodDescriptor]:
    """Every method of every service the server lists through reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request])):
        names = [service.name for service in answer.list_services_response.service]
    register_v1_descriptor()
    pool = descriptor_pool.Default()
    return [method for name in names for method in pool.FindServiceByName(name).methods]


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, body: bytes) -> None:
    """Send ``body`` as the request bytes of ``method``; raise with what came back."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = bearer("1|tgr_not-a-token")
    if method.client_streaming:
        both: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(path)
        async for _ in both(iter([body]), metadata=metadata, timeout=10):
            pass
    elif method.server_streaming:
        answers: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)
        async for _ in answers(body, metadata=metadata, timeout=10):
            pass
    else:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
        await unary(body, metadata=metadata, timeout=10)


def _access_lines(output: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [record for record in records if record.get("logger") == "tokengrpc.access"]


async def test_bytes_that_are_not_a_message_are_invalid_argument_everywhere(
    server: Serving,
) -> None:
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        methods = await _served_methods(channel)
        assert len(methods) >= 15  # TokenService, health, both reflections, Check
        answers: dict[str, tuple[grpc.StatusCode, str | None]] = {}
        for method in methods:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _call(channel, method, GARBAGE)
            answers[method.full_name] = raised.value.code(), raised.value.details()
    assert answers == {
        method.full_name: (grpc.StatusCode.INVALID_ARGUMENT, FIXED_MESSAGE) for method in methods
    }
    code, output = await server.stop()
    assert code == 0, output
    assert "Traceback" not in output
    assert "DecodeError" not in output
    statuses = {
        str(line["method"]): line["status"]
        for line in _access_lines(output)
        if "ServerReflection" not in str(line["method"]) or line["status"] != "OK"
    }
    for method in methods:
        assert statuses[f"/{method.containing_service.full_name}/{method.name}"] == (
            "INVALID_ARGUMENT"
        )


async def test_an_oversized_message_is_resource_exhausted_but_an_oversized_check_is_denied(
    server: Serving, tmp_path: Path
) -> None:
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    padding = "x" * LIMIT
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        create = channel.unary_unary(
            "/tokengrpc.v1.TokenService/CreateToken",
            request_serializer=pb.CreateTokenRequest.SerializeToString,
            response_deserializer=pb.CreateTokenResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create(pb.CreateTokenRequest(name=padding), metadata=bearer(admin), timeout=10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert padding not in str(raised.value.details())

        check = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        request = external_auth_pb2.CheckRequest()
        request.attributes.request.http.headers["authorization"] = f"Bearer {admin}"
        request.attributes.request.http.body = padding
        answer = await check(request, metadata=bearer(admin), timeout=10)
        assert answer.status.code != 0
        assert answer.denied_response.status.code == 413
        assert json.loads(answer.denied_response.body) == {"error": "Request too large."}
        assert not answer.HasField("ok_response")
        # The same request within the limit is read and allowed: the limit made the difference.
        request.attributes.request.http.body = ""
        allowed = await check(request, metadata=bearer(admin), timeout=10)
        assert allowed.HasField("ok_response"), allowed
    code, output = await server.stop()
    assert code == 0, output
    assert "Traceback" not in output
    checks = [line for line in _access_lines(output) if str(line["method"]).endswith("/Check")]
    assert [line["status"] for line in checks] == ["OK", "OK"]


async def test_a_compressed_request_is_refused_before_it_is_inflated(
    server: Serving, tmp_path: Path
) -> None:
    """A few KiB of gzip would inflate to the limit per stream: compressed
    requests are UNIMPLEMENTED, whatever they hold; plain ones still work."""
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        bomb = pb.IntrospectTokenRequest(token="x" * (LIMIT * 2 - 64))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.IntrospectToken(
                bomb, metadata=bearer(admin), compression=grpc.Compression.Gzip, timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        plain = await stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=admin), metadata=bearer(admin), timeout=10
        )
        assert plain.active
    code, output = await server.stop()
    assert code == 0, output
    assert "Traceback" not in output
