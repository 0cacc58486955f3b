"""The ``tokengrpc`` command: serve, gateway, and token administration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import ipaddress
import logging
import os
import re
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from tokengrpc import logs
from tokengrpc.auth import operator
from tokengrpc.config import (
    GATEWAY,
    MIGRATE,
    SERVE,
    TOKEN,
    SettingError,
    Settings,
    add_flags,
    from_json,
    resolve,
    to_json,
)
from tokengrpc.errors import DomainError
from tokengrpc.metrics import Metrics, share_between_processes
from tokengrpc.observe import HttpObserver
from tokengrpc.server import Core, GrpcServer
from tokengrpc.store.open import migrate_store
from tokengrpc.store.postgres.dsn import has_password
from tokengrpc.supervise import (
    Worker,
    WorkerPipes,
    die_with_parent,
    read_settings,
    report_ready,
    start_workers,
    stop_workers,
)
from tokengrpc.tls import Certificates, TlsFiles, channel_credentials
from tokengrpc.v1 import tokens_pb2 as pb

if TYPE_CHECKING:
    from gateway.app import HttpServer
    from gateway.connections import ConnectionLimits
    from tokengrpc.tokens import TokenManager

log = logging.getLogger("tokengrpc")


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(core: Core) -> None:
    for notice in core.notices:
        log.warning("%s", notice)


def _open_files_for(connections: int) -> None:
    """Raise the soft limit on open files to the hard one, and warn if even that is short.

    The connection limits are meant to run out before the descriptors do: a
    process out of descriptors cannot accept anyone, nor open its store.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < connections + 64:
        log.warning(
            "the open-file limit (%d) is below the connection limits (%d) plus the store's"
            " files; lower the limits or raise it",
            soft,
            connections,
        )


def _freeze_startup_objects() -> None:
    """Keep what exists once serving (modules, descriptors, servers) out of full collections.

    It lives as long as the process, and under load a full collection walked
    it all every few seconds: pauses of about 25 ms, seen in p99. Now 3-4 ms.
    """
    gc.collect()
    gc.freeze()


def _stop_on_signals() -> asyncio.Event:
    """Installed before anything is announced, so a prompt SIGTERM is still clean."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _certificates(settings: Settings) -> Certificates | None:
    """TLS for the listeners, or None for plaintext; half a configuration is an error."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return Certificates(TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca))


def _warn_plaintext(listen: str) -> None:
    """Bearer secrets in cleartext are only acceptable on this machine."""
    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning(
            "serving plaintext on %s, which is not a loopback address: bearer tokens cross"
            " the network in the clear (use --tls-cert and --tls-key)",
            listen,
        )


def _metrics(settings: Settings, *, serving: bool = True) -> tuple[Metrics | None, str | None]:
    """The process's metrics; with ``serve``'s workers, the directory they share (ours
    to remove). ``tokengrpc gateway`` has no workers, whatever the environment says."""
    if not settings.metrics_enabled:
        return None, None
    directory = None
    if serving and settings.workers > 1 and not settings.is_worker:
        directory = tempfile.mkdtemp(prefix="tokengrpc-metrics-")
        share_between_processes(directory)
    return Metrics(), directory


def _observer(settings: Settings, metrics: Metrics | None) -> HttpObserver:
    return HttpObserver(metrics, logs.AccessLog() if settings.access_log else None)


