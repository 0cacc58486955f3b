"""``/metrics`` after known traffic: each counter moved by exactly what was sent,
and no label holds a token, a token id or a name."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import HttpServer, start_http
from tests.helpers import bearer
from tests.processes import clean_env, serve, start_gateway
from tokengrpc import metrics, sharedmetrics
from tokengrpc.config import Settings
from tokengrpc.metrics import SHARE_EVERY, Metrics, share_between_processes
from tokengrpc.observe import HttpObserver
from tokengrpc.server import Core, GrpcServer
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc
from tokengrpc.version import version

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: Well formed, checksum and all, but never issued: what an attacker replays.
FORGED = "7|tgr_0123456789abcdefghijABCDEFGHIJ0123456789abcdef"


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Observed:
    server: GrpcServer
    http: HttpServer
    stub: tokens_pb2_grpc.TokenServiceAsyncStub
    client: httpx.AsyncClient
    admin: str
    #: The gRPC server's HOST:PORT.
    target: str

    async def scrape(self) -> Samples:
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)


@pytest.fixture(params=["network", "in-process"])
async def observed(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Observed]:
    metrics = Metrics()
    core = await Core.open(Settings(data_dir=tmp_path, usage_flush_interval=0.05), metrics=metrics)
    server = GrpcServer(core, metrics=metrics)
    port = await server.start("127.0.0.1:0")
    target = f"127.0.0.1:{port}"
    upstream = server.in_process if request.param == "in-process" else target
    http = await start_http(upstream, "127.0.0.1:0", observer=HttpObserver(metrics, None))
    channel = grpc.aio.insecure_channel(target)
    client = httpx.AsyncClient(base_url=f"http://{http.address}")
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    try:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        yield Observed(server, http, stub, client, admin, target)
    finally:
        await client.aclose()
        await channel.close()
        await http.stop()
        await server.stop(1)
        await core.close()


async def test_grpc_counters_move_by_exactly_the_calls_made(observed: Observed) -> None:
    before = await observed.scrape()
    created = await observed.stub.CreateToken(
        pb.CreateTokenRequest(name="billing-bot", owner="alice", scopes=["write"]),
        metadata=bearer(observed.admin),
    )
    for _ in range(3):
        await observed.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(observed.admin))
    for presented in (FORGED, created.plaintext + "x"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await observed.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(presented))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for token in (created.plaintext, FORGED):
        await observed.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=token), metadata=bearer(observed.admin)
        )
    after = await observed.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    list_method = "/tokengrpc.v1.TokenService/ListTokens"
    assert delta("tokengrpc_grpc_requests_total", method=list_method, code="OK") == 3
    assert delta("tokengrpc_grpc_requests_total", method=list_method, code="UNAUTHENTICATED") == 2
    assert delta("tokengrpc_grpc_request_duration_seconds_count", method=list_method) == 5
    introspect = "/tokengrpc.v1.TokenService/IntrospectToken"
    assert delta("tokengrpc_grpc_requests_total", method=introspect, code="OK") == 2
    assert delta("tokengrpc_introspections_total", active="true") == 1
    assert delta("tokengrpc_introspections_total", active="false") == 1
    # 1 create + 3 lists + 2 introspections by the admin; 2 refused.
    assert delta("tokengrpc_authentications_total", result="ok") == 6
    assert delta("tokengrpc_authentications_total", result="failed") == 2
    _no_identifying_labels(after, [created.plaintext, FORGED, observed.admin], created.token)


async def test_http_counters_are_labelled_by_route_template(observed: Observed) -> None:
    headers = {"Authorization": f"Bearer {observed.admin}"}
    made = await observed.client.post("/api/token", json={"name": "ci-runner"}, headers=headers)
    assert made.status_code == 201
    token_id = made.json()["token"]["id"]
    before = await observed.scrape()
    for _ in range(4):
        assert (await observed.client.get("/api/token", headers=headers)).status_code == 200
    forged = {"Authorization": f"Bearer {FORGED}"}
    stranger = await observed.client.get("/api/token", headers=forged)
    assert stranger.status_code == 401
    gone = await observed.client.delete(f"/api/token/{token_id}", headers=headers)
    assert gone.status_code == 200
    again = await observed.client.delete(f"/api/token/{token_id}", headers=headers)
    assert again.status_code == 404
    fetched = await observed.client.get(f"/v1/tokens/{token_id}", headers=headers)
    assert fetched.status_code == 200
    # Routed by the template /v1/tokens/{token.id}; labelled as /openapi.json writes it.
    renamed = await observed.client.patch(
        f"/v1/tokens/{token_id}", json={"name": "ci-runner-2"}, headers=headers
    )
    assert renamed.status_code == 400  # revoked above
    for path in ("/no/such/thing", f"/{FORGED}", "/wp-admin.php"):
        assert (await observed.client.get(path)).status_code == 404
    # Forward auth: one label whatever the method and the path below it.
    for method, path in (("GET", "/auth/check"), ("PROPFIND", f"/auth/check/{FORGED}/x?a=b")):
        checked = await observed.client.request(method, path, headers=headers)
        assert checked.status_code == 200
    stranger = await observed.client.post("/auth/check/api/token", headers=forged)
    assert stranger.status_code == 401
    after = await observed.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "tokengrpc_http_requests_total"
    assert delta(requests, route="/api/token", status="200") == 4
    assert delta(requests, route="/api/token", status="401") == 1
    assert delta(requests, route="/api/token/{tokenId}", status="200") == 1
    assert delta(requests, route="/api/token/{tokenId}", status="404") == 1
    assert delta(requests, route="/v1/tokens/{id}", status="200") == 1
    assert delta(requests, route="/v1/tokens/{id}", status="400") == 1
    assert delta(requests, route="(unmatched)", status="404") == 3
    assert delta(requests, route="/auth/check", status="200") == 2
    assert delta(requests, route="/auth/check", status="401") == 1
    # The scrape before this one counted, under its own template.
    assert delta(requests, route="/metrics", status="200") == 1
    assert delta("tokengrpc_http_request_duration_seconds_count", route="/api/token") == 5
    _no_identifying_labels(after, [observed.admin, FORGED], None, ids=(token_id,))


async def test_check_decisions_the_build_and_the_process_are_exposed(observed: Observed) -> None:
    made = await observed.stub.CreateToken(
        pb.CreateTokenRequest(name="checked", owner="alice", scopes=["read"]),
        metadata=bearer(observed.admin),
    )
    before = await observed.scrape()
    async with grpc.aio.insecure_channel(observed.target) as channel:
        check = external_auth_pb2_grpc.AuthorizationStub(channel)
        # (the token checked, the scopes the route demands, Envoy's own token)
        for presented, required, envoy in (
            (made.plaintext, "", observed.admin),
            (made.plaintext, "read", observed.admin),
            (FORGED, "", observed.admin),
            (made.plaintext, "write", observed.admin),
            (made.plaintext, "", made.plaintext),  # Envoy's token lacks introspect
        ):
            request = external_auth_pb2.CheckRequest()
            request.attributes.request.http.headers["authorization"] = f"Bearer {presented}"
            request.attributes.source.address.socket_address.address = "127.0.0.1"
            if required:
                request.attributes.context_extensions["required_scopes"] = required
            await check.Check(request, metadata=bearer(envoy))
    # The same decisions over HTTP, counted under their own endpoint.
    for presented, required, status in (
        (made.plaintext, "read", 200),
        (FORGED, "", 401),
        (made.plaintext, "write", 403),
    ):
        checked = await observed.client.get(
            "/auth/check",
            headers={"authorization": f"Bearer {presented}", "x-required-scopes": required},
        )
        assert checked.status_code == status
    after = await observed.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    decisions = "tokengrpc_authz_decisions_total"
    assert delta(decisions, endpoint="Check", result="allowed") == 2
    assert delta(decisions, endpoint="Check", result="unauthenticated") == 1
    assert delta(decisions, endpoint="Check", result="forbidden") == 1
    assert delta(decisions, endpoint="Check", result="unavailable") == 1
    assert delta(decisions, endpoint="/auth/check", result="allowed") == 1
    assert delta(decisions, endpoint="/auth/check", result="unauthenticated") == 1
    assert delta(decisions, endpoint="/auth/check", result="forbidden") == 1
    assert value(after, "tokengrpc_build_info", version=version()) == 1
    assert value(after, "process_cpu_seconds_total") > 0
    assert value(after, "process_open_fds") > 0
    assert value(after, "python_gc_collections_total", generation="0") > 0
    assert any(name == "python_info" for name, _ in after)


def _no_identifying_labels(
    samples: Samples, secrets: list[str], token: pb.Token | None, ids: tuple[int, ...] = ()
) -> None:
    forbidden = [*secrets, *(s.partition("|")[2] for s in secrets)]
    names = {"billing-bot", "ci-runner", "alice"}
    identifiers = {str(i) for i in ids} | ({str(token.id)} if token is not None else set())
    for _, labels in samples:
        for label, text in labels:
            assert not any(secret in text for secret in forbidden), label
            assert text not in names, (label, text)
            if label in ("route", "method"):
                assert not any(f"/{i}" in text for i in identifiers), (label, text)


async def test_workers_are_summed_in_one_scrape(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--http-listen",
        "127.0.0.1:0", "--workers", "2", "--metrics-listen", "127.0.0.1:0", until="metrics",
    )  # fmt: skip
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    sent = 40
    try:
        http, scraper = server.address("http"), server.address("metrics")
        # A connection per request, so that the kernel spreads them over both processes
        # (SO_REUSEPORT hashes each connection: 40 on one process is a 1 in 2**39 chance).
        for _ in range(sent):
            async with httpx.AsyncClient(base_url=f"http://{http}") as client:
                response = await client.get("/healthz")
                assert response.status_code == 200
        async with httpx.AsyncClient() as client:
            timed = "tokengrpc_http_request_duration_seconds_count"

            async def settled(url: str) -> tuple[Samples, str]:
                """Each process copies its numbers to its shared file every SHARE_EVERY
                seconds: another process's part may show a moment late, never wrong
                (each metric of it: a scrape may fall between the counter and the timing)."""
                deadline = time.monotonic() + 10 * SHARE_EVERY
                while True:
                    text = (await client.get(url)).text
                    samples = parse(text)
                    total = value(
                        samples, "tokengrpc_http_requests_total", route="/healthz", status="200"
                    )
                    complete = total >= sent and value(samples, timed, route="/healthz") >= sent
                    if complete or time.monotonic() > deadline:
                        return samples, text
                    await asyncio.sleep(SHARE_EVERY / 5)

            samples, text = await settled(f"http://{scraper}/metrics")
            # The HTTP listener's own /metrics shows the same sum, whichever worker answers.
            listed = await client.get(
                f"http://{http}/api/token", headers={"Authorization": f"Bearer {admin}"}
            )
            assert listed.status_code == 200
            own, own_text = await settled(f"http://{http}/metrics")
        total = value(samples, "tokengrpc_http_requests_total", route="/healthz", status="200")
        assert total == sent, text
        assert value(samples, timed, route="/healthz") == sent, text
        healthz = value(own, "tokengrpc_http_requests_total", route="/healthz", status="200")
        assert healthz == sent, own_text
        # Answered on the scrape's own connection, so by the process answering it: live.
        listed_count = value(own, "tokengrpc_http_requests_total", route="/api/token", status="200")
        assert listed_count == 1, own_text
        print(f"{sent} requests over 2 processes, one scrape shows {total}")
    finally:
        code, output = await server.stop()
    assert code == 0, output


async def test_a_gateway_ignores_a_workers_setting_and_leaves_no_files(tmp_path: Path) -> None:
    """``TOKENGRPC_WORKERS`` is ``serve``'s: a gateway in a shared environment must
    neither switch to shared files nor leave a directory of them behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = clean_env(TOKENGRPC_WORKERS="2", TMPDIR=str(temp))
    gateway = await start_gateway("127.0.0.1:9", env=env)  # no upstream needed for /healthz
    try:
        async with httpx.AsyncClient(base_url=f"http://{gateway.address('http')}") as client:
            assert (await client.get("/healthz")).status_code == 200
            samples = parse((await client.get("/metrics")).text)
        assert value(samples, "tokengrpc_http_requests_total", route="/healthz", status="200") == 1
    finally:
        code, output = await gateway.stop()
    assert code == 0, output
    assert list(temp.iterdir()) == []


