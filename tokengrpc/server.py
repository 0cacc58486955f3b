"""Assembles the running service and starts and stops it in the right order.

Start: store, key, rules, bootstrap token, usage flusher, gRPC server.
Stop: refuse new calls, let in-flight ones finish (grace period), flush the
usage counts, close the store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tokengrpc.addresses import ClientAddressResolver
from tokengrpc.auth import Authenticator
from tokengrpc.bootstrap import ensure_bootstrap_token
from tokengrpc.config import Settings
from tokengrpc.inprocess import InProcessChannel
from tokengrpc.plaintext import valid_prefix
from tokengrpc.reflection import enable_reflection
from tokengrpc.sealing import Sealer, load_or_create_key
from tokengrpc.servicer import TokenServicer
from tokengrpc.store.sqlite import SqliteStore
from tokengrpc.tokens import TokenManager
from tokengrpc.usage import UsageRecorder, wait_or_timeout
from tokengrpc.v1 import tokens_pb2, tokens_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = tokens_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name


@dataclass
class Core:
    """The pieces the gRPC server and the command line share."""

    store: SqliteStore
    usage: UsageRecorder
    authenticator: Authenticator
    manager: TokenManager
    bootstrap_path: Path | None

    @classmethod
    async def open(cls, settings: Settings, *, bootstrap: bool = True) -> Core:
        if not valid_prefix(settings.token_prefix):
            raise ValueError(f"token prefix {settings.token_prefix!r} is not usable")
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = load_or_create_key(settings.data_dir, settings.secret_key)
        store = await SqliteStore.open(settings.data_dir)
        usage = UsageRecorder(store, settings.usage_flush_interval)
        authenticator = Authenticator(store, usage, ClientAddressResolver(settings.trusted_proxies))
        manager = TokenManager(store, usage, authenticator, Sealer(key), settings.token_prefix)
        path = (
            await ensure_bootstrap_token(store, manager, settings.data_dir) if bootstrap else None
        )
        return cls(store, usage, authenticator, manager, path)

    async def close(self) -> None:
        await self.usage.stop()
        await self.store.close()


class GrpcServer:
    """grpc.aio server with TokenService, health and reflection."""

    def __init__(self, core: Core, *, reuse_port: bool = False) -> None:
        self.core = core
        # SO_REUSEPORT only for the workers of one `serve`: otherwise a second
        # server on a busy port must fail loudly, not quietly take half the traffic.
        self.server = grpc.aio.server(options=(("grpc.so_reuseport", int(reuse_port)),))
        self.health = health.aio.HealthServicer()
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        servicer = TokenServicer(core.manager, core.authenticator)
        tokens_pb2_grpc.add_TokenServiceServicer_to_server(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        #: The same handlers, for an in-process gateway.
        self.in_process = InProcessChannel()
        self.in_process.register(tokens_pb2.DESCRIPTOR.services_by_name["TokenService"], servicer)
        self.in_process.register(health_pb2.DESCRIPTOR.services_by_name["Health"], self.health)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), self.server)

    async def _watch_store(self, interval: float = 1.0) -> None:
        """Report NOT_SERVING while the store does not answer, for /readyz and probes."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(interval):
                    await self.core.store.ping()
                status = serving
            except Exception:
                log.exception("the store does not answer")
                status = not_serving
            await self.health.set(SERVICE_NAME, status)
            await wait_or_timeout(self._stopping, interval)

    async def start(self, listen: str) -> int:
        """Bind (port 0 picks one), start serving; return the bound port."""
        try:
            port = self.server.add_insecure_port(listen)
        except RuntimeError as error:
            raise OSError(f"could not listen on {listen}: {error}") from None
        if port == 0:
            raise OSError(f"could not listen on {listen}")
        await self.server.start()
        self.core.usage.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set(SERVICE_NAME, serving)
        await self.health.set("", serving)
        self._watchdog = asyncio.create_task(self._watch_store(), name="store-watch")
        return port

    async def stop(self, grace: float) -> None:
        # A flag, not cancel(): on 3.11 a cancel can be swallowed mid-await.
        self._stopping.set()
        if self._watchdog is not None:
            await self._watchdog
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
