"""Forward auth: ``/auth/check`` behind Envoy (``http_service``), nginx
(``auth_request``) and Caddy (``forward_auth``), each set against the same
proxy asking a server that does no token work (``make bench``, section
``forward``; alone: ``python -m bench.run --only forward``).

Every proxy runs the configuration docs/forward-auth.md shows, in front of
the bench's JSON floor; the "floor" run of each is the same file with the
``http-auth-floor`` server (``bench/floors.py``) in tokengrpc's place. Also
``/auth/check`` alone against bare uvicorn answering 200.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from bench.harness import Row, ensure_wrk, interleaved, serve_args, server, wrk
from bench.seed import Group, seed_sync
from tests.forwardproxies import STARTERS, Proxy

PROXIES = ("envoy", "nginx", "caddy")


def forward_section(rows: list[Row], work: Path, runs: int, seconds: float) -> None:
    ensure_wrk()
    data = work / "forward"
    seeded = seed_sync(data, [Group("forward", 1)])
    headers = {"Authorization": f"Bearer {seeded.callers['forward']}"}
    with ExitStack() as running:
        app = running.enter_context(server(["-m", "bench.floors", "http-json"], ["default"]))
        floor = running.enter_context(
            server(["-m", "bench.floors", "http-auth-floor"], ["default"])
        )
        svc = running.enter_context(server(serve_args(data, http=True), ["grpc", "http"]))
        upstream = app.addresses["default"]
        guards = {"tokengrpc": svc.addresses["http"], "floor": floor.addresses["default"]}
        measures = {
            "uvicorn": partial(wrk, f"http://{upstream}/", seconds, {}),
            "alone": partial(wrk, f"http://{svc.addresses['http']}/auth/check", seconds, headers),
        }
        for kind in PROXIES:
            for name, guard in guards.items():
                folder = work / f"{kind}-{name}"
                proxy: Proxy = STARTERS[kind](folder, tokengrpc=guard, app=upstream)
                running.callback(proxy.stop)
                measures[f"{kind} {name}"] = partial(wrk, f"{proxy.base_url}/", seconds, headers)
        got = interleaved(runs, measures)
    bare = got.pop("uvicorn")
    alone = got.pop("alone")
    rows.append(Row("Forward auth", "floor: bare uvicorn answering 200, 64 connections", *bare))
    rows.append(
        Row("Forward auth", "/auth/check alone (in-process gateway), 64 connections", *alone,
            f"{alone[0].median / bare[0].median:.0%} of bare uvicorn")
    )  # fmt: skip
    for kind in PROXIES:
        base = got[f"{kind} floor"]
        rate, p50, p99 = got[f"{kind} tokengrpc"]
        rows.append(Row("Forward auth", f"{kind} → no-work asyncio auth floor → JSON floor", *base))
        rows.append(
            Row("Forward auth", f"{kind} → /auth/check → JSON floor, 64 connections",
                rate, p50, p99, f"{rate.median / base[0].median:.0%} of the no-work floor"
                + (" (target ≥ 70 %)" if kind == "envoy" else ""))
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit("run it through bench.run: python -m bench.run --only forward")