async def test_the_shared_files_of_a_killed_serve_are_removed_by_the_next(
    tmp_path: Path,
) -> None:
    """A ``serve`` killed with -9 cannot remove its workers' metrics directory;
    the next ``serve`` with workers removes every one whose ``serve`` is gone."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    foreign = temp / "tokengrpc-metrics-notapid-x"  # not of the pattern's pid: kept
    foreign.mkdir()
    env = clean_env(TOKENGRPC_WORKERS="2", TMPDIR=str(temp))
    args = ("--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
    killed = await serve("--data-dir", str(tmp_path / "one"), *args, env=env, until="http")
    orphan = [entry for entry in temp.iterdir() if entry != foreign]
    assert len(orphan) == 1, orphan
    killed.process.kill()
    await killed.process.wait()
    assert orphan[0].exists()
    second = await serve("--data-dir", str(tmp_path / "two"), *args, env=env, until="http")
    try:
        assert not orphan[0].exists()
        mine = [entry for entry in temp.iterdir() if entry != foreign]
        assert [entry.name.split("-")[2] for entry in mine] == [str(second.process.pid)]
    finally:
        code, output = await second.stop()
    assert code == 0, output
    assert list(temp.iterdir()) == [foreign]


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shared mode for this test's ``Metrics``; the environment is restored after."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    share_between_processes(str(tmp_path))
    return tmp_path


def test_a_scrape_adds_the_other_processes_files_to_its_own_live_numbers(shared: Path) -> None:
    """Histograms too, bucket by bucket: what workers share is the whole series."""
    other, own = Metrics(), Metrics()  # two processes' numbers, each with its own file
    method = "/tokengrpc.v1.TokenService/ListTokens"
    for seconds in (0.0004, 0.0004, 0.3):
        other.grpc_call(method, "OK", seconds)
    other.http_request("/healthz", "200", 0.002)
    other.authenticated(False)
    other.share()
    own.grpc_call(method, "OK", 0.007)
    own.grpc_call(method, "NOT_FOUND", 0.007)
    own.introspected(True)
    # No share() of its own: a --metrics-listen scrape (a thread) reads the live numbers.
    samples = parse(generate_latest(own.collector()).decode())
    assert value(samples, "tokengrpc_grpc_requests_total", method=method, code="OK") == 4
    assert value(samples, "tokengrpc_grpc_requests_total", method=method, code="NOT_FOUND") == 1
    duration = "tokengrpc_grpc_request_duration_seconds"
    assert value(samples, f"{duration}_count", method=method) == 5
    assert value(samples, f"{duration}_sum", method=method) == pytest.approx(0.3148)
    assert value(samples, f"{duration}_bucket", method=method, le="0.0005") == 2
    assert value(samples, f"{duration}_bucket", method=method, le="0.01") == 4
    assert value(samples, f"{duration}_bucket", method=method, le="0.5") == 5
    assert value(samples, f"{duration}_bucket", method=method, le="+Inf") == 5
    assert value(samples, "tokengrpc_http_requests_total", route="/healthz", status="200") == 1
    assert value(samples, "tokengrpc_authentications_total", result="failed") == 1
    assert value(samples, "tokengrpc_introspections_total", active="true") == 1


def test_a_stopped_process_stays_counted_and_a_copy_replaces_its_last(shared: Path) -> None:
    stopped = Metrics()
    stopped.http_request("/healthz", "200", 0.001)
    stopped.share()
    stopped.http_request("/healthz", "200", 0.001)
    stopped.share_last()  # the whole snapshot again, not added to the first copy
    later = Metrics()  # may even have the stopped one's pid: its file is its own
    later.http_request("/healthz", "200", 0.001)
    later.share()
    samples = parse(later.scrape()[0].decode())
    assert value(samples, "tokengrpc_http_requests_total", route="/healthz", status="200") == 3
    assert value(samples, "tokengrpc_http_request_duration_seconds_count", route="/healthz") == 3
    assert len(list(shared.glob("*.json"))) == 2


def test_process_figures_are_summed_over_workers_but_the_limit_and_the_start(
    shared: Path,
) -> None:
    """CPU and memory of every worker add up; the descriptor limit and the start
    time are each process's own, so the scrape shows the highest and the earliest."""
    other, own = Metrics(), Metrics()
    other.share()
    file = next(path for path in shared.glob("*.json") if path.name != own._files.name)  # type: ignore[union-attr]
    snapshot = json.loads(file.read_text())
    known = {
        "process_cpu_seconds": 1000.0,
        "process_max_fds": 10.0**9,
        "process_start_time_seconds": 1.0,
        "process_resident_memory_bytes": 10.0**12,
    }
    for name, _, _, samples in snapshot["process"]:
        for sample in samples:
            sample[2] = known.get(name, sample[2])
    file.write_text(json.dumps(snapshot))
    samples = parse(generate_latest(own.collector()).decode())
    assert 1000 < value(samples, "process_cpu_seconds_total") < 1000 + time.process_time() + 1
    assert value(samples, "process_resident_memory_bytes") > 10**12
    assert value(samples, "process_max_fds") == 10**9
    assert value(samples, "process_start_time_seconds") == 1.0
    assert value(samples, "tokengrpc_build_info", version=version()) == 1


def test_metrics_use_only_prometheus_clients_public_api() -> None:
    """No private attribute nor internal module of a library: none can change under us."""
    public = {"prometheus_client", "prometheus_client.core", "prometheus_client.utils"}
    for module in (metrics, sharedmetrics):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus"):
                assert node.module in public, node.module
            if isinstance(node, ast.Attribute) and node.attr[:1] == "_" != node.attr[1:2]:
                # Only this module's own objects' (self._x); never a library's.
                assert ast.unparse(node.value) == "self", ast.unparse(node)
