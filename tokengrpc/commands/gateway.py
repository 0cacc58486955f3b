"""``tokengrpc gateway``: the HTTP gateway alone, in front of a gRPC server elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import grpc

from tokengrpc import tracing
from tokengrpc.commands import listeners
from tokengrpc.commands.printing import say
from tokengrpc.commands.process import freeze_startup_objects, open_files_for
from tokengrpc.commands.shutdown import stop_on_signals
from tokengrpc.config import GATEWAY, Settings, add_flags
from tokengrpc.tls import channel_credentials

log = logging.getLogger("tokengrpc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, GATEWAY)


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(gateway(settings))


def upstream_channel(settings: Settings) -> str | grpc.aio.Channel:
    """The upstream's address (plaintext), or a TLS channel to it with ``--upstream-ca``."""
    if not settings.upstream:
        raise ValueError("the gateway needs --upstream HOST:PORT (or TOKENGRPC_UPSTREAM)")
    ca, cert, key = settings.upstream_ca, settings.upstream_cert, settings.upstream_key
    if ca is None and cert is None and key is None:
        return settings.upstream
    if (cert is None) != (key is None):
        raise ValueError("--upstream-cert and --upstream-key go together")
    return grpc.aio.secure_channel(settings.upstream, channel_credentials(ca, cert, key))


async def gateway(settings: Settings) -> int:
    from gateway.app import start_http  # the gateway is optional at run time

    stop = stop_on_signals()
    open_files_for(settings.http_max_connections)
    certificates = listeners.certificates(settings)
    metrics, _ = listeners.metrics(settings, serving=False)
    traces = tracing.start(os.environ)
    http = await start_http(
        upstream_channel(settings),
        settings.http_listen,
        settings.trusted_proxies,
        limits=listeners.http_limits(settings),
        grace_period=settings.grace_period,
        observer=listeners.observer(settings, metrics, traces),
        tls=certificates.context if certificates is not None else None,
        # The upstream checks the signatures with its own key source; here it
        # only says that the route is served.
        leak_reports=settings.github_scanning_keys is not None,
    )
    watcher = (
        asyncio.create_task(certificates.watch(), name="tls-watch")
        if certificates is not None
        else None
    )
    if certificates is None:
        listeners.warn_plaintext(http.address)
    freeze_startup_objects()
    say(f"http listening on {http.address}")
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        try:
            async with asyncio.timeout(settings.grace_period + 1):
                await http.stop()
        except TimeoutError:
            log.warning("shutdown passed the grace period")
        if traces is not None:
            await asyncio.to_thread(traces.stop)
    return 0
