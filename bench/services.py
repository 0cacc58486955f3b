"""The price of protecting a service: Envoy with and without ext_authz, and
``TokenVerifier.verify`` cached and uncached (``make bench``, section
``services``; alone: ``python -m bench.run --only services``).

Envoy runs the config README.md shows (tests/fixtures/envoy-ext-authz.yaml)
in front of the bench's JSON floor; the "without" run is the same file with
the ext_authz filter taken out, and a third asks the ``grpc-allow-all`` floor
instead of tokengrpc: the price of a grpcio ext_authz server that does nothing.
"""

from __future__ import annotations

import asyncio
import re
import string
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import httpx

from bench.harness import ROOT, Row, ensure_wrk, interleaved, serve_args, server, wrk
from bench.seed import Group, seed_sync
from bench.stats import Figure
from tokengrpc.client import TokenVerifier

CONFIG = ROOT / "tests" / "fixtures" / "envoy-ext-authz.yaml"
# The ext_authz filter entry, up to the router that follows it.
_EXT_AUTHZ_FILTER = re.compile(
    r"^ *- name: envoy\.filters\.http\.ext_authz\n.*?(?=^ *- name: envoy\.filters\.http\.router)",
    re.M | re.S,
)


def envoy_config(folder: Path, tokengrpc: str, upstream: str, token: str, authz: bool) -> Path:
    text = string.Template(CONFIG.read_text()).substitute(
        # Any free port: the one Envoy took is read from its admin (``_wait_listening``).
        ENVOY_PORT=0,
        TOKENGRPC_PORT=tokengrpc.rpartition(":")[2],
        UPSTREAM_PORT=upstream.rpartition(":")[2],
        ENVOY_TOKEN=token,
    )
    if not authz:
        text = _EXT_AUTHZ_FILTER.sub("", text)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("with-authz.yaml" if authz else "without-authz.yaml")
    path.write_text(text)
    return path


@contextmanager
def envoy(config: Path, folder: Path) -> Iterator[str]:
    """Run Envoy on ``config``; yield the address its listener bound."""
    binary = Path(sysconfig.get_path("scripts")) / "envoy"
    admin_file = folder / f"{config.stem}.admin"
    process = subprocess.Popen(
        [str(binary), "-c", str(config), "--admin-address-path", str(admin_file),
         "--disable-hot-restart", "--concurrency", "1", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield _wait_listening(process, admin_file)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_listening(process: subprocess.Popen[bytes], admin_file: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        admin = admin_file.read_text().strip() if admin_file.exists() else ""
        try:
            if admin and httpx.get(f"http://{admin}/ready").status_code == 200:
                listeners = httpx.get(f"http://{admin}/listeners?format=json").json()
                bound = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                return f"127.0.0.1:{bound['port_value']}"
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("envoy did not start")


async def _verify_us(target: str, own: str, token: str, calls: int, cache_ttl: float) -> float:
    """Mean microseconds per sequential ``verify`` of one token."""
    verifier = TokenVerifier(target, own, cache_ttl=cache_ttl)
    try:
        assert await verifier.verify(token) is not None, "the bench token is not active"
        start = time.perf_counter()
        for _ in range(calls):
            await verifier.verify(token)
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        await verifier.close()


def services_section(rows: list[Row], work: Path, runs: int, seconds: float) -> None:
    data = work / "services"
    seeded = seed_sync(data, [Group("svc", 1)])
    caller = seeded.callers["svc"]
    headers = {"Authorization": f"Bearer {caller}"}
    with server(serve_args(data, http=False), ["grpc"]) as svc:
        target = svc.addresses["grpc"]
        cached = [
            asyncio.run(_verify_us(target, seeded.introspector, caller, 200_000, 3600))
            for _ in range(runs)
        ]
        uncached = [
            asyncio.run(_verify_us(target, seeded.introspector, caller, 2_000, 0))
            for _ in range(runs)
        ]
        rows += [
            Row("Services", "TokenVerifier.verify, cached",
                note=f"{Figure.of(cached).show(2)} µs (target < 5 µs)"),
            Row("Services", "TokenVerifier.verify, uncached (one IntrospectToken)",
                note=f"{Figure.of(uncached).show(0)} µs"),
        ]  # fmt: skip
        ensure_wrk()
        with (
            server(["-m", "bench.floors", "http-json"], ["default"]) as app,
            server(["-m", "bench.floors", "grpc-allow-all"], ["default"]) as allow_all,
        ):
            upstream = app.addresses["default"]
            folder = Path(tempfile.mkdtemp(dir=work))
            guards = {"tokengrpc": target, "allow-all": allow_all.addresses["default"]}
            configs = {
                name: envoy_config(folder / name, guard, upstream, seeded.introspector, True)
                for name, guard in guards.items()
            }
            configs["bare"] = envoy_config(folder, target, upstream, seeded.introspector, False)
            with ExitStack() as running:
                urls = {
                    name: f"http://{running.enter_context(envoy(config, config.parent))}/"
                    for name, config in configs.items()
                }
                got = interleaved(runs, {
                    name: partial(wrk, url, seconds, headers) for name, url in urls.items()
                })  # fmt: skip
    bare_rate = got["bare"][0]
    floor_rate = got["allow-all"][0]
    rate, p50, p99 = got["tokengrpc"]
    rows += [
        Row("Services", "Envoy → JSON floor, no ext_authz, 64 connections", *got["bare"]),
        Row("Services", "Envoy + ext_authz (grpcio allowing all, no token work) → JSON floor",
            *got["allow-all"], f"{floor_rate.median / bare_rate.median:.0%} of Envoy alone"),
        Row("Services", "Envoy + ext_authz (tokengrpc Check) → JSON floor, 64 connections",
            rate, p50, p99,
            f"{rate.median / bare_rate.median:.0%} of Envoy alone (target ≥ 50 %), "
            f"{rate.median / floor_rate.median:.0%} of the allow-all server"),
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit("run it through bench.run: python -m bench.run --only services")
