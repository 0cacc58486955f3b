"""Settings: one table (``OPTIONS``) from which flags, variables and workers' copies come.

Adding a setting is a field of ``Settings`` and one row of ``OPTIONS`` (or of
``LIMITS`` for a positive number): the row makes its flag on the commands it
names, reads its variable, and the worker processes of ``serve`` get the
parent's resolved ``Settings`` whole (``to_json``), so none can be forgotten.
``tests/test_config.py`` holds the README's table and every command's
``--help`` to the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from tokengrpc.addresses import DEFAULT_TRUSTED_PROXIES
from tokengrpc.durations import duration_list, parse_duration, positive_duration
from tokengrpc.store.postgres.dsn import is_postgres
from tokengrpc.webhooks.signing import webhook_secret


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
    database_url: str = field(default="", repr=False)
    #: AES-256-GCM key for retrievable values; else ``<data_dir>/secret.key``.
    secret_key: str | None = field(default=None, repr=False)
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
    #: HTTP: seconds a connection may take to send a complete request head, then its body;
    #: gRPC: to finish its handshake and start a first call.
    http_head_timeout: float = 10.0
    #: HTTP: seconds an idle keep-alive connection is kept open.
    http_keep_alive_timeout: int = 5
    #: HTTP: open connections per process; more are closed as they arrive.
    http_max_connections: int = 1000
    #: gRPC: seconds a connection with no calls is kept open.
    grpc_max_connection_idle: float = 300.0
    #: gRPC: seconds any connection lives (then GOAWAY, and closed a grace
    #: period later): no stream a stranger keeps open (a health Watch, a
    #: reflection stream) holds a place for longer.
    grpc_max_connection_age: float = 300.0
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
    #: ``tokengrpc gateway``: HOST:PORT of the gRPC server it fronts (required there).
    upstream: str = ""
    #: ``tokengrpc gateway``: PEM CA to reach the upstream over TLS, and a client
    #: certificate and key for mTLS.
    upstream_ca: Path | None = None
    upstream_cert: Path | None = None
    upstream_key: Path | None = None
    # Policies over time (CONTRACT section 12), in microseconds as the store's times.
    #: How long a secret authenticates after it was issued (created or
    #: rotated); None: as long as the token lives (``tokengrpc.lifetime``).
    max_secret_age: int | None = None
    #: A token with no successful use for this long is revoked; None: never.
    revoke_unused_after: int | None = None
    #: How long before an expiry each EXPIRING event is recorded, longest first.
    expiry_reminders: tuple[int, ...] = tuple(parse_duration(text) for text in ("30d", "7d", "1d"))
    #: Where the keys that sign leak reports are (a URL, or a file in GitHub's
    #: ``meta/public_keys/secret_scanning`` format); None: no ``/v1/leaks/github``.
    github_scanning_keys: str | None = None
    #: Where every audit event is POSTed (CONTRACT section 13, ``tokengrpc.webhooks``).
    webhook_urls: tuple[str, ...] = ()
    #: ``whsec_`` and base64: the key webhooks are signed with (needed with any URL).
    webhook_secret: str | None = field(default=None, repr=False)


class SettingError(ValueError):
    """A flag or variable that does not parse; the message names it, never its value."""


def _path(text: str) -> Path:
    return Path(text)


def _switch(text: str) -> bool:
    """``on`` (the default) or ``off``."""
    if text.lower() in ("", "on", "1", "true"):
        return True
    if text.lower() in ("off", "0", "false"):
        return False
    raise ValueError("must be on or off")


def database_url(text: str) -> str:
    """Empty or a PostgreSQL URL (the error never repeats it: it may hold a password)."""
    is_postgres(text)
    return text


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError("must be " + " or ".join(choices))
        return text

    return parse


def _key_source(text: str) -> str | None:
    """A URL or a path; empty: none (leak reports off)."""
    return text.strip() or None


def _proxies(text: str) -> tuple[str, ...]:
    """Comma-separated CIDR ranges; empty trusts none."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _webhook_urls(text: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs (the error never repeats one: a URL may hold
    a receiver's secret)."""
    urls = tuple(part.strip() for part in text.split(",") if part.strip())
    for url in urls:
        try:
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            usable = False
        if not usable:
            raise ValueError("must be http:// or https:// URLs with a host")
    return urls


def _http_upstream(text: str) -> bool:
    """``in-process`` (True) or ``network``: how ``serve``'s gateway reaches the service."""
    if text not in ("in-process", "network"):
        raise ValueError("must be in-process or network")
    return text == "in-process"


