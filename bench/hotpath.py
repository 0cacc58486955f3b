"""The hot path (:data:`~bench.harness.HOT_KINDS`) with a feature on and off, in
turns: what the metrics and the policies sections share.

Each variant is a server of its own on one seeded store; a run measures every
variant in turn (``interleaved``), so a drifting machine moves them alike, and
notes the server's CPU per call, which other processes disturb less than
calls per second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.harness import (
    HOT_KINDS,
    Figures,
    HotPath,
    Row,
    ensure_wrk,
    interleaved,
    serve_args,
    server,
    with_cpu,
)
from bench.stats import Figure


def figure_name(kind: str, feature: str, label: str) -> str:
    """A figure's name: ``IntrospectToken, 16 in flight, metrics on``."""
    return f"{kind}, {HOT_KINDS[kind]}, {feature} {label}"


def on_and_off(
    work: Path,
    feature: str,
    runs: int,
    seconds: float,
    variants: Mapping[str, Sequence[str]],
) -> tuple[dict[str, Figures], dict[str, list[float]]]:
    """Each hot-path load against a server per variant (label -> extra ``serve``
    flags), in turns; the figures and the CPU µs per call, by ``figure_name``."""
    hot = HotPath.seed(work, feature)
    measures: dict[str, Callable[[], dict[str, float]]] = {}
    cpu: dict[str, list[float]] = {}
    with ExitStack() as servers:
        for label, extra in variants.items():
            svc = servers.enter_context(
                server(serve_args(hot.data, http=True, extra=extra), ["grpc", "http"])
            )
            for kind, load in hot.loads(svc, seconds).items():
                name = figure_name(kind, feature, label)
                measures[name] = with_cpu(svc.pid, seconds, load, cpu.setdefault(name, []))
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
    """IntrospectToken and GET /api/token with the policies of CONTRACT section 12
    on (limits far enough out that the seeded tokens keep working) and off, in
    turns (target: within 3 %)."""
    years = "3650d"
    on = ["--max-secret-age", years, "--revoke-unused-after", years]
    got, cpu = on_and_off(work, "policies", runs, seconds, {"on": on, "off": []})
    rows.extend(compared("Policies", got, cpu, "on", "off"))
