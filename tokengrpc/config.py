"""Settings, from the environment first and then from command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tokengrpc.addresses import DEFAULT_TRUSTED_PROXIES
from tokengrpc.store.postgres.dsn import is_postgres


@dataclass(frozen=True, slots=True)
class Settings:
    #: Where the SQLite file, the secret key and the bootstrap token live.
    data_dir: Path = Path("var")
    grpc_listen: str = "127.0.0.1:50051"
    http_listen: str = "127.0.0.1:8080"
    http_enabled: bool = True
    #: The gateway inside ``serve`` calls the servicers directly (no network hop);
    #: False makes it dial the gRPC port like a separate gateway would.
    http_in_process: bool = True
    #: Empty: SQLite in ``data_dir``. A ``postgresql://`` URL: that database,
    #: shared by every instance pointed at it (never printed with its password).
    database_url: str = ""
    #: AES-256-GCM key for retrievable values; else ``<data_dir>/secret.key``.
    secret_key: str | None = None
    token_prefix: str = "tgr_"  # noqa: S105 (a label, not a secret)
    #: Peers whose ``x-forwarded-for`` is believed (CIDR ranges).
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    #: Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    grace_period: float = 10.0
    #: Seconds between writes of batched usage counts (at most 1).
    usage_flush_interval: float = 0.5
    #: Server processes sharing the ports (SO_REUSEPORT) and the store (WAL).
    workers: int = 1
    #: Set in the extra processes ``serve --workers`` starts: no bootstrap, no
    #: further workers, and the ports are shared.
    is_worker: bool = False
    #: HTTP: bytes a request line and headers may take (431 beyond).
    http_max_head_bytes: int = 16 * 1024
    #: HTTP: seconds a connection may take to send a complete request head;
    #: gRPC: to finish its handshake and start a first call.
    http_head_timeout: float = 10.0
    #: HTTP: seconds an idle keep-alive connection is kept open.
    http_keep_alive_timeout: int = 5
    #: HTTP: open connections per process; more are closed as they arrive.
    http_max_connections: int = 1000
    #: gRPC: seconds a connection with no calls is kept open.
    grpc_max_connection_idle: float = 300.0
    #: gRPC: concurrent calls on one connection.
    grpc_max_concurrent_streams: int = 1000
    #: gRPC: open connections per process.
    grpc_max_connections: int = 1000
    #: gRPC: bytes of one request message (the HTTP body limit is 1 MiB too).
    grpc_max_receive_bytes: int = 1024 * 1024
    #: gRPC: seconds a client must leave between keepalive pings.
    grpc_keepalive_min_time: float = 10.0
    #: PEM certificate chain and key: both listeners speak TLS (reloaded when renewed).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: PEM CA bundle: clients must present a certificate it signed (mTLS), on both listeners.
    tls_client_ca: Path | None = None
    #: ``/metrics`` on the HTTP listener and these counters at all; off only to measure their cost.
    metrics_enabled: bool = True
    #: HOST:PORT of a listener serving only ``/metrics`` (the way to scrape with ``--no-http``).
    metrics_listen: str | None = None
    #: ``text`` or ``json``, for access lines and application messages alike.
    log_format: str = "text"
    #: One line on stderr per request.
    access_log: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        base = cls()
        trusted = env.get("TOKENGRPC_TRUSTED_PROXIES")
        return dataclasses.replace(
            base,
            data_dir=Path(env.get("TOKENGRPC_DATA_DIR") or base.data_dir),
            grpc_listen=env.get("TOKENGRPC_GRPC_LISTEN") or base.grpc_listen,
            http_listen=env.get("TOKENGRPC_HTTP_LISTEN") or base.http_listen,
            database_url=database_url(env.get("TOKENGRPC_DATABASE_URL") or ""),
            secret_key=env.get("TOKENGRPC_SECRET_KEY") or None,
            token_prefix=env.get("TOKENGRPC_TOKEN_PREFIX") or base.token_prefix,
            trusted_proxies=tuple(p.strip() for p in trusted.split(",") if p.strip())
            if trusted is not None
            else base.trusted_proxies,
            http_in_process=env.get("TOKENGRPC_HTTP_UPSTREAM", "in-process") != "network",
            workers=int(env.get("TOKENGRPC_WORKERS") or base.workers),
            tls_cert=_path(env.get("TOKENGRPC_TLS_CERT")),
            tls_key=_path(env.get("TOKENGRPC_TLS_KEY")),
            tls_client_ca=_path(env.get("TOKENGRPC_TLS_CLIENT_CA")),
            metrics_enabled=_switch(env.get("TOKENGRPC_METRICS"), "TOKENGRPC_METRICS"),
            metrics_listen=env.get("TOKENGRPC_METRICS_LISTEN") or None,
            log_format=log_format(env.get("TOKENGRPC_LOG_FORMAT") or base.log_format),
            access_log=_switch(env.get("TOKENGRPC_ACCESS_LOG"), "TOKENGRPC_ACCESS_LOG"),
            **{  # type: ignore[arg-type]  # each parser returns its field's type
                limit.field: limit.parse(env[limit.variable])
                for limit in LIMITS
                if env.get(limit.variable)
            },
        )


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _switch(text: str | None, variable: str) -> bool:
    """``on`` (the default) or ``off``."""
    if text is None or text.lower() in ("", "on", "1", "true"):
        return True
    if text.lower() in ("off", "0", "false"):
        return False
    raise ValueError(f"{variable} must be on or off")


def database_url(text: str) -> str:
    """Empty or a PostgreSQL URL (the error never repeats it: it may hold a password)."""
    is_postgres(text)
    return text


def log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError("the log format must be text or json")
    return text


@dataclass(frozen=True, slots=True)
class Limit:
    """A number an operator may tune: one row gives the field, variable, flag and help."""

    field: str
    parse: Callable[[str], float | int]
    help: str

    @property
    def variable(self) -> str:
        return "TOKENGRPC_" + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def default(self) -> object:
        return getattr(Settings(), self.field)


def _positive(kind: Callable[[str], float | int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not value > 0:  # also refuses NaN
            raise ValueError("must be a positive number")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


#: The connection limits and the grace period, in the order ``--help`` shows them.
LIMITS: tuple[Limit, ...] = (
    Limit("grace_period", _positive(float), "seconds in-flight requests get on SIGTERM"),
    Limit("http_max_head_bytes", _positive(int), "bytes of an HTTP request head (431 beyond)"),
    Limit(
        "http_head_timeout",
        _positive(float),
        "seconds to send a complete HTTP request head, or to start a first gRPC call",
    ),
    Limit("http_keep_alive_timeout", _positive(int), "seconds an idle HTTP connection is kept"),
    Limit("http_max_connections", _positive(int), "open HTTP connections; more are refused"),
    Limit("grpc_max_connection_idle", _positive(float), "seconds an idle gRPC connection is kept"),
    Limit("grpc_max_concurrent_streams", _positive(int), "concurrent calls per gRPC connection"),
    Limit("grpc_max_connections", _positive(int), "open gRPC connections; more are refused"),
    Limit("grpc_max_receive_bytes", _positive(int), "bytes of one gRPC request message"),
    Limit("grpc_keepalive_min_time", _positive(float), "seconds a client must leave between pings"),
)


def add_limit_flags(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """``--flag`` for each limit whose field starts with ``prefix``."""
    for limit in LIMITS:
        if limit.field.startswith(prefix):
            parser.add_argument(
                limit.flag,
                dest=limit.field,
                type=limit.parse,
                help=f"{limit.help} ({limit.variable}; default {limit.default()})",
            )


def limit_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        limit.field: getattr(args, limit.field)
        for limit in LIMITS
        if getattr(args, limit.field, None) is not None
    }
