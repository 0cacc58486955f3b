"""Traces of a real ``tokengrpc serve`` and ``tokengrpc gateway``, exported to a real
OTLP/gRPC receiver in the test: parentage in process and over the network, a
client's ``traceparent`` and Check's checked headers continued, the attributes,
the access log's ids, no secret in any exported byte, and nothing sent when off."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.helpers import bearer
from tests.otlp import Received, receiver
from tests.processes import Serving, children, clean_env, serve, start_gateway
from tokengrpc import plaintext, tracing
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
#: Trace and span ids a client (or the request Envoy checks) would send.
GRPC_TRACE, GRPC_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CHECKED_TRACE, CHECKED_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
HTTP_TRACE, HTTP_SPAN = "5c4e1b2f9a8d7e6f5c4e1b2f9a8d7e6f", "1a2b3c4d5e6f7a8b"
FORWARD_TRACE, FORWARD_SPAN = "7d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a", "2b3c4d5e6f7a8b9c"
#: A Check of a token never issued, and a forward check refused for a scope.
UNKNOWN_TRACE, UNKNOWN_SPAN = "3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b", "3c4d5e6f7a8b9c0d"
DENIED_TRACE, DENIED_SPAN = "9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d", "4d5e6f7a8b9c0d1e"


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


async def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> Serving:
    return await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--log-format", "json", *args,
        until="http", env=clean_env(**env),
    )  # fmt: skip


def _access_lines(output: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "tokengrpc.access"]


def _named(name: str) -> Callable[[Received], bool]:
    return lambda span: span.name == name


async def _health(channel: grpc.aio.Channel) -> None:
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())


async def test_spans_continue_the_callers_trace_and_hold_no_secret(tmp_path: Path) -> None:
    async with receiver() as otlp:
        server = await _serve(tmp_path, otlp.env())
        try:
            admin = (tmp_path / "bootstrap-token").read_text().strip()
            async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
                made = await tokens_pb2_grpc.TokenServiceStub(channel).CreateToken(
                    pb.CreateTokenRequest(name="app", owner="alice", scopes=["read"]),
                    metadata=(
                        *bearer(admin),
                        ("traceparent", traceparent(GRPC_TRACE, GRPC_SPAN)),
                        ("x-request-id", "req-7"),
                    ),
                )
                checked = external_auth_pb2.CheckRequest()
                http = checked.attributes.request.http
                http.headers["authorization"] = f"Bearer {made.plaintext}"
                http.headers["traceparent"] = traceparent(CHECKED_TRACE, CHECKED_SPAN)
                checked.attributes.source.address.socket_address.address = "127.0.0.1"
                answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                    checked, metadata=bearer(admin)
                )
                assert answer.status.code == 0
                unknown = plaintext.join(made.token.id + 1000, plaintext.new_secret("tgr_"))
                http.headers["authorization"] = f"Bearer {unknown}"
                http.headers["traceparent"] = traceparent(UNKNOWN_TRACE, UNKNOWN_SPAN)
                answer = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                    checked, metadata=bearer(admin)
                )
                assert answer.denied_response.status.code == 401
            async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
                got = await client.get(
                    f"/v1/tokens/{made.token.id}",
                    headers={
                        "Authorization": f"Bearer {admin}",
                        "traceparent": traceparent(HTTP_TRACE, HTTP_SPAN),
                    },
                )
                assert got.status_code == 200
                refused = await client.get(
                    "/api/v1/me/tokens", headers={"Authorization": "Bearer not-a-token"}
                )
                assert refused.status_code == 401
                # A proxy's forward-auth checks: the protected request's trace goes on.
                for path, (trace, span), status in (
                    ("/auth/check/protected/page", (FORWARD_TRACE, FORWARD_SPAN), 200),
                    ("/auth/check?scope=deploy", (DENIED_TRACE, DENIED_SPAN), 403),
                ):
                    headers = {
                        "Authorization": f"Bearer {made.plaintext}",
                        "traceparent": traceparent(trace, span),
                    }
                    assert (await client.get(path, headers=headers)).status_code == status

            created = (await otlp.wait_for(_named("tokengrpc.v1.TokenService/CreateToken")))[0]
            assert created.span.kind == SERVER
            assert (created.trace_id, created.parent_id) == (GRPC_TRACE, GRPC_SPAN)
            assert created.attributes == {
                "rpc.system": "grpc",
                "rpc.service": "tokengrpc.v1.TokenService",
                "rpc.method": "CreateToken",
                "rpc.grpc.status_code": 0,
                "client.address": "127.0.0.1",
                "tokengrpc.token_id": 1,  # the bootstrap token's id, an integer
            }
            assert created.resource["service.name"] == "tokengrpc"

            check = (await otlp.wait_for(_named("envoy.service.auth.v3.Authorization/Check")))[0]
            assert (check.trace_id, check.parent_id) == (CHECKED_TRACE, CHECKED_SPAN)
            assert check.attributes["tokengrpc.token_id"] == made.token.id  # the checked one
            # Envoy's own token is on the access line; an unknown one's span names nobody.
            (unknown_check,) = await otlp.wait_for(lambda s: s.trace_id == UNKNOWN_TRACE)
            assert "tokengrpc.token_id" not in unknown_check.attributes

            route = "GET /v1/tokens/{id}"
            outer = (await otlp.wait_for(_named(route)))[0]
            assert outer.span.kind == SERVER
            assert (outer.trace_id, outer.parent_id) == (HTTP_TRACE, HTTP_SPAN)
            assert outer.attributes == {
                "http.request.method": "GET",
                "url.scheme": "http",
                "http.route": "/v1/tokens/{id}",
                "http.response.status_code": 200,
                "client.address": "127.0.0.1",
                "tokengrpc.token_id": 1,
            }
            inner = (await otlp.wait_for(_named("tokengrpc.v1.TokenService/GetToken")))[0]
            assert (inner.trace_id, inner.parent_id) == (HTTP_TRACE, outer.span_id)
            assert inner.attributes["tokengrpc.token_id"] == 1

            checking = (await otlp.wait_for(_named("GET /auth/check")))[0]
            assert (checking.trace_id, checking.parent_id) == (FORWARD_TRACE, FORWARD_SPAN)
            assert checking.attributes["tokengrpc.token_id"] == made.token.id  # the checked one
            behind = (await otlp.wait_for(_named("tokengrpc.v1.TokenService/CheckToken")))[0]
            assert (behind.trace_id, behind.parent_id) == (FORWARD_TRACE, checking.span_id)
            assert behind.attributes["tokengrpc.token_id"] == made.token.id
            # Refused for a scope: both spans name the token refused.
            refusal = await otlp.wait_for(lambda s: s.trace_id == DENIED_TRACE, 2)
            assert {s.name: s.attributes.get("tokengrpc.token_id") for s in refusal} == {
                "GET /auth/check": made.token.id,
                "tokengrpc.v1.TokenService/CheckToken": made.token.id,
            }

            problem = (await otlp.wait_for(_named("GET /api/v1/me/tokens")))[0]
            assert uuid.UUID(refused.headers["x-trace-id"]).hex == problem.trace_id
            assert refused.json()["trace_id"] == refused.headers["x-trace-id"]
            assert "tokengrpc.token_id" not in problem.attributes
        finally:
            code, output = await server.stop()
        assert code == 0, output

    secrets = [admin, made.plaintext, made.plaintext.split("|", 1)[1]]
    assert otlp.raw
    for raw in otlp.raw:
        for secret in secrets:
            assert secret.encode() not in raw
    access = _access_lines(output)
    by_method = {(line["method"], line["route"]): line for line in access}
    grpc_line = by_method["/tokengrpc.v1.TokenService/CreateToken", None]
    assert (grpc_line["trace_id"], grpc_line["request_id"]) == (GRPC_TRACE, "req-7")
    assert by_method["GET", "/v1/tokens/{id}"]["trace_id"] == HTTP_TRACE
    assert by_method["GET", "/api/v1/me/tokens"]["trace_id"] == problem.trace_id


async def test_the_network_gateway_passes_the_trace_on(tmp_path: Path) -> None:
    async with receiver() as otlp:
        server = await serve(
            "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
            env=clean_env(**otlp.env()),
        )  # fmt: skip
        gateway = await start_gateway(server.address("grpc"), env=clean_env(**otlp.env()))
        try:
            admin = (tmp_path / "bootstrap-token").read_text().strip()
            async with httpx.AsyncClient(base_url=f"http://{gateway.address('http')}") as client:
                got = await client.get(
                    "/v1/tokens/1",
                    headers={
                        "Authorization": f"Bearer {admin}",
                        "traceparent": traceparent(HTTP_TRACE, HTTP_SPAN),
                    },
                )
                assert got.status_code == 200
            outer = (await otlp.wait_for(_named("GET /v1/tokens/{id}")))[0]
            inner = (await otlp.wait_for(_named("tokengrpc.v1.TokenService/GetToken")))[0]
        finally:
            await gateway.stop()
            await server.stop()
    assert outer.resource["process.pid"] == gateway.process.pid
    assert inner.resource["process.pid"] == server.process.pid
    assert (outer.trace_id, outer.parent_id) == (HTTP_TRACE, HTTP_SPAN)
    assert (inner.trace_id, inner.parent_id) == (HTTP_TRACE, outer.span_id)
    assert inner.attributes["tokengrpc.token_id"] == 1


async def test_every_worker_exports_its_spans(tmp_path: Path) -> None:
    async with receiver() as otlp:
        server = await _serve(tmp_path, otlp.env(), "--workers", "2")
        try:
            workers = {server.process.pid, *children(server.process.pid)}
            assert len(workers) == 2
            seen: set[object] = set()
            # Each new connection lands on one of the processes (SO_REUSEPORT):
            # call on fresh ones until both have answered, a bounded number of times.
            for _ in range(200):
                async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
                    await _health(channel)
                spans = await otlp.wait_for(_named("grpc.health.v1.Health/Check"), len(seen) + 1)
                seen = {span.resource["process.pid"] for span in spans}
                if seen == workers:
                    break
        finally:
            await server.stop()
    assert seen == workers


@pytest.mark.parametrize(
    "off", [{"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SDK_DISABLED": "true"}], ids=str
)
async def test_off_nothing_is_sent(tmp_path: Path, off: dict[str, str]) -> None:
    """An endpoint is set, but so is "off": not even a connection is attempted."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50", **off}
        server = await _serve(tmp_path, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
                assert (await client.get("/healthz")).status_code == 200
            async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
                await _health(channel)
        finally:
            code, output = await server.stop()  # traced, the exit would flush its spans
        assert code == 0, output
        with pytest.raises(BlockingIOError):
            listener.accept()
    access = _access_lines(output)
    assert len(access) == 2
    assert all(line["trace_id"] is None for line in access)


def test_which_variables_turn_tracing_on() -> None:
    endpoint = "http://collector:4317"
    assert tracing.exporters({}) == ()
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "otlp"}) == ("otlp",)
    assert tracing.exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}) == ("otlp",)
    assert tracing.exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}) == ("otlp",)
    assert tracing.exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                              "OTEL_TRACES_EXPORTER": "none"}) == ()  # fmt: skip
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == ()
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ("otlp", "console")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER") as refused:
        tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert "zipkin" not in str(refused.value)  # a value sent is never repeated


def test_off_the_sdk_is_never_imported() -> None:
    """Off costs nothing: not even the import of the SDK, by anything serve loads."""
    probe = (
        "import sys\n"
        "import gateway.app, tokengrpc.cli, tokengrpc.commands.serve\n"
        "from tokengrpc import plaintext, tracing\n"
        "assert tracing.start({}) is None\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
