"""What ``serve`` and ``gateway`` both put on their listeners: TLS, metrics, access lines, limits.

Built from ``Settings`` alone, so the two commands cannot configure a
listener two ways.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tokengrpc import logs
from tokengrpc.config import Settings
from tokengrpc.metrics import Metrics, share_between_processes
from tokengrpc.observe import HttpObserver, TracingHttpObserver
from tokengrpc.tls import Certificates, TlsFiles

if TYPE_CHECKING:
    from gateway.connections import ConnectionLimits
    from tokengrpc.spans import Tracing

log = logging.getLogger("tokengrpc")


def certificates(settings: Settings) -> Certificates | None:
    """TLS for the listeners, or None for plaintext; half a configuration is an error."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return Certificates(TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca))


def warn_plaintext(listen: str) -> None:
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


def metrics(settings: Settings, *, serving: bool = True) -> tuple[Metrics | None, str | None]:
    """The process's metrics; with ``serve``'s workers, the directory they share (ours
    to remove). ``tokengrpc gateway`` has no workers, whatever the environment says."""
    if not settings.metrics_enabled:
        return None, None
    directory = None
    if serving and settings.workers > 1 and not settings.is_worker:
        _remove_orphaned_metrics()
        directory = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")
        share_between_processes(directory)
    return Metrics(), directory


#: ``<prefix><pid of the serve that made it>-<random>`` in the temporary directory.
_METRICS_PREFIX = "tokengrpc-metrics-"


def _remove_orphaned_metrics() -> None:
    """Remove the shared-metrics directories of ``serve`` processes that are gone
    (one killed with -9 could not remove its own): only ours, only of dead pids."""
    base = Path(tempfile.gettempdir())
    for entry in base.glob(f"{_METRICS_PREFIX}*-*"):
        pid_text = entry.name.removeprefix(_METRICS_PREFIX).partition("-")[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            if entry.is_symlink() or entry.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)  # its serve is gone
        except OSError:
            continue  # alive under another user, or vanished meanwhile


def observer(
    settings: Settings, counters: Metrics | None, tracing: Tracing | None = None
) -> HttpObserver:
    """What the HTTP listener reports each request to: the counters, the access log,
    and the tracer when the process traces (chosen here, once)."""
    access = logs.AccessLog() if settings.access_log else None
    if tracing is None:
        return HttpObserver(counters, access)
    return TracingHttpObserver(counters, access, tracing)


def http_limits(settings: Settings) -> ConnectionLimits:
    from gateway.connections import ConnectionLimits  # the gateway is optional at run time

    return ConnectionLimits(
        max_head_bytes=settings.http_max_head_bytes,
        head_timeout=settings.http_head_timeout,
        keep_alive_timeout=settings.http_keep_alive_timeout,
        max_connections=settings.http_max_connections,
    )
