"""``make bench``: the floors and the project, side by side, in one run.

Servers and load generators run as separate processes, traffic goes to
127.0.0.1 only, every run is bounded in time, and each figure is the median
of several runs (min–max shown). Prints a table and writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
import timeit
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from bench.forwardauth import forward_section
from bench.harness import (
    HERE,
    Row,
    echo_floor,
    ensure_wrk,
    grpc_load,
    interleaved,
    of_floor,
    serve_args,
    server,
    wrk,
)
from bench.hotpath import compared, figure_name, on_and_off, policies_section
from bench.postgres import postgres_section
from bench.scale import STREAMED_UP_TO, scale_reads
from bench.seed import Group, seed_sync
from bench.services import services_section
from bench.stats import Figure
from bench.tracing import tracing_section
from tokengrpc.metrics import Metrics
from tokengrpc.store.sqlite import GENERATION_FILE, Generation


def _recording_us() -> dict[str, float]:
    """µs to record what one IntrospectToken call and one HTTP request leave behind."""
    metrics, calls = Metrics(), 200_000
    method = "/tokengrpc.v1.TokenService/IntrospectToken"

    def introspection() -> None:
        metrics.authenticated(True)
        metrics.introspected(True)
        metrics.grpc_call(method, "OK", 0.0004)

    def http_request() -> None:
        metrics.authenticated(True)
        metrics.http_request("/api/token", "200", 0.0004)

    return {
        "IntrospectToken": timeit.timeit(introspection, number=calls) / calls * 1e6,
        "GET /api/token": timeit.timeit(http_request, number=calls) / calls * 1e6,
    }


def metrics_section(rows: list[Row], work: Path, runs: int, seconds: float) -> None:
    """IntrospectToken and GET /api/token with metrics on and off, in turns (target: ≤ 5 %)."""
    variants = {"on": [], "off": ["--no-metrics"]}
    got, cpu = on_and_off(work, "metrics", runs, seconds, variants)
    for kind, recorded in _recording_us().items():
        per_call = Figure.of(cpu[figure_name(kind, "metrics", "off")]).median
        share = f"{recorded:.2f} µs, {recorded / per_call:.2%} of the server's CPU per call"
        rows.append(Row("Metrics", f"{kind}: recording its samples, in-process", note=share))
    rows.extend(compared("Metrics", got, cpu, "on", "off"))


def grpc_section(rows: list[Row], work: Path, runs: int, seconds: float, workers: int) -> None:
    data = work / f"grpc-100k-{workers}"
    groups = [Group("bench-list", 100), Group("sampled", 2001, samples=2000)]
    seeded = seed_sync(data, groups, filler_owners=20_000, filler=100_000 - 2101)
    tokens_file = work / "samples.txt"
    tokens_file.write_text("\n".join(seeded.samples))
    label = f" ({workers} processes)" if workers > 1 else ""
    channels = str(4 * workers if workers > 1 else 1)
    extra = ["--workers", str(workers)] if workers > 1 else []
    with echo_floor(workers) as echo, server(serve_args(data, False, extra), ["grpc"]) as svc:
        target = svc.addresses["grpc"]
        for n in (1, 16, 64):
            got = interleaved(runs, {
                "floor": partial(grpc_load, echo, "echo", n, seconds, channels=channels),
                "introspect": partial(
                    grpc_load, target, "introspect", n, seconds, channels=channels,
                    tokens=str(tokens_file), caller=seeded.introspector,
                ),
                "list": partial(
                    grpc_load, target, "list", n, seconds, channels=channels,
                    caller=seeded.callers["bench-list"],
                ),
            })  # fmt: skip
            floor = got["floor"]
            rate, p50, p99 = got["introspect"]
            ratio = f"{of_floor(rate, floor[0])}; p99 ×{p99.median / floor[2].median:.2f}"
            rows += [
                Row("gRPC", f"floor: grpc.aio echo{label}, {n} in flight", *floor),
                Row("gRPC", f"IntrospectToken{label}, {n} in flight", rate, p50, p99, ratio),
                Row("gRPC", f"ListTokens page of 20{label}, {n} in flight", *got["list"],
                    of_floor(got["list"][0], floor[0])),
            ]  # fmt: skip
        if workers == 1:
            rows.append(Row("gRPC", "server RSS with 100k tokens", note=f"{svc.rss_mb():.0f} MB"))
    if workers > 1:
        return
    write_data = work / "writes"
    write_seed = seed_sync(write_data, [Group("writer", 1)])
    with server(serve_args(write_data, http=False), ["grpc"]) as svc:
        create = partial(
            grpc_load, svc.addresses["grpc"], "create", 16, seconds,
            caller=write_seed.callers["writer"],
        )  # fmt: skip
        rate, p50, p99 = interleaved(runs, {"create": create})["create"]
        what = "CreateToken, durable, 16 in flight"
        rows.append(Row("Writes", what, rate, p50, p99, "target ≥ 1,000/s"))


def http_section(rows: list[Row], work: Path, runs: int, seconds: float) -> None:
    ensure_wrk()
    data = work / "http"
    seeded = seed_sync(data, [Group("http", 5)], filler_owners=1000, filler=10_000)
    auth = {"Authorization": f"Bearer {seeded.callers['http']}"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    introspector = {"Authorization": f"Bearer {seeded.admin}"}
    cases = [
        ("GET /api/token", "/api/token", "GET", "", auth),
        ("GET /api/v1/me/tokens?page=1", "/api/v1/me/tokens?page=1", "GET", "", auth),
        ("POST /oauth/introspect", "/oauth/introspect", "POST",
         f"token={seeded.introspector}", {**form, **introspector}),
    ]  # fmt: skip
    modes = ("network", "in-process")
    with ExitStack() as servers:
        bare = servers.enter_context(server(["-m", "bench.floors", "http-json"], ["default"]))
        hop = servers.enter_context(server(["-m", "bench.floors", "http-grpc-echo"], ["default"]))
        measures = {
            "bare": partial(wrk, f"http://{bare.addresses['default']}/", seconds, {}),
            "hop": partial(wrk, f"http://{hop.addresses['default']}/", seconds, {}),
        }
        for mode in modes:
            # Both modes serve the same data dir at once, as two processes may.
            svc = servers.enter_context(
                server(serve_args(data, http=True, extra=["--http-upstream", mode]),
                       ["grpc", "http"])
            )  # fmt: skip
            base = f"http://{svc.addresses['http']}"
            for label, path, method, body, headers in cases:
                measures[f"{label}, gateway {mode}"] = partial(
                    wrk, base + path, seconds, headers, method, body
                )
        got = interleaved(runs, measures)
    bare_floor, hop_floor = got.pop("bare"), got.pop("hop")
    rows.append(Row("HTTP", "floor: bare uvicorn JSON, 64 connections", *bare_floor))
    rows.append(Row("HTTP", "floor: uvicorn → grpc.aio echo, 64 connections", *hop_floor))
    for what, (rate, p50, p99) in got.items():
        ratio = (
            f"{rate.median / hop_floor[0].median:.0%} of HTTP→gRPC floor,"
            f" {rate.median / bare_floor[0].median:.0%} of bare"
        )
        rows.append(Row("HTTP", f"{what}, 64 connections", rate, p50, p99, ratio))


def _scale_one(rows: list[Row], work: Path, size: int) -> None:
    data = work / f"scale-{size}"
    whole = size if size <= STREAMED_UP_TO else 0  # as many service tokens, for GET /_/token
    seeded = seed_sync(data, [Group("scale", size)], service_tokens=whole)
    what = f"{size:,} tokens: seeding (bulk SQL, one transaction)"
    rows.append(Row("Scale", what, note=f"{seeded.seconds:.1f} s"))
    # Each timed read follows a write announced by another process (this one),
    # so the server's read cache cannot answer it: these are SQLite's figures.
    generation = Generation(data / GENERATION_FILE)
    with server(serve_args(data, http=True), ["grpc", "http"]) as svc:
        reads = scale_reads(svc, data, seeded, size, generation.bump)
        rss = svc.rss_mb()
    generation.close_now()
    db_mb = sum(p.stat().st_size for p in data.glob("tokens.db*")) / 1e6
    rows += [Row("Scale", f"{size:,} tokens: {what}", note=note) for what, note in reads]
    rows.append(Row("Scale", f"{size:,} tokens: server RSS, database size",
                    note=f"{rss:.0f} MB, {db_mb:.0f} MB"))  # fmt: skip
    shutil.rmtree(data)


def scale_section(rows: list[Row], work: Path, sizes: Sequence[int]) -> None:
    for size in sizes:
        _scale_one(rows, work, size)


def render(rows: list[Row], runs: int, seconds: float) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    lines = [
        "# Benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}",
        f"- each figure: median of {runs} runs of {seconds:g} s (min–max in brackets);"
        " servers and load generators in separate processes, 127.0.0.1 only",
        "- a floor and the figures set against it are measured in turns, run by run",
        "- the targets, and before/after figures for each optimisation: docs/performance.md",
        "",
        "| section | what | calls/s | p50 ms | p99 ms | vs floor / note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [row.rate.show() if row.rate else "", row.p50.show(2) if row.p50 else "",
                 row.p99.show(2) if row.p99 else "", row.ratio or row.note]  # fmt: skip
        lines.append(f"| {row.section} | {row.what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Every section, in the order a full run takes them.
SECTIONS = (
    "grpc",
    "http",
    "metrics",
    "policies",
    "scale",
    "services",
    "forward",
    "postgres",
    "tracing",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
    )
    parser.add_argument(
        "--baseline",
        help="a git revision without tracing code: the tracing section sets it beside"
        " tracing off (e.g. the commit before tracing came)",
    )
    parser.add_argument(
        "--workers", default="1,2", help="server processes for the gRPC figures, e.g. 1,2"
    )
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tokengrpc-bench-") as tmp:
        work = Path(tmp)
        if "grpc" in sections:
            for workers in (int(w) for w in args.workers.split(",")):
                grpc_section(rows, work, args.runs, args.seconds, workers)
        if "http" in sections:
            http_section(rows, work, args.runs, args.seconds)
        if "metrics" in sections:
            metrics_section(rows, work, args.runs, args.seconds)
        if "policies" in sections:
            policies_section(rows, work, args.runs, args.seconds)
        if "scale" in sections:
            scale_section(rows, work, [int(s) for s in args.sizes.split(",")])
        if "services" in sections:
            services_section(rows, work, args.runs, args.seconds)
        if "forward" in sections:
            forward_section(rows, work, args.runs, args.seconds)
        if "postgres" in sections:
            sizes = [int(s) for s in args.sizes.split(",")]
            postgres_section(rows, work, args.runs, args.seconds, sizes)
        if "tracing" in sections:
            tracing_section(rows, work, args.runs, args.seconds, args.baseline)
    text = render(rows, args.runs, args.seconds)
    print(text)
    Path(args.output).write_text(text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