#: The largest limit: gRPC takes its limits as C ints, of milliseconds or bytes
#: (a transport reads twice the message limit), and Python's timers refuse
#: infinity; beyond it a value would crash the start or disable a timeout.
_SECONDS_AT_MOST = 1_000_000
_COUNT_AT_MOST = 2**30


def _positive(kind: Callable[[str], float | int]) -> Callable[[str], float | int]:
    at_most = _COUNT_AT_MOST if kind is int else _SECONDS_AT_MOST
    problem = f"must be a positive number, at most {at_most}"

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise ValueError(problem) from None
        if not 0 < value <= at_most:  # also refuses NaN and infinity
            raise ValueError(problem)
        return value

    parse.__name__ = kind.__name__
    return parse


#: The commands a flag can belong to ("token" is every ``token`` action).
SERVE, GATEWAY, TOKEN, MIGRATE = "serve", "gateway", "token", "migrate"
COMMANDS = (SERVE, GATEWAY, TOKEN, MIGRATE)
_STORE_COMMANDS = (SERVE, TOKEN, MIGRATE)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field, parser, help, flag, variable and commands, in one row.

    ``flag`` and ``variable`` default to names derived from the field
    (``--grpc-listen``, ``TOKENGRPC_GRPC_LISTEN``). Every setting has both,
    except a ``secret``, which has no flag: a command line is readable by
    every user of the machine (``ps``), a variable or a file is not.
    A ``switch`` is on by default: its variable says ``on`` or ``off`` and its
    flag (``--no-…``) turns it off.
    """

    field: str
    parse: Callable[[str], object]
    #: Plain text (it is ``--help``'s): no markup.
    help: str
    flag: str = ""
    variable: str = ""
    commands: tuple[str, ...] = (SERVE,)
    switch: bool = False
    secret: bool = False
    #: Its commands cannot do without it (``--help`` says so instead of a default).
    required: bool = False
    #: The values ``--help`` offers (the parser is what refuses others).
    choices: tuple[str, ...] = ()
    #: An empty variable is a value (an empty list), not "unset".
    empty_is_value: bool = False
    #: The flag may be given more than once; its values add up (a list).
    repeatable: bool = False
    metavar: str = "VALUE"
    #: How ``--help`` shows the default, when the field's value would not say it.
    default_text: str | None = None

    @property
    def flag_name(self) -> str | None:
        if self.secret:
            return None
        return self.flag or "--" + self.field.replace("_", "-")

    @property
    def variable_name(self) -> str:
        return self.variable or "TOKENGRPC_" + self.field.upper()

    def shown_default(self) -> str:
        """The default as ``--help`` and the README say it."""
        if self.default_text is not None:
            return self.default_text
        value = self.default()
        if isinstance(value, tuple):
            return ",".join(value) or "none"
        if isinstance(value, float):
            return f"{value:g}"
        return "none" if value is None else str(value)

    def default(self) -> object:
        return getattr(Settings(), self.field)

    def read(self, text: str, source: str) -> object:
        try:
            return self.parse(text)
        except ValueError as error:
            raise SettingError(f"{source} {error}") from None


@dataclass(frozen=True, slots=True)
class Limit(Option):
    """A positive number an operator may tune; HTTP's and the grace period are the gateway's too."""

    def __post_init__(self) -> None:
        if self.field.startswith(("grace", "http")):
            object.__setattr__(self, "commands", (SERVE, GATEWAY))
        object.__setattr__(self, "metavar", "N")


#: The connection limits and the grace period, in the order ``--help`` shows them.
LIMITS: tuple[Limit, ...] = (
    Limit("grace_period", _positive(float), "seconds in-flight requests get on SIGTERM"),
    Limit("http_max_head_bytes", _positive(int), "bytes of an HTTP request head (431 beyond)"),
    Limit(
        "http_head_timeout",
        _positive(float),
        "seconds to send an HTTP request head, then its body, or to start a first gRPC call",
    ),
    Limit("http_keep_alive_timeout", _positive(int), "seconds an idle HTTP connection is kept"),
    Limit("http_max_connections", _positive(int), "open HTTP connections; more are refused"),
    Limit("grpc_max_connection_idle", _positive(float), "seconds an idle gRPC connection is kept"),
    Limit(
        "grpc_max_connection_age",
        _positive(float),
        "seconds a gRPC connection lives, calls or not (then GOAWAY; closed a grace period later)",
    ),
    Limit("grpc_max_concurrent_streams", _positive(int), "concurrent calls per gRPC connection"),
    Limit("grpc_max_connections", _positive(int), "open gRPC connections; more are refused"),
    Limit("grpc_max_receive_bytes", _positive(int), "bytes of one gRPC request message"),
    Limit("grpc_keepalive_min_time", _positive(float), "seconds a client must leave between pings"),
)

#: Every setting an operator gives. Fields absent here (``is_worker``,
#: ``usage_flush_interval``) are the program's own.
OPTIONS: tuple[Option, ...] = (
    Option(
        "data_dir",
        _path,
        "the store's directory: SQLite files, the secret key file, the bootstrap token",
        commands=_STORE_COMMANDS,
        metavar="DIR",
        default_text="./var",
    ),
    Option(
        "database_url",
        database_url,
        "postgresql://USER@HOST:PORT/DB to share one database between instances (a password"
        " here shows in the process list: prefer the variable, PGPASSWORD or ~/.pgpass);"
        " empty: SQLite in the data dir",
        flag="--database",
        commands=_STORE_COMMANDS,
        metavar="URL",
        default_text="empty",
    ),
    Option(
        "secret_key",
        str,
        "AES-256-GCM key for service-token values: 64 hex digits or base64 of 32 bytes",
        commands=_STORE_COMMANDS,
        secret=True,
        default_text="the key file in the data dir, made on first start",
    ),
    Option("grpc_listen", str, "the gRPC listener's address", metavar="HOST:PORT"),
    Option(
        "http_listen",
        str,
        "the HTTP listener's address",
        commands=(SERVE, GATEWAY),
        metavar="HOST:PORT",
    ),
    Option(
        "http_enabled",
        _switch,
        "serve gRPC only",
        flag="--no-http",
        variable="TOKENGRPC_HTTP",
        switch=True,
    ),
    Option(
        "http_in_process",
        _http_upstream,
        "how the gateway inside serve reaches the service",
        flag="--http-upstream",
        variable="TOKENGRPC_HTTP_UPSTREAM",
        choices=("in-process", "network"),
        default_text="in-process",
    ),
    Option("workers", _positive(int), "server processes sharing the ports", metavar="N"),
    Option(
        "token_prefix",
        str,
        "prefix of new secrets (tokens made before a change keep working)",
        commands=(SERVE, TOKEN),
        metavar="PREFIX",
    ),
    Option(
        "trusted_proxies",
        _proxies,
        "comma-separated CIDR ranges of peers whose X-Forwarded-For is believed; empty trusts none",
        commands=(SERVE, GATEWAY),
        empty_is_value=True,
        metavar="CIDRS",
    ),
    Option(
        "upstream",
        str,
        "the gRPC server this gateway fronts",
        commands=(GATEWAY,),
        required=True,
        metavar="HOST:PORT",
    ),
    Option(
        "upstream_ca",
        _path,
        "PEM CA: reach the upstream over TLS",
        commands=(GATEWAY,),
        metavar="PATH",
    ),
    Option(
        "upstream_cert",
        _path,
        "PEM client certificate for the upstream (mTLS)",
        commands=(GATEWAY,),
        metavar="PATH",
    ),
    Option(
        "upstream_key",
        _path,
        "PEM key of --upstream-cert",
        commands=(GATEWAY,),
        metavar="PATH",
    ),
    *LIMITS,
    Option("tls_cert", _path, "PEM certificate chain", commands=(SERVE, GATEWAY), metavar="PATH"),
    Option("tls_key", _path, "PEM private key", commands=(SERVE, GATEWAY), metavar="PATH"),
    Option(
        "tls_client_ca",
        _path,
        "PEM CA; clients must present a certificate it signed",
        commands=(SERVE, GATEWAY),
        metavar="PATH",
    ),
    Option(
        "metrics_listen",
        str,
        "a listener serving only /metrics, e.g. with --no-http",
        metavar="HOST:PORT",
    ),
    Option(
        "metrics_enabled",
        _switch,
        "no metrics at all",
        flag="--no-metrics",
        variable="TOKENGRPC_METRICS",
        commands=(SERVE, GATEWAY),
        switch=True,
    ),
    Option(
        "log_format",
        _one_of("text", "json"),
        "the format of access lines and messages",
        commands=COMMANDS,
        choices=("text", "json"),
    ),
    Option(
        "access_log",
        _switch,
        "no line per request",
        flag="--no-access-log",
        commands=(SERVE, GATEWAY),
        switch=True,
    ),
    Option(
        "max_secret_age",
        positive_duration,
        "how long a secret authenticates after it was created or rotated, e.g. 90d",
        commands=(SERVE, TOKEN),
        metavar="DURATION",
        default_text="unset",
    ),
    Option(
        "revoke_unused_after",
        positive_duration,
        "revoke a token with no successful use for this long, e.g. 365d",
        metavar="DURATION",
        default_text="unset",
    ),
    Option(
        "expiry_reminders",
        duration_list,
        "comma-separated times before an expiry to record an expiring event; empty: none",
        empty_is_value=True,
        metavar="DURATIONS",
        default_text="30d,7d,1d",
    ),
    Option(
        "github_scanning_keys",
        _key_source,
        "GitHub's secret scanning key URL, or a file in its format: enables POST /v1/leaks/github",
        commands=(SERVE, GATEWAY),
        metavar="URL_OR_FILE",
        default_text="unset",
    ),
    Option(
        "webhook_urls",
        _webhook_urls,
        "POST every audit event, signed, to this URL (repeatable; the variable:"
        " comma-separated); needs TOKENGRPC_WEBHOOK_SECRET",
        flag="--webhook-url",
        variable="TOKENGRPC_WEBHOOK_URLS",
        repeatable=True,
        metavar="URL",
        default_text="none",
    ),
    Option(
        "webhook_secret",
        webhook_secret,
        "whsec_ and base64 of the key webhooks are signed with (Standard Webhooks)",
        secret=True,
        default_text="none; required with a webhook URL",
    ),
)


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of ``command``'s settings, with their variables and defaults in the help.

    Values stay text here and are parsed by ``resolve``: argparse would repeat
    a bad value (a database password) in its error, so ``choices`` are shown
    in the metavar, never handed to argparse.
    """
    for option in OPTIONS:
        flag = option.flag_name
        if flag is None or command not in option.commands:
            continue
        variable = option.variable_name
        if option.switch:
            parser.add_argument(
                flag, dest=option.field, action="store_true", help=f"{option.help} ({variable}=off)"
            )
        else:
            metavar = "{" + ",".join(option.choices) + "}" if option.choices else option.metavar
            default = "required" if option.required else f"default {option.shown_default()}"
            help_text = f"{option.help} ({variable}; {default})"
            action = "append" if option.repeatable else "store"
            parser.add_argument(
                flag, dest=option.field, metavar=metavar, help=help_text, action=action
            )