async def _serve(settings: Settings, supervised: WorkerPipes | None = None) -> int:
    stop = _stop_on_signals()
    if supervised is not None:
        die_with_parent(supervised, stop)
    _open_files_for(
        settings.grpc_max_connections
        + (settings.http_max_connections if settings.http_enabled else 0)
    )
    certificates = _certificates(settings)
    if certificates is not None and settings.http_enabled and not settings.http_in_process:
        raise ValueError("--http-upstream network is for a plaintext gRPC listener")
    metrics, metrics_dir = _metrics(settings)
    shared = settings.workers > 1 or settings.is_worker
    grpc_server = GrpcServer(
        reuse_port=shared,
        settings=settings,
        metrics=metrics,
        access=logs.AccessLog() if settings.access_log else None,
        credentials=certificates.grpc_credentials() if certificates is not None else None,
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
        raise
    _warn(core)
    if core.bootstrap_path is not None:
        _say(f"bootstrap token written to {core.bootstrap_path}")
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
                limits=_http_limits(settings),
                grace_period=settings.grace_period,
                observer=_observer(settings, metrics),
                tls=certificates.context if certificates is not None else None,
            )
        if certificates is None and supervised is None:
            _warn_plaintext(grpc_address)
            if http is not None:
                _warn_plaintext(http.address)
        if settings.workers > 1:
            http_address = http.address if http is not None else None
            workers = await start_workers(
                settings.workers - 1,
                _WORKER_COMMAND,
                _worker_settings(settings, grpc_address, http_address),
            )
        _freeze_startup_objects()
        if supervised is not None:
            report_ready(supervised)
        else:
            _say(f"grpc listening on {grpc_address}")
            if http is not None:
                _say(f"http listening on {http.address}")
            if metrics_address is not None:
                _say(f"metrics listening on {metrics_address}")
        await stop.wait()
        _say("shutting down")
    finally:
        _exit_anyway_after(settings.grace_period + 2)
        if watcher is not None:
            watcher.cancel()
        await _shut_down(settings.grace_period, grpc_server, http, workers)
        try:
            await core.close()
        finally:
            if sharer is not None and metrics is not None:
                sharer.cancel()
                metrics.share_last()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


async def _shut_down(
    grace: float, grpc_server: GrpcServer, http: HttpServer | None, workers: list[Worker]
) -> None:
    """Stop serving within ``grace`` (plus a little), whatever clients do.

    HTTP first, so requests it forwards over the network still find the gRPC
    server; gRPC gets what is left of the grace period. Whatever still hangs
    after that is abandoned: the usage flush and a clean exit matter more.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    stopping = asyncio.ensure_future(stop_workers(workers, grace))
    try:
        async with asyncio.timeout(grace + 1):
            if http is not None:
                await http.stop()
            await grpc_server.stop(max(deadline - loop.time(), 0.1))
            await stopping
    except TimeoutError:
        log.warning("shutdown passed the grace period; closing anyway")
        stopping.cancel()


def _exit_anyway_after(seconds: float) -> None:
    """The last resort, should anything hang past the deadline (a blocked loop, a stuck thread)."""

    def say_so() -> None:
        log.error("shutdown hung; exiting")
        for handler in logging.getLogger().handlers:
            handler.flush()  # os._exit flushes nothing

    def give_up() -> None:
        # From a thread of its own: if stderr itself is what blocks, the line
        # must not keep the process from exiting.
        saying = threading.Thread(target=say_so, name="exit-anyway-log", daemon=True)
        saying.start()
        saying.join(1.0)
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def _http_limits(settings: Settings) -> ConnectionLimits:
    from gateway.connections import ConnectionLimits

    return ConnectionLimits(
        max_head_bytes=settings.http_max_head_bytes,
        head_timeout=settings.http_head_timeout,
        keep_alive_timeout=settings.http_keep_alive_timeout,
        max_connections=settings.http_max_connections,
    )


def _worker_settings(settings: Settings, grpc_address: str, http_address: str | None) -> bytes:
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


_WORKER_COMMAND = (sys.executable, "-m", "tokengrpc", "serve")


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How ``tokengrpc gateway`` reaches a TLS upstream (all None: plaintext)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def channel(self, target: str) -> str | grpc.aio.Channel:
        if self.ca is None and self.cert is None and self.key is None:
            return target
        if (self.cert is None) != (self.key is None):
            raise ValueError("--upstream-cert and --upstream-key go together")
        return grpc.aio.secure_channel(target, channel_credentials(self.ca, self.cert, self.key))


async def _gateway(upstream: str, settings: Settings, upstream_tls: UpstreamTls) -> int:
    from gateway.app import start_http

    stop = _stop_on_signals()
    _open_files_for(settings.http_max_connections)
    certificates = _certificates(settings)
    metrics, _ = _metrics(settings, serving=False)
    http = await start_http(
        upstream_tls.channel(upstream),
        settings.http_listen,
        settings.trusted_proxies,
        limits=_http_limits(settings),
        grace_period=settings.grace_period,
        observer=_observer(settings, metrics),
        tls=certificates.context if certificates is not None else None,
    )
    watcher = (
        asyncio.create_task(certificates.watch(), name="tls-watch")
        if certificates is not None
        else None
    )
    if certificates is None:
        _warn_plaintext(http.address)
    _freeze_startup_objects()
    _say(f"http listening on {http.address}")
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
    return 0


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> duration_pb2.Duration:
    """``30s``, ``15m``, ``1h30m``, ``2d``: a grace period for ``token rotate``."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError("use a duration such as 30s, 15m, 1h30m or 2d")
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(
        round(sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts) * 1_000_000)
    )
    return duration


