"""What every benchmark section shares: server processes, load generators, rows.

Its own module so that the sections (``run.py``'s, ``services.py``,
``postgres.py``) import it and ``run.py`` imports them, with no circle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.seed import Group, seed_sync
from bench.stats import Figure

PY = sys.executable
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Server:
    process: subprocess.Popen[str]
    addresses: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")


@contextmanager
def server(
    args: Sequence[str],
    wait_for: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Start a server process and wait for its ``<kind> listening on`` lines;
    ``cwd``: the source tree whose ``python -m`` modules run (another revision's)."""
    process = subprocess.Popen(
        [PY, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=cwd, env={**os.environ, **(env or {})},
    )  # fmt: skip
    addresses: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    try:
        while set(wait_for) - set(addresses):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args} did not start")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{args} exited: {process.wait()}")
            match = re.match(r"(?:(\w+) )?listening on (\S+)", line.strip())
            if match:
                addresses[match.group(1) or "default"] = match.group(2)
        yield Server(process, addresses)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(
    pid: int, seconds: float, measure: Callable[[], dict[str, float]], into: list[float]
) -> Callable[[], dict[str, float]]:
    """``measure``, also noting the server's CPU µs per call into ``into``: a figure
    the other processes on the machine disturb less than calls per second."""

    def measured() -> dict[str, float]:
        before = cpu_seconds(pid)
        result = measure()
        used = cpu_seconds(pid) - before
        into.append(used / max(result["calls_per_second"] * seconds, 1) * 1e6)
        return result

    return measured


def grpc_load(
    target: str, call: str, concurrency: int, seconds: float, **extra: str
) -> dict[str, float]:
    command = [PY, "-m", "bench.load", "--target", target, "--call", call,
               "--concurrency", str(concurrency), "--seconds", str(seconds)]  # fmt: skip
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", value]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, cwd=ROOT, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(
    url: str, seconds: float, headers: dict[str, str], method: str = "GET", body: str = ""
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = {json.dumps(method)}\n")
        if body:
            script.write(f"wrk.body = {json.dumps(body)}\n")
        for key, value in headers.items():
            script.write(f"wrk.headers[{json.dumps(key)}] = {json.dumps(value)}\n")
    try:
        done = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", script.name, url],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )  # fmt: skip
    finally:
        os.unlink(script.name)
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latency = {q: float(v) * scale[u] for q, v, u in _WRK_LATENCY.findall(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses\n{out}")
    return {"calls_per_second": rps, "p50_ms": latency["50"], "p99_ms": latency["99"]}


@dataclass
class Row:
    section: str
    what: str
    rate: Figure | None = None
    p50: Figure | None = None
    p99: Figure | None = None
    ratio: str = ""
    note: str = ""


Figures = tuple[Figure, Figure, Figure]


def interleaved(
    runs: int, measures: Mapping[str, Callable[[], dict[str, float]]]
) -> dict[str, Figures]:
    """Each measure ``runs`` times, taking turns, so a floor and the figures set
    against it see the same moments of a shared, drifting machine."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in measures}
    for _ in range(runs):
        for name, measure in measures.items():
            results[name].append(measure())
    return {
        name: (
            Figure.of([r["calls_per_second"] for r in found]),
            Figure.of([r["p50_ms"] for r in found]),
            Figure.of([r["p99_ms"] for r in found]),
        )
        for name, found in results.items()
    }


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (Debian package) ...", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def serve_args(data_dir: Path, http: bool, extra: Sequence[str] = ()) -> list[str]:
    # No access log: its pipe is not read here, and its cost is not what these rows measure.
    args = ["-m", "tokengrpc", "serve", "--data-dir", str(data_dir), "--grpc-listen", "127.0.0.1:0",
            "--no-access-log"]  # fmt: skip
    args += ["--http-listen", "127.0.0.1:0"] if http else ["--no-http"]
    return [*args, *extra]


def of_floor(rate: Figure, floor: Figure) -> str:
    return f"{rate.median / floor.median:.0%} of floor"


@contextmanager
def echo_floor(processes: int) -> Iterator[str]:
    """The gRPC echo floor, as one process or several sharing the port."""
    reuse = ["--reuse-port"] if processes > 1 else []
    with server(["-m", "bench.floors", "grpc-echo", *reuse], ["default"]) as first:
        address = first.addresses["default"]
        with ExitStack() as more:
            for _ in range(processes - 1):
                more.enter_context(
                    server(["-m", "bench.floors", "grpc-echo", "--listen", address, *reuse],
                           ["default"])
                )  # fmt: skip
            yield address


def timed_ms(calls: int, fn: Callable[[], object], before: Callable[[], object]) -> float:
    """Median milliseconds of ``calls`` sequential calls, each after ``before`` (untimed)."""
    times = []
    for _ in range(calls):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


#: The two requests the metrics and tracing sections time, and the load of each.
HOT_KINDS = {"IntrospectToken": "16 in flight", "GET /api/token": "64 connections"}


@dataclass
class HotPath:
    """A store seeded for :data:`HOT_KINDS`, and the loads that drive a server on it."""

    data: Path
    tokens_file: Path
    introspector: str
    auth: dict[str, str]

    @classmethod
    def seed(cls, work: Path, name: str) -> HotPath:
        groups = [Group("http", 5), Group("sampled", 2001, samples=2000)]
        seeded = seed_sync(work / name, groups, filler_owners=1000, filler=10_000)
        tokens_file = work / f"{name}-samples.txt"
        tokens_file.write_text("\n".join(seeded.samples))
        auth = {"Authorization": f"Bearer {seeded.callers['http']}"}
        return cls(work / name, tokens_file, seeded.introspector, auth)

    def loads(self, svc: Server, seconds: float) -> dict[str, Callable[[], dict[str, float]]]:
        return {
            "IntrospectToken": partial(
                grpc_load, svc.addresses["grpc"], "introspect", 16, seconds,
                tokens=str(self.tokens_file), caller=self.introspector,
            ),
            "GET /api/token": partial(
                wrk, f"http://{svc.addresses['http']}/api/token", seconds, self.auth
            ),
        }  # fmt: skip
