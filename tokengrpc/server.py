"""Assembles the running service and starts and stops it in the right order.

Start: store, key, rules, bootstrap token, usage flusher, gRPC server.
Stop: refuse new calls, let in-flight ones finish (grace period), flush the
usage counts, close the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tokengrpc import extauthz
from tokengrpc.addresses import ClientAddressResolver
from tokengrpc.auth import Authenticator
from tokengrpc.bootstrap import ensure_bootstrap_token
from tokengrpc.clock import now_us
from tokengrpc.config import Settings
from tokengrpc.errors import Unavailable
from tokengrpc.inprocess import InProcessChannel
from tokengrpc.keycheck import checked_key
from tokengrpc.leakkeys import ScanningKeys
from tokengrpc.leaks import LeakReports
from tokengrpc.logs import AccessLog
from tokengrpc.metrics import Metrics, ignore
from tokengrpc.observe import GrpcObserver
from tokengrpc.plaintext import valid_prefix
from tokengrpc.reflection import enable_reflection
from tokengrpc.reminders import Reminders
from tokengrpc.sealing import Sealer
from tokengrpc.servicer import TokenServicer
from tokengrpc.silent import SilentConnections
from tokengrpc.store import TokenStore
from tokengrpc.store.open import open_store
from tokengrpc.sweeper import Sweeper
from tokengrpc.tokens import TokenManager
from tokengrpc.usage import UsageRecorder, unwritten_bound, wait_or_timeout
from tokengrpc.v1 import tokens_pb2, tokens_pb2_grpc
from tokengrpc.webhooks.sender import WebhookSender

if TYPE_CHECKING:
    from tokengrpc.spans import Tracing

log = logging.getLogger(__name__)

SERVICE_NAME = tokens_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name


@dataclass
class Core:
    """The pieces the gRPC server and the command line share."""

    store: TokenStore
    usage: UsageRecorder
    authenticator: Authenticator
    manager: TokenManager
    bootstrap_path: Path | None
    #: Warnings for the operator's stderr (a key file others can read).
    notices: list[str]
    #: Leak reports, when a source of the keys that sign them is configured.
    leaks: LeakReports | None = None
    #: Sends the outbox to the webhook URLs; None when none is set.
    webhooks: WebhookSender | None = None
    #: The time-driven policies, started with the gRPC server; None in the
    #: workers of ``serve --workers`` (the first process runs them).
    sweeper: Sweeper | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        bootstrap: bool = True,
        metrics: Metrics | None = None,
        create: bool = True,
        clock: Callable[[], int] = now_us,
    ) -> Core:
        """``create``: make the store (and data dir, key file) if there is none
        (``serve``). ``clock``: what each request reads its "now" from (a test
        may move it)."""
        if not valid_prefix(settings.token_prefix):
            raise ValueError(f"token prefix {settings.token_prefix!r} is not usable")
        if settings.webhook_urls and not settings.webhook_secret:
            raise ValueError(
                "--webhook-url needs TOKENGRPC_WEBHOOK_SECRET (whsec_ and the signing key in"
                " base64, as Standard Webhooks defines) to sign what it sends"
            )
        store = await open_store(settings, create=create)
        try:
            return await cls._assemble(store, settings, bootstrap, metrics, create, clock)
        except BaseException:  # a start that fails half-way leaves no connection open
            await store.close()
            raise

    @classmethod
    async def _assemble(
        cls,
        store: TokenStore,
        settings: Settings,
        bootstrap: bool,
        metrics: Metrics | None,
        create: bool,
        clock: Callable[[], int],
    ) -> Core:
        """Everything over an open store; ``open`` closes it if this fails."""
        key = await checked_key(store, settings.data_dir, settings.secret_key, make_dir=create)
        usage = UsageRecorder(store, settings.usage_flush_interval)
        margin = unwritten_bound(settings.usage_flush_interval)
        authenticator = Authenticator(
            store,
            ClientAddressResolver(settings.trusted_proxies),
            metrics.authenticated if metrics is not None else ignore,
            clock,
            settings.max_secret_age,
            revoke_unused_after=settings.revoke_unused_after,
            unused_margin=margin,
        )
        sweeper = None
        if not settings.is_worker:
            sweeper = Sweeper(
                store,
                clock,
                reminders=Reminders(settings.expiry_reminders, settings.max_secret_age),
                revoke_unused_after=settings.revoke_unused_after,
                unused_margin=margin,
            )
        manager = TokenManager(
            store,
            authenticator,
            Sealer(key.key),
            settings.token_prefix,
            settings.max_secret_age,
        )
        notices = key.notices
        if bootstrap:
            # The store queues events for the URLs of the last `serve` started
            # (docs/webhooks.md), the bootstrap token's creation included.
            dropped = await store.outbox.set_webhook_urls(settings.webhook_urls)
            if dropped:
                notices.append(f"{dropped} undelivered webhook events of removed URLs were dropped")
        path = (
            await ensure_bootstrap_token(store, manager, settings.data_dir) if bootstrap else None
        )
        source = settings.github_scanning_keys
        leaks = LeakReports(ScanningKeys(source, clock), manager) if source else None
        webhooks = None
        if settings.webhook_urls and settings.webhook_secret:
            webhooks = WebhookSender(
                store.outbox,
                settings.webhook_secret,
                clock=clock,
                metrics=metrics,
                max_secret_age=settings.max_secret_age,
            )
        return cls(store, usage, authenticator, manager, path, notices, leaks, webhooks, sweeper)

    def start(self) -> None:
        """The background work: usage writes, webhook deliveries, the time-driven policies."""
        self.usage.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.sweeper is not None:
            self.sweeper.start()

    async def close(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.authenticator.settle()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.usage.stop()
        await self.store.close()


#: The transport reads messages up to this many times the per-message limit, so
#: that the observer sees an oversized request and answers it itself (Check
#: with a denial); beyond it grpc refuses with RESOURCE_EXHAUSTED unread. Small:
#: every open stream may hold a message this large before any check runs.
TRANSPORT_FACTOR = 2
#: Requests must not be compressed: a few KiB of gzip would cost the limit's
#: worth of decompression per stream, before any check (a token service's
#: requests are too small to gain from it). Bit 0 is "identity" alone.
_IDENTITY_ONLY = 1


def connection_options(settings: Settings) -> tuple[tuple[str, int], ...]:
    """What one client may hold of the gRPC server: connections, streams, bytes, pings."""
    return (
        ("grpc.max_connection_idle_ms", int(settings.grpc_max_connection_idle * 1000)),
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grace_period * 1000)),
        # TLS and the client's SETTINGS within the head timeout; the first call
        # within it too, which SilentConnections sees to (from channelz).
        ("grpc.server_handshake_timeout_ms", int(settings.http_head_timeout * 1000)),
        ("grpc.enable_channelz", 1),
        ("grpc.compression_enabled_algorithms_bitset", _IDENTITY_ONLY),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
        (
            "grpc.max_receive_message_length",
            settings.grpc_max_receive_bytes * TRANSPORT_FACTOR,
        ),
        # Keepalive enforcement: pings more often than this, or without calls,
        # earn strikes, and two strikes close the connection (GOAWAY).
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.grpc_keepalive_min_time * 1000),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 0),
    )


class GrpcServer:
    """grpc.aio server with TokenService, health and reflection.

    Either given its ``Core`` at once and started on an address, or, as
    ``serve`` does it, bound first (``bind``), then given the core
    (``attach``) and started: a start that cannot bind leaves no store behind.
    """

    def __init__(
        self,
        core: Core | None = None,
        *,
        reuse_port: bool = False,
        settings: Settings | None = None,
        metrics: Metrics | None = None,
        access: AccessLog | None = None,
        credentials: grpc.ServerCredentials | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        #: None: plaintext.
        self._credentials = credentials
        self._metrics = metrics
        # SO_REUSEPORT only for the workers of one `serve`: otherwise a second
        # server on a busy port must fail loudly, not quietly take half the traffic.
        settings = settings or Settings()
        self._head_timeout = settings.http_head_timeout
        options = (("grpc.so_reuseport", int(reuse_port)), *connection_options(settings))
        # Every method takes grpc_max_receive_bytes per message (the transport
        # lets more through, see TRANSPORT_FACTOR); Check denies a larger one.
        observer = GrpcObserver(
            metrics,
            access,
            max_request_bytes=settings.grpc_max_receive_bytes,
            oversized={extauthz.CHECK_METHOD: extauthz.TOO_LARGE},
            tracing=tracing,
            carriers={extauthz.CHECK_METHOD: extauthz.checked_trace_context},
        )
        self.server = grpc.aio.server(options=options, interceptors=(observer,))
        self.health = health.aio.HealthServicer()
        self._watchdog: asyncio.Task[None] | None = None
        self._silent: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._port: int | None = None
        self._core: Core | None = None
        #: The same handlers, for an in-process gateway.
        self.in_process = InProcessChannel(tracing)
        if core is not None:
            self.attach(core)

    @property
    def core(self) -> Core:
        assert self._core is not None, "attach() comes before serving"
        return self._core

    def bind(self, listen: str) -> int:
        """Take the address (port 0 picks one) without serving yet; return the bound port."""
        try:
            if self._credentials is None:
                port = self.server.add_insecure_port(listen)
            else:
                port = self.server.add_secure_port(listen, self._credentials)
        except RuntimeError as error:
            raise OSError(f"could not listen on {listen}: {error}") from None
        if port == 0:
            raise OSError(f"could not listen on {listen}")
        self._port = port
        return port

    def attach(self, core: Core) -> None:
        """The services, on ``core``'s store and rules."""
        self._core = core
        metrics = self._metrics
        servicer = TokenServicer(
            core.manager,
            core.authenticator,
            metrics.introspected if metrics is not None else ignore,
            core.leaks,
        )
        tokens_pb2_grpc.add_TokenServiceServicer_to_server(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.in_process.register(tokens_pb2.DESCRIPTOR.services_by_name["TokenService"], servicer)
        #: ``CheckToken`` without the channel, for the in-process ``/auth/check``.
        self.local_check = servicer
        self.in_process.register(health_pb2.DESCRIPTOR.services_by_name["Health"], self.health)
        decided = metrics.decision if metrics is not None else None
        authz = extauthz.register(self.server, core.authenticator, decided)
        enable_reflection((SERVICE_NAME, authz, health.SERVICE_NAME), self.server)

    async def _watch_store(self, interval: float = 1.0) -> None:
        """Report NOT_SERVING while the store does not answer or its disk refuses
        writes (probing with a harmless write), for /readyz and probes."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(interval):
                    await self.core.store.ping()
                    if not self.core.store.writable:
                        await self.core.store.probe_write()
                status = serving
            except Unavailable:
                status = not_serving  # the store logged why, once
            except Exception:
                log.exception("the store does not answer")
                status = not_serving
            await self.health.set(SERVICE_NAME, status)
            await wait_or_timeout(self._stopping, interval)

    async def start(self, listen: str | None = None) -> int:
        """Bind ``listen`` unless ``bind`` did, start serving; return the bound port."""
        port = self.bind(listen) if listen is not None else self._port
        assert port is not None, "bind() or an address comes before serving"
        await self.server.start()
        self.core.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set(SERVICE_NAME, serving)
        await self.health.set("", serving)
        self._watchdog = asyncio.create_task(self._watch_store(), name="store-watch")
        silent = SilentConnections(port, self._head_timeout)
        self._silent = asyncio.create_task(silent.run(self._stopping), name="silent-grpc")
        return port

    async def stop(self, grace: float) -> None:
        # A flag, not cancel(): on 3.11 a cancel can be swallowed mid-await.
        self._stopping.set()
        for task in (self._watchdog, self._silent):
            if task is not None:
                await task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