Selecting = TypeVar("Selecting", pb.RevokeTokenRequest, pb.RotateTokenRequest)


def _select(message: Selecting, target: str) -> Selecting:
    """``message`` picking a token by id (ASCII digits) or a service token by name."""
    if target.isascii() and target.isdigit():
        message.id = int(target)
    else:
        message.name = target
    return message


def _format_time(token: pb.Token, field: str) -> str:
    if not token.HasField(field):  # type: ignore[arg-type]
        return "-"
    stamp: timestamp_pb2.Timestamp = getattr(token, field)
    return stamp.ToDatetime(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _token_command(args: argparse.Namespace, settings: Settings) -> int:
    core = await Core.open(settings, bootstrap=False, create=False)
    _warn(core)
    manager = core.manager
    try:
        if args.action == "create":
            request = pb.CreateTokenRequest(
                name=args.name,
                owner=args.owner or "",
                scopes=args.scope,
                service_token=args.service,
                allowed_ips=args.allowed_ip,
            )
            if args.expires:
                request.expire_time.CopyFrom(_timestamp(args.expires))
            created = await manager.create_token(operator(), request)
            _say(created.plaintext)
        elif args.action == "list":
            page_token, rows = "", list[pb.Token]()
            while True:
                page = await manager.list_tokens(
                    operator(),
                    pb.ListTokensRequest(
                        owner=args.owner or "",
                        service_tokens=args.service,
                        show_revoked=args.all,
                        page_size=1000,
                        page_token=page_token,
                    ),
                )
                rows.extend(page.tokens)
                page_token = page.next_page_token
                if not page_token:
                    break
            _say("ID\tSTATUS\tOWNER\tNAME\tSCOPES\tEXPIRES\tLAST USED\tUSES")
            for token in rows:
                status = pb.TokenStatus.Name(token.status).removeprefix("TOKEN_STATUS_").lower()
                owner = token.owner or "(service)"
                _say(
                    f"{token.id}\t{status}\t{owner}\t{token.name}\t{' '.join(token.scopes)}\t"
                    f"{_format_time(token, 'expire_time')}\t"
                    f"{_format_time(token, 'last_use_time')}\t{token.usage_count}"
                )
        elif args.action == "rotate":
            rotated = await manager.rotate_token(
                operator(), _select(pb.RotateTokenRequest(grace_period=args.grace), args.target)
            )
            _say(rotated.plaintext)
        elif args.action == "events":
            await _print_events(manager, args.token_id or 0)
        else:
            revoked = await manager.revoke_token(
                operator(), _select(pb.RevokeTokenRequest(), args.target)
            )
            _say(f"revoked token {revoked.token.id} ({revoked.token.name})")
    except DomainError as error:
        log.error("%s", error.message)
        return 1
    finally:
        await core.close()
    return 0


async def _migrate(settings: Settings) -> int:
    """Apply the store's migrations, as every start does, and say the version."""
    _before, after = await migrate_store(settings)
    _say(f"schema version {after}")
    return 0


async def _print_events(manager: TokenManager, token_id: int) -> None:
    """Every event (of one token, or all), newest first, one line each."""
    _say("TIME\tACTION\tTOKEN\tACTOR\tACTOR OWNER\tCLIENT\tFIELDS")
    page_token = ""
    while True:
        page = await manager.list_token_events(
            operator(),
            pb.ListTokenEventsRequest(token_id=token_id, page_size=1000, page_token=page_token),
        )
        for event in page.events:
            when = event.event_time.ToDatetime(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            action = pb.TokenEventAction.Name(event.action).removeprefix("TOKEN_EVENT_ACTION_")
            _say(
                f"{when}\t{action.lower()}\t{event.token_id}\t{event.actor_token_id}\t"
                f"{event.actor_owner or '-'}\t{event.client_ip or '-'}\t"
                f"{','.join(event.changed_fields) or '-'}"
            )
        page_token = page.next_page_token
        if not page_token:
            return


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokengrpc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service and the HTTP gateway")
    add_flags(serve, SERVE)
    serve.add_argument("--supervised", type=WorkerPipes.decode, help=argparse.SUPPRESS)

    gateway = commands.add_parser("gateway", help="run the HTTP gateway alone")
    gateway.add_argument("--upstream", required=True, help="HOST:PORT of the gRPC server")
    gateway.add_argument("--upstream-ca", type=Path, help="PEM CA: reach the upstream over TLS")
    gateway.add_argument("--upstream-cert", type=Path, help="PEM client certificate (mTLS)")
    gateway.add_argument("--upstream-key", type=Path, help="PEM key of --upstream-cert")
    add_flags(gateway, GATEWAY)

    token = commands.add_parser("token", help="administer tokens directly in the store")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token and print its plaintext")
    add_flags(create, TOKEN)
    create.add_argument("--name", required=True)
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--owner", help="the subject the token belongs to")
    who.add_argument("--service", action="store_true", help="a service token (no owner)")
    create.add_argument("--scope", action="append", default=[], help="repeat for several")
    create.add_argument("--expires", help="RFC 3339 time, e.g. 2030-01-01T00:00:00Z")
    create.add_argument("--allowed-ip", action="append", default=[], help="address or CIDR")

    listing = actions.add_parser("list", help="list tokens")
    add_flags(listing, TOKEN)
    whose = listing.add_mutually_exclusive_group()
    whose.add_argument("--owner", help="whose tokens (default: admin)")
    whose.add_argument("--service", action="store_true", help="list service tokens")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")

    revoke = actions.add_parser("revoke", help="revoke a token")
    add_flags(revoke, TOKEN)
    revoke.add_argument("target", help="a token id, or a service token's name")

    rotate = actions.add_parser("rotate", help="give a token a new secret and print it")
    add_flags(rotate, TOKEN)
    rotate.add_argument("target", help="a token id, or a service token's name")
    rotate.add_argument(
        "--grace",
        type=_duration,
        default=duration_pb2.Duration(),
        help="how long the old secret keeps working, e.g. 30s or 1h (default 0, at most 7d)",
    )

    events = actions.add_parser("events", help="list the audit events, newest first")
    add_flags(events, TOKEN)
    events.add_argument("token_id", nargs="?", type=int, help="only this token's events")

    migrate = commands.add_parser(
        "migrate", help="bring the store's schema up to date, print its version and exit"
    )
    add_flags(migrate, MIGRATE)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """A worker's are its parent's, whole; anyone else's come from variables and flags."""
    supervised: WorkerPipes | None = getattr(args, "supervised", None)
    if supervised is not None:
        return from_json(read_settings(supervised))
    return resolve(os.environ, args)


def _warn_password_on_command_line(args: argparse.Namespace) -> None:
    """A ``--database`` password shows in the process list (``ps``, ``/proc``) to everyone."""
    url = getattr(args, "database_url", None)
    if url and has_password(url):
        log.warning(
            "the --database URL holds a password, which any user of this machine can read"
            " in the process list; give the URL in TOKENGRPC_DATABASE_URL instead, or the"
            " password in PGPASSWORD or ~/.pgpass"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingError as error:
        if str(error).startswith("TOKENGRPC_"):
            print(f"tokengrpc: a TOKENGRPC_ variable is not valid: {error}", file=sys.stderr)
        else:
            print(f"tokengrpc: {error}", file=sys.stderr)
        return 2
    # From here on every message goes through logging, in the chosen format
    # (the commands' results and serve's start-up lines stay on stdout).
    logs.configure(settings.log_format, access_log=settings.access_log)
    _warn_password_on_command_line(args)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings, args.supervised))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command == "gateway":
            upstream_tls = UpstreamTls(args.upstream_ca, args.upstream_cert, args.upstream_key)
            return asyncio.run(_gateway(args.upstream, settings, upstream_tls))
        return asyncio.run(_token_command(args, settings))
    except (OSError, ValueError) as error:
        log.error("%s", error)
        return 2
    except DomainError as error:  # the store refused a start-up write (a full disk)
        log.error("%s", error.message)
        return 2


if __name__ == "__main__":
    sys.exit(main())
