"""What tracing costs: off against no tracing code at all (``--baseline REV``, a
revision from before it), and on, exporting every span with the batch exporter
to a real OTLP receiver in this process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.harness import (
    ROOT,
    Row,
    ensure_wrk,
    grpc_load,
    interleaved,
    serve_args,
    server,
    with_cpu,
    wrk,
)
from bench.seed import Group, seed_sync
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


def tracing_section(
    rows: list[Row], work: Path, runs: int, seconds: float, baseline: str | None
) -> None:
    data = work / "tracing"
    groups = [Group("http", 5), Group("sampled", 2001, samples=2000)]
    seeded = seed_sync(data, groups, filler_owners=1000, filler=10_000)
    tokens_file = work / "tracing-samples.txt"
    tokens_file.write_text("\n".join(seeded.samples))
    auth = {"Authorization": f"Bearer {seeded.callers['http']}"}
    kinds = {"IntrospectToken": "16 in flight", "GET /api/token": "64 connections"}
    untraced = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    measures: dict[str, Callable[[], dict[str, float]]] = {}
    cpu: dict[str, list[float]] = {}
    with ExitStack() as stack:
        endpoint, received = stack.enter_context(_receiver())
        variants: list[tuple[str, dict[str, str], Path]] = [
            ("off", {}, ROOT),
            ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, ROOT),
        ]
        if baseline:
            variants.insert(0, ("no tracing code", {}, _baseline(baseline, work)))
        for label, env, tree in variants:
            os.environ.clear()
            os.environ.update({**untraced, **env})
            svc = stack.enter_context(server(serve_args(data, True), ["grpc", "http"], cwd=tree))
            loads = {
                "IntrospectToken": partial(
                    grpc_load, svc.addresses["grpc"], "introspect", 16, seconds,
                    tokens=str(tokens_file), caller=seeded.introspector,
                ),
                "GET /api/token": partial(
                    wrk, f"http://{svc.addresses['http']}/api/token", seconds, auth
                ),
            }  # fmt: skip
            for kind, load in loads.items():
                what = f"{kind}, {kinds[kind]}, tracing {label}"
                measures[what] = with_cpu(svc.pid, seconds, load, cpu.setdefault(what, []))
        os.environ.clear()
        os.environ.update(untraced)
        ensure_wrk()
        got = interleaved(runs, measures)
    for what, (rate, p50, p99) in got.items():
        used = Figure.of(cpu[what])
        note = f"server CPU {used.show(0)} µs per call"
        kind, _, label = what.rpartition(", tracing ")
        against = f"{kind}, tracing off" if label != "off" else f"{kind}, tracing no tracing code"
        if against in got and against != what:
            base_cpu = Figure.of(cpu[against]).median
            note = (
                f"{rate.median / got[against][0].median - 1:+.1%} calls/s vs"
                f" {against.rpartition('tracing ')[2]}; {note}"
                f" ({used.median / base_cpu - 1:+.1%})"
            )
        rows.append(Row("Tracing", what, rate, p50, p99, note))
    rows.append(Row("Tracing", "spans the receiver got", note=str(received.spans)))
