"""What tracing costs: off against no tracing code at all (``--baseline REV``, a
revision from before it), and on, exporting every span with the batch exporter
to a real OTLP receiver in this process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.harness import (
    HOT_KINDS,
    PY,
    ROOT,
    HotPath,
    Row,
    ensure_wrk,
    interleaved,
    serve_args,
    server,
    with_cpu,
)
from bench.stats import Figure


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Takes every export and counts its spans (what a collector does first)."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans += len(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def _receiver() -> Iterator[tuple[str, _Receiver]]:
    found = _Receiver()
    served = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, served)  # type: ignore[no-untyped-call]
    port = served.add_insecure_port("127.0.0.1:0")
    served.start()
    try:
        yield f"http://127.0.0.1:{port}", found
    finally:
        served.stop(None)


def _baseline(revision: str, work: Path) -> Path:
    """The source tree of ``revision``, extracted (no checkout of this clone changes)."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


#: Run in a tree (``cwd``), prints the µs one request spends in what observes it
#: (the gRPC observer's wrapper and its sample, the HTTP observer's begin and end,
#: the gateway's call metadata), best of several rounds: the part of a request
#: tracing touches when it is off, measured with nothing else around it.
_OBSERVER_US = """
import asyncio, json, time
from gateway.http import Request
from gateway.upstream import Upstream
from tokengrpc.metrics import Metrics
from tokengrpc.observe import GrpcObserver, HttpObserver

class Context:
    def code(self): return None
    def invocation_metadata(self): return (("authorization", "Bearer x"),)
    def peer(self): return "ipv4:127.0.0.1:5000"

async def handler(request, context): return request

def request():
    return Request(method="GET", raw_path="/api/token", query_string="", scheme="http",
                   headers={"authorization": "Bearer x", "host": "h"}, host="h",
                   client_host="127.0.0.1", receive=None)

async def main(calls=50_000, rounds=15):
    metrics = Metrics()
    call = GrpcObserver(metrics, None)._wrap(handler, "/tokengrpc.v1.TokenService/IntrospectToken",
                                               streamed=False)
    http, context, best = HttpObserver(metrics, None), Context(), {}
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await call(1, context)
        grpc_us = (time.perf_counter() - started) / calls * 1e6
        made = request()
        started = time.perf_counter()
        for _ in range(calls):
            try:
                begun = http.begin(made)
            except TypeError:  # a revision whose begin() takes no request
                begun = http.begin()
            Upstream.metadata(made)
            http.end(begun, method="GET", route="/api/token", status=200, seconds=0.0004,
                     client="127.0.0.1", headers=made.headers, trace_id=None, token_id=None)
        http_us = (time.perf_counter() - started) / calls * 1e6
        best = {"IntrospectToken": min(grpc_us, best.get("IntrospectToken", grpc_us)),
                "GET /api/token": min(http_us, best.get("GET /api/token", http_us))}
    print(json.dumps(best))

asyncio.run(main())
"""


def _observer_us(tree: Path) -> dict[str, float]:
    done = subprocess.run(
        [PY, "-c", _OBSERVER_US], cwd=tree, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip
    found: dict[str, float] = json.loads(done.stdout)
    return found


def _best_of(first: Path, second: Path, turns: int = 3) -> tuple[dict[str, float], ...]:
    best: list[dict[str, float]] = [{}, {}]
    for _ in range(turns):
        for index, tree in enumerate((first, second)):
            for kind, us in _observer_us(tree).items():
                best[index][kind] = min(us, best[index].get(kind, us))
    return tuple(best)


def tracing_section(
    rows: list[Row], work: Path, runs: int, seconds: float, baseline: str | None
) -> None:
    hot = HotPath.seed(work, "tracing")
    untraced = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    trees = {"off": ROOT}
    if baseline:
        trees = {"no tracing code": _baseline(baseline, work), **trees}
    measures: dict[str, Callable[[], dict[str, float]]] = {}
    cpu: dict[str, list[float]] = {}
    with ExitStack() as stack:
        endpoint, received = stack.enter_context(_receiver())
        variants: list[tuple[str, dict[str, str], Path]] = [
            (label, {}, tree) for label, tree in trees.items()
        ]
        variants.append(("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, ROOT))
        for label, env, tree in variants:
            os.environ.clear()
            os.environ.update({**untraced, **env})
            svc = stack.enter_context(
                server(serve_args(hot.data, True), ["grpc", "http"], cwd=tree)
            )
            for kind, load in hot.loads(svc, seconds).items():
                what = f"{kind}, {HOT_KINDS[kind]}, tracing {label}"
                measures[what] = with_cpu(svc.pid, seconds, load, cpu.setdefault(what, []))
        os.environ.clear()
        os.environ.update(untraced)
        ensure_wrk()
        got = interleaved(runs, measures)
    if baseline:
        # In turns, best of each: the machine's moments touch both alike.
        base, off = _best_of(trees["no tracing code"], ROOT)
        for kind in HOT_KINDS:
            per_call = Figure.of(cpu[f"{kind}, {HOT_KINDS[kind]}, tracing off"]).median
            added = off[kind] - base[kind]
            note = (
                f"{base[kind]:.2f} µs without tracing code, {off[kind]:.2f} µs off:"
                f" {added:+.2f} µs, {added / per_call:+.2%} of the server's CPU per call"
            )
            rows.append(Row("Tracing", f"{kind}: its observers, in-process", note=note))
    for what, (rate, p50, p99) in got.items():
        used = Figure.of(cpu[what])
        note = f"server CPU {used.show(0)} µs per call"
        kind, _, label = what.rpartition(", tracing ")
        against = {"off": "no tracing code", "on": "off"}.get(label)
        if against is not None and f"{kind}, tracing {against}" in got:
            base_cpu = Figure.of(cpu[f"{kind}, tracing {against}"]).median
            note = (
                f"{rate.median / got[f'{kind}, tracing {against}'][0].median - 1:+.1%} calls/s"
                f" vs {against}; {note} ({used.median / base_cpu - 1:+.1%})"
            )
        rows.append(Row("Tracing", what, rate, p50, p99, note))
    rows.append(Row("Tracing", "spans the receiver got (tracing on)", note=str(received.spans)))
