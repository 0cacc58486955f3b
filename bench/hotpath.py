"""The hot path (IntrospectToken, ``GET /api/token``) with a feature on and off,
in turns: what the metrics and the policies sections share.

Each variant is a server of its own on one seeded store; a run measures every
variant in turn (``interleaved``), so a drifting machine moves them alike, and
notes the server's CPU per call, which other processes disturb less than
calls per second.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from bench.harness import Figures, Row, ensure_wrk, grpc_load, interleaved, serve_args, server, wrk
from bench.seed import Group, seed_sync
from bench.stats import Figure

#: The load each hot-path figure is measured under.
KINDS = {"IntrospectToken": "16 in flight", "GET /api/token": "64 connections"}


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(
    pid: int, seconds: float, measure: Callable[[], dict[str, float]], into: list[float]
) -> Callable[[], dict[str, float]]:
    """``measure``, also noting the server's CPU µs per call into ``into``."""

    def measured() -> dict[str, float]:
        before = _cpu_seconds(pid)
        result = measure()
        used = _cpu_seconds(pid) - before
        into.append(used / max(result["calls_per_second"] * seconds, 1) * 1e6)
        return result

    return measured


def figure_name(kind: str, feature: str, label: str) -> str:
    """A figure's name: ``IntrospectToken, 16 in flight, metrics on``."""
    return f"{kind}, {KINDS[kind]}, {feature} {label}"


def on_and_off(
    work: Path,
    feature: str,
    runs: int,
    seconds: float,
    variants: Mapping[str, Sequence[str]],
) -> tuple[dict[str, Figures], dict[str, list[float]]]:
    """Each hot-path load against a server per variant (label -> extra ``serve``
    flags), in turns; the figures and the CPU µs per call, by ``figure_name``."""
    data = work / feature
    groups = [Group("http", 5), Group("sampled", 2001, samples=2000)]
    seeded = seed_sync(data, groups, filler_owners=1000, filler=10_000)
    tokens_file = work / f"{feature}-samples.txt"
    tokens_file.write_text("\n".join(seeded.samples))
    auth = {"Authorization": f"Bearer {seeded.callers['http']}"}
    measures: dict[str, Callable[[], dict[str, float]]] = {}
    cpu: dict[str, list[float]] = {}
    with ExitStack() as servers:
        for label, extra in variants.items():
            svc = servers.enter_context(
                server(serve_args(data, http=True, extra=extra), ["grpc", "http"])
            )
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
                name = figure_name(kind, feature, label)
                measures[name] = _with_cpu(svc.pid, seconds, load, cpu.setdefault(name, []))
        ensure_wrk()
        got = interleaved(runs, measures)
    return got, cpu


def compared(
    section: str, got: dict[str, Figures], cpu: dict[str, list[float]], on: str, off: str
) -> list[Row]:
    """A row per figure; each ``on`` one says how far it is from its ``off`` one."""
    rows = []
    for name, (rate, p50, p99) in got.items():
        used = Figure.of(cpu[name])
        note = f"server CPU {used.show(0)} µs per call"
        if name.endswith(f" {on}"):
            other = name.removesuffix(f" {on}") + f" {off}"
            other_cpu = Figure.of(cpu[other]).median
            note = (
                f"{rate.median / got[other][0].median - 1:+.1%} calls/s vs {off}; {note}"
                f" ({used.median / other_cpu - 1:+.1%} vs {off})"
            )
        rows.append(Row(section, name, rate, p50, p99, note))
    return rows


def policies_section(rows: list[Row], work: Path, runs: int, seconds: float) -> None:
    """IntrospectToken and GET /api/token with every policy of CONTRACT section 12
    on (limits far enough out that the seeded tokens keep working) and off, in
    turns (target: within 3 %)."""
    year = "3650d"
    on = ["--max-secret-age", year, "--revoke-unused-after", year]
    got, cpu = on_and_off(work, "policies", runs, seconds, {"on": on, "off": []})
    rows.extend(compared("Policies", got, cpu, "on", "off"))
