"""The Prometheus metrics, in one place: their names, labels, and how a scrape reads them.

Labels are only ever a method name, a route *template*, a status or a fixed
word: never a token, a token id or a name, so neither a secret nor a
client-chosen value can reach a scrape, and the series stay few.

With ``serve --workers N`` every process writes its values to files in one
directory (prometheus-client's multiprocess mode); a scrape, whichever
process answers it, reads and sums them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)

#: prometheus-client's variable: set, every process shares its values through that directory.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The label of an HTTP request no route matched (its path is the client's, not ours).
UNMATCHED_ROUTE = "(unmatched)"
#: Seconds; the service answers most requests in well under a millisecond.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def share_between_processes(directory: str) -> None:
    """Switch to multiprocess mode; must come before any ``Metrics`` is built."""
    os.environ[MULTIPROCESS_DIR] = directory
    # The library picks its value class when first imported; ask it again now
    # that the directory is known (metrics built from here on use files).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric of one process, and its scrape."""

    def __init__(self) -> None:
        self._shared = bool(os.environ.get(MULTIPROCESS_DIR))
        # Shared: values live in files, and a scrape reads those, not a registry.
        self._registry = CollectorRegistry()
        registry = None if self._shared else self._registry
        self.grpc_requests = Counter(
            "tokengrpc_grpc_requests", "gRPC calls by full method name and status code",
            ("method", "code"), registry=registry,
        )  # fmt: skip
        self.grpc_duration = Histogram(
            "tokengrpc_grpc_request_duration_seconds", "gRPC call duration by method",
            ("method",), buckets=BUCKETS, registry=registry,
        )  # fmt: skip
        self.http_requests = Counter(
            "tokengrpc_http_requests", "HTTP requests by route template and status",
            ("route", "status"), registry=registry,
        )  # fmt: skip
        self.http_duration = Histogram(
            "tokengrpc_http_request_duration_seconds", "HTTP request duration by route template",
            ("route",), buckets=BUCKETS, registry=registry,
        )  # fmt: skip
        self.authentications = Counter(
            "tokengrpc_authentications", "bearer checks of callers, ok or failed",
            ("result",), registry=registry,
        )  # fmt: skip
        self.introspections = Counter(
            "tokengrpc_introspections", "IntrospectToken answers by active",
            ("active",), registry=registry,
        )  # fmt: skip
        self._auth_ok = self.authentications.labels("ok")
        self._auth_failed = self.authentications.labels("failed")
        self._active = self.introspections.labels("true")
        self._inactive = self.introspections.labels("false")

        #: Label children by label values: ``labels()`` takes a lock and builds a key each time.
        self._grpc: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._http: dict[tuple[str, str], tuple[Any, Any]] = {}

    def grpc_call(self, method: str, code: str, seconds: float) -> None:
        children = self._grpc.get((method, code))
        if children is None:
            children = self.grpc_requests.labels(method, code), self.grpc_duration.labels(method)
            self._grpc[method, code] = children
        children[0].inc()
        children[1].observe(seconds)

    def http_request(self, route: str, status: str, seconds: float) -> None:
        children = self._http.get((route, status))
        if children is None:
            children = self.http_requests.labels(route, status), self.http_duration.labels(route)
            self._http[route, status] = children
        children[0].inc()
        children[1].observe(seconds)

    def authenticated(self, ok: bool) -> None:
        (self._auth_ok if ok else self._auth_failed).inc()

    def introspected(self, active: bool) -> None:
        (self._active if active else self._inactive).inc()

    def collector(self) -> CollectorRegistry:
        """What a scrape reads: this process's registry, or every process's files."""
        if not self._shared:
            return self._registry
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return summed

    def scrape(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.collector()), CONTENT_TYPE_LATEST

    def listen(self, address: str) -> str:
        """Serve the scrape alone on ``address`` (``--metrics-listen``), from a thread;
        return the bound ``HOST:PORT``."""
        host, _, port = address.rpartition(":")
        try:
            server, _ = start_http_server(
                int(port), addr=host.strip("[]"), registry=self.collector()
            )
        except (OSError, ValueError) as error:
            raise OSError(f"could not listen on {address}: {error}") from None
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"{shown}:{bound_port}"


#: What the servicer and the authenticator call; a no-op when metrics are off.
Observation = Callable[[bool], None]


def ignore(_: bool) -> None:
    return None
