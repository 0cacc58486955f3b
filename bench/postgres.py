"""The PostgreSQL engine's figures beside SQLite's (``make bench``, section
``postgres``; alone: ``python -m bench.run --only postgres``).

A private PostgreSQL 16 from the ``pgserver`` package (``tests/postgres.py``
starts it, as the tests do), on 127.0.0.1. Each section seeds its own
database; servers are ``tokengrpc serve --database URL`` processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import asyncpg

from bench.harness import (
    Row,
    echo_floor,
    grpc_load,
    interleaved,
    of_floor,
    serve_args,
    server,
)
from bench.scale import STREAMED_UP_TO, scale_reads
from bench.seed import Group, seed_sync
from tests.postgres import PgServer, remove_server, start_server
from tokengrpc.sealing import KEY_FILE
from tokengrpc.store.postgres.changes import CHANNEL


def _pg_args(data: Path, url: str, http: bool = False) -> list[str]:
    return serve_args(data, http, ["--database", url])


def _introspect_rows(rows: list[Row], work: Path, pg: PgServer, runs: int, seconds: float) -> None:
    url = pg.new_database()
    data = work / "pg-grpc"
    groups = [Group("bench-list", 100), Group("sampled", 2001, samples=2000)]
    seeded = seed_sync(data, groups, 20_000, 100_000 - 2101, database_url=url)
    tokens_file = work / "pg-samples.txt"
    tokens_file.write_text("\n".join(seeded.samples))
    with echo_floor(1) as echo, server(_pg_args(data, url), ["grpc"]) as svc:
        for n in (1, 16, 64):
            got = interleaved(runs, {
                "floor": partial(grpc_load, echo, "echo", n, seconds),
                "introspect": partial(
                    grpc_load, svc.addresses["grpc"], "introspect", n, seconds,
                    tokens=str(tokens_file), caller=seeded.introspector,
                ),
            })  # fmt: skip
            floor = got["floor"]
            rate, p50, p99 = got["introspect"]
            rows.append(Row("PostgreSQL", f"IntrospectToken, {n} in flight", rate, p50, p99,
                            of_floor(rate, floor[0])))  # fmt: skip
        rows.append(Row("PostgreSQL", "server RSS with 100k tokens", note=f"{svc.rss_mb():.0f} MB"))
        # Two instances on the one database, the load split between them.
        # Every instance needs the store's key (the seeding instance made it).
        key = {"TOKENGRPC_SECRET_KEY": (data / KEY_FILE).read_text().strip()}
        with server(_pg_args(work / "pg-grpc-b", url), ["grpc"], env=key) as other:
            targets = [svc.addresses["grpc"], other.addresses["grpc"]]
            both = interleaved(runs, {
                "one": partial(grpc_load, targets[0], "introspect", 16, seconds,
                               tokens=str(tokens_file), caller=seeded.introspector),
                "two": partial(_together, [
                    partial(grpc_load, target, "introspect", 8, seconds,
                            tokens=str(tokens_file), caller=seeded.introspector)
                    for target in targets
                ]),
            })  # fmt: skip
    one, two = both["one"], both["two"]
    rows.append(Row("PostgreSQL", "IntrospectToken, one instance, 16 in flight", *one))
    rows.append(Row("PostgreSQL", "IntrospectToken, two instances, 8 in flight each", *two,
                    f"×{two[0].median / one[0].median:.2f} of one instance"))  # fmt: skip


def _together(loads: list[Callable[[], dict[str, float]]]) -> dict[str, float]:
    """Several load generators at once: rates add up, latencies are the worst one's."""
    results: list[dict[str, float]] = []

    def run(load: Callable[[], dict[str, float]]) -> None:
        results.append(load())

    threads = [threading.Thread(target=run, args=(load,)) for load in loads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = {key: max(result[key] for result in results) for key in results[0]}
    total["calls_per_second"] = sum(result["calls_per_second"] for result in results)
    return total


def _create_rows(rows: list[Row], work: Path, pg: PgServer, runs: int, seconds: float) -> None:
    url = pg.new_database()
    data = work / "pg-writes"
    seeded = seed_sync(data, [Group("writer", 1)], database_url=url)
    with server(_pg_args(data, url), ["grpc"]) as svc:
        create = partial(grpc_load, svc.addresses["grpc"], "create", 16, seconds,
                         caller=seeded.callers["writer"])  # fmt: skip
        rate, p50, p99 = interleaved(runs, {"create": create})["create"]
    rows.append(Row("PostgreSQL", "CreateToken, durable, 16 in flight", rate, p50, p99,
                    "target ≥ 1,000/s"))  # fmt: skip


def _notify(url: str) -> Callable[[], None]:
    """A change announced from outside, so the server's next read goes to the database."""

    async def announce() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("SELECT pg_notify($1, 'bench')", CHANNEL)
        finally:
            await connection.close()

    def cold() -> None:
        asyncio.run(announce())
        time.sleep(0.02)  # untimed: the notification reaches the server

    return cold


def _scale_rows(rows: list[Row], work: Path, pg: PgServer, size: int) -> None:
    url = pg.new_database()
    data = work / f"pg-scale-{size}"
    whole = size if size <= STREAMED_UP_TO else 0  # as many service tokens, for GET /_/token
    seeded = seed_sync(data, [Group("scale", size)], database_url=url, service_tokens=whole)
    rows.append(Row("PostgreSQL", f"{size:,} tokens: seeding (bulk SQL, one transaction)",
                    note=f"{seeded.seconds:.1f} s"))  # fmt: skip
    with server(_pg_args(data, url, http=True), ["grpc", "http"]) as svc:
        reads = scale_reads(svc, data, seeded, size, _notify(url))
        rss = svc.rss_mb()
    rows += [Row("PostgreSQL", f"{size:,} tokens: {what}", note=note) for what, note in reads]
    rows.append(Row("PostgreSQL", f"{size:,} tokens: server RSS", note=f"{rss:.0f} MB"))


def postgres_section(
    rows: list[Row], work: Path, runs: int, seconds: float, sizes: list[int]
) -> None:
    pg = start_server()
    try:
        _introspect_rows(rows, work, pg, runs, seconds)
        _create_rows(rows, work, pg, runs, seconds)
        for size in sizes:
            _scale_rows(rows, work, pg, size)
    finally:
        remove_server(pg)


__all__ = ["postgres_section"]
