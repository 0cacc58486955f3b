"""``tokengrpc serve``: the gRPC service, the gateway in the same process, and the workers.

The order is the contract's: ports first (a start that cannot have them
changes nothing), then the store, then serving and the start-up lines; on
SIGTERM the shutdown of ``shutdown.py``, then the store's close (the usage
flush).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import sys
from typing import TYPE_CHECKING

from tokengrpc import logs, tracing
from tokengrpc.clock import now_us
from tokengrpc.commands import listeners
from tokengrpc.commands.printing import say, warn_all
from tokengrpc.commands.process import freeze_startup_objects, open_files_for
from tokengrpc.commands.shutdown import exit_anyway_after, shut_down, stop_on_signals
from tokengrpc.config import SERVE, Settings, add_flags, to_json
from tokengrpc.durations import format_duration
from tokengrpc.server import Core, GrpcServer
from tokengrpc.supervise import (
    Worker,
    WorkerPipes,
    die_with_parent,
    report_ready,
    start_workers,
)

if TYPE_CHECKING:
    from gateway.app import HttpServer

log = logging.getLogger("tokengrpc")

#: How a worker is started; ``supervise`` adds ``--supervised PIPES``.
WORKER_COMMAND = (sys.executable, "-m", "tokengrpc", "serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SERVE)
    parser.add_argument("--supervised", type=WorkerPipes.decode, help=argparse.SUPPRESS)


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(serve(settings, args.supervised))


async def _report_secret_age(core: Core, max_secret_age: int | None) -> None:
    """Every start says how many tokens the maximum secret age stops (CONTRACT
    section 12): set or lowered, it applies to stored tokens at once."""
    if max_secret_age is None:
        return
    stopped = await core.store.count_past_secret_age(now_us(), max_secret_age)
    log.info(
        "max secret age %s: %d token(s) that would otherwise authenticate no longer do;"
        " rotating one gives it a new secret",
        format_duration(max_secret_age),
        stopped,
    )


async def serve(settings: Settings, supervised: WorkerPipes | None = None) -> int:
    stop = stop_on_signals()
    if supervised is not None:
        die_with_parent(supervised, stop)
    open_files_for(
        settings.grpc_max_connections
        + (settings.http_max_connections if settings.http_enabled else 0)
    )
    certificates = listeners.certificates(settings)
    if certificates is not None and settings.http_enabled and not settings.http_in_process:
        raise ValueError("--http-upstream network is for a plaintext gRPC listener")
    # Every worker decides for itself, from the environment it inherited.
    traces = tracing.start(os.environ)
    metrics, metrics_dir = listeners.metrics(settings)
    shared = settings.workers > 1 or settings.is_worker
    grpc_server = GrpcServer(
        reuse_port=shared,
        settings=settings,
        metrics=metrics,
        access=logs.AccessLog() if settings.access_log else None,
        credentials=certificates.grpc_credentials() if certificates is not None else None,
        tracing=traces,
    )
    http_socket: socket.socket | None = None
    metrics_address = None
    try:
        # The ports first: a start that cannot have them changes nothing (no
        # store, key or bootstrap token is made before they are ours).
        port = grpc_server.bind(settings.grpc_listen)
        if settings.http_enabled:
            from gateway.app import bind  # the gateway is optional at run time

            http_socket = bind(settings.http_listen, reuse_port=shared)
        if metrics is not None and settings.metrics_listen and supervised is None:
            metrics_address = metrics.listen(settings.metrics_listen)
        core = await Core.open(
            settings, bootstrap=not settings.is_worker, metrics=metrics, create=True
        )
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        with contextlib.suppress(Exception):
            await grpc_server.server.stop(None)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if traces is not None:
            traces.stop()
        raise
    warn_all(core.notices)
    if not settings.is_worker:
        await _report_secret_age(core, settings.max_secret_age)
    if core.bootstrap_path is not None:
        say(f"bootstrap token written to {core.bootstrap_path}")
    grpc_server.attach(core)
    http: HttpServer | None = None
    workers: list[Worker] = []
    watcher = (
        asyncio.create_task(certificates.watch(), name="tls-watch")
        if certificates is not None
        else None
    )
    sharer = (
        asyncio.create_task(metrics.share_forever(), name="metrics-share")
        if metrics is not None and metrics.shared
        else None
    )
    try:
        await grpc_server.start()
        host = settings.grpc_listen.rpartition(":")[0]
        grpc_address = f"{host}:{port}"
        if http_socket is not None:
            from gateway.app import start_http

            upstream = grpc_server.in_process if settings.http_in_process else grpc_address
            http = await start_http(
                upstream,
                http_socket,
                settings.trusted_proxies,
                limits=listeners.http_limits(settings),
                grace_period=settings.grace_period,
                observer=listeners.observer(settings, metrics, traces),
                tls=certificates.context if certificates is not None else None,
                leak_reports=settings.github_scanning_keys is not None,
            )
        if certificates is None and supervised is None:
            listeners.warn_plaintext(grpc_address)
            if http is not None:
                listeners.warn_plaintext(http.address)
        if settings.workers > 1:
            http_address = http.address if http is not None else None
            workers = await start_workers(
                settings.workers - 1,
                WORKER_COMMAND,
                worker_settings(settings, grpc_address, http_address),
            )
        freeze_startup_objects()
        if supervised is not None:
            report_ready(supervised)
        else:
            say(f"grpc listening on {grpc_address}")
            if http is not None:
                say(f"http listening on {http.address}")
            if metrics_address is not None:
                say(f"metrics listening on {metrics_address}")
        await stop.wait()
        say("shutting down")
    finally:
        exit_anyway_after(settings.grace_period + 2)
        if watcher is not None:
            watcher.cancel()
        await shut_down(settings.grace_period, grpc_server, http, workers)
        try:
            await core.close()
        finally:
            if sharer is not None and metrics is not None:
                sharer.cancel()
                metrics.share_last()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
            if traces is not None:
                await asyncio.to_thread(traces.stop)
    return 0


def worker_settings(settings: Settings, grpc_address: str, http_address: str | None) -> bytes:
    """Ours, whole, on the ports we bound: a worker cannot miss a setting we were given."""
    return to_json(
        dataclasses.replace(
            settings,
            is_worker=True,
            workers=1,
            grpc_listen=grpc_address,
            http_listen=http_address or settings.http_listen,
            http_enabled=http_address is not None,
        )
    )