def secrets_epilog(command: str) -> str | None:
    """What ``--help`` says of ``command``'s settings that have a variable and no flag."""
    lines = [
        textwrap.fill(
            f"{option.variable_name}  {option.help} (default {option.shown_default()})",
            width=78,
            initial_indent="  ",
            subsequent_indent="      ",
        )
        for option in OPTIONS
        if option.secret and command in option.commands
    ]
    if not lines:
        return None
    return "\n".join(["secrets (a variable only, never a flag: ps shows command lines):", *lines])


def resolve(env: Mapping[str, str], args: argparse.Namespace) -> Settings:
    """Defaults, then the variables, then the flags given: the settings of one command."""
    values: dict[str, object] = {}
    for option in OPTIONS:
        text = env.get(option.variable_name)
        if text is not None and (text or option.empty_is_value):
            values[option.field] = option.read(text, option.variable_name + ":")
    for option in OPTIONS:
        given = getattr(args, option.field, None)
        if option.switch:
            if given:
                values[option.field] = False
        elif isinstance(given, list):  # a repeatable flag: each value parses to a tuple
            items: list[object] = []
            for text in given:
                items += cast(tuple[object, ...], option.read(text, f"{option.flag_name}:"))
            values[option.field] = tuple(items)
        elif given is not None:
            values[option.field] = option.read(given, f"{option.flag_name}:")
    return dataclasses.replace(Settings(), **values)  # type: ignore[arg-type]


def to_json(settings: Settings) -> bytes:
    """Every field, for a worker process: the parent's settings as it resolved them."""
    fields = {}
    for item in dataclasses.fields(Settings):
        value = getattr(settings, item.name)
        fields[item.name] = str(value) if isinstance(value, Path) else value
    return json.dumps(fields).encode()


def from_json(data: bytes) -> Settings:
    """The inverse of ``to_json`` (field types are read from ``Settings``' annotations)."""
    loaded = json.loads(data)
    values: dict[str, object] = {}
    for item in dataclasses.fields(Settings):
        value = loaded[item.name]  # every field, or this is not our parent's message
        kind = str(item.type)
        if value is not None and kind.startswith("Path"):
            value = Path(value)
        elif kind.startswith("tuple"):
            value = tuple(value)
        values[item.name] = value
    return Settings(**values)  # type: ignore[arg-type]
