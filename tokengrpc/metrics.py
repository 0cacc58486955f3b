"""The Prometheus metrics, in one place: their names, labels, and how a scrape reads them.

Labels are only ever a method name, a route *template*, a status or a fixed
word: never a token, a token id or a name, so neither a secret nor a
client-chosen value can reach a scrape, and the series stay few.

Recording sits on every request's path, so it is plain arithmetic on this
process's own numbers (no lock, no label lookup in the library); a scrape
turns those numbers into Prometheus families when it is asked for them.

With ``serve --workers N`` every process also writes its numbers, every
:data:`SHARE_EVERY` seconds and when it stops, to a file of its own in one
directory (:mod:`tokengrpc.sharedmetrics`); a scrape, whichever process
answers it, adds the other processes' files to its own live numbers.
Only prometheus-client's public API is used (metric families, the registry,
the exposition and its HTTP server).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from tokengrpc import corelog
from tokengrpc.sharedmetrics import SHARED_DIR_VARIABLE, Snapshot, SnapshotFiles, shared_directory
from tokengrpc.version import version

log = logging.getLogger(__name__)

#: The label of an HTTP request no route matched (its path is the client's, not ours).
UNMATCHED_ROUTE = "(unmatched)"
#: Seconds; the lowest bound is set for where the hot path's answers fall
#: (docs/performance.md, "What the hot path does").
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds between copies of a process's numbers to its shared file (how stale
#: another worker's figures can be in a scrape).
SHARE_EVERY = 0.5

#: The ``le`` labels, as prometheus-client writes them.
_LE = (*(floatToGoString(bound) for bound in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]


def share_between_processes(directory: str) -> None:
    """Share through ``directory``: this process and the workers it starts from now
    on (they inherit the environment); must come before any ``Metrics`` is built."""
    os.environ[SHARED_DIR_VARIABLE] = directory


class _Times:
    """One histogram series: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class _Series:
    """A request counter series and the duration series of its method or route."""

    __slots__ = ("count", "times")

    def __init__(self, times: _Times) -> None:
        self.count = 0
        self.times = times

    def add(self, seconds: float) -> None:
        self.count += 1
        self.times.observe(seconds)


class _Requests:
    """``<name>_total{label,status}`` and ``<name>_duration_seconds{label}``."""

    def __init__(self, surface: str, label: str, status: str, one: str) -> None:
        self.name = f"tokengrpc_{surface}_requests"
        self.duration_name = f"tokengrpc_{surface}_request_duration_seconds"
        self.label, self.status = label, status
        self.what = f"{one}s by {label} and {status}"
        self.what_duration = f"{one} duration by {label}"
        self.series: dict[tuple[str, str], _Series] = {}
        self.times: dict[str, _Times] = {}

    def add(self, label: str, status: str, seconds: float) -> None:
        series = self.series.get((label, status))
        if series is None:
            series = self._new_series(label, status)
        series.add(seconds)

    def _new_series(self, label: str, status: str) -> _Series:
        times = self.times.get(label)
        if times is None:
            times = self.times[label] = _Times()
        series = self.series[label, status] = _Series(times)
        return series

    # Copies first, here and in families(): a scrape served from a thread reads
    # while the loop counts.
    def snapshot(self) -> Snapshot:
        return {
            "series": [[*key, series.count] for key, series in list(self.series.items())],
            "times": [[label, list(t.counts), t.total] for label, t in list(self.times.items())],
        }

    def merge(self, snapshot: Snapshot) -> None:
        """Add another process's numbers (a snapshot's) to these."""
        for label, status, count in snapshot["series"]:
            found = self.series.get((label, status)) or self._new_series(label, status)
            found.count += count
        for label, counts, total in snapshot["times"]:
            times = self.times.get(label)
            if times is None:
                times = self.times[label] = _Times()
            for index, count in enumerate(counts):
                times.counts[index] += count
            times.total += total

    def families(self) -> Iterator[Metric]:
        counted = CounterMetricFamily(self.name, self.what, labels=(self.label, self.status))
        for (label, status), series in list(self.series.items()):
            counted.add_metric((label, status), series.count)
        yield counted
        timed = HistogramMetricFamily(self.duration_name, self.what_duration, labels=(self.label,))
        for label, times in list(self.times.items()):
            counts, running, buckets = list(times.counts), 0, []
            for le, count in zip(_LE, counts, strict=True):
                running += count
                buckets.append((le, running))
            timed.add_metric((label,), buckets, times.total)
        yield timed


class _Outcomes:
    """``<name>_total{label}`` over a fixed pair of label values."""

    def __init__(self, name: str, label: str, what: str, yes: str, no: str) -> None:
        self.name, self.label, self.what, self.words = name, label, what, (yes, no)
        self.yes = self.no = 0

    def snapshot(self) -> list[int]:
        return [self.yes, self.no]

    def merge(self, snapshot: list[int]) -> None:
        yes, no = snapshot
        self.yes += yes
        self.no += no

    def families(self) -> Iterator[Metric]:
        counted = CounterMetricFamily(self.name, self.what, labels=(self.label,))
        counted.add_metric((self.words[0],), self.yes)
        counted.add_metric((self.words[1],), self.no)
        yield counted


class _Webhooks:
    """``tokengrpc_webhook_deliveries_total{result}`` and the age of the oldest
    event still queued for a URL (the same queue for every process: the
    oldest any of them saw is the figure)."""

    RESULTS = ("delivered", "failed", "abandoned")

    def __init__(self) -> None:
        self.results = dict.fromkeys(self.RESULTS, 0)
        #: The oldest queued event's time (microseconds), as last looked at; None: none.
        self.oldest: int | None = None

    def snapshot(self) -> list[object]:
        return [dict(self.results), self.oldest]

    def merge(self, snapshot: list[Any]) -> None:
        results, oldest = snapshot
        for result, count in results.items():
            self.results[result] = self.results.get(result, 0) + count
        if oldest is not None:
            self.oldest = oldest if self.oldest is None else min(self.oldest, oldest)

    def families(self) -> Iterator[Metric]:
        counted = CounterMetricFamily(
            "tokengrpc_webhook_deliveries",
            "webhook tries by result: delivered, failed (tried again later), abandoned (given up)",
            labels=("result",),
        )
        for result, count in self.results.items():
            counted.add_metric((result,), count)
        yield counted
        age = 0.0 if self.oldest is None else max(0.0, time.time() - self.oldest / 1e6)
        yield GaugeMetricFamily(
            "tokengrpc_webhook_oldest_undelivered_seconds",
            "age of the oldest event not yet delivered to every webhook URL (0: none queued)",
            value=age,
        )


class _Decisions:
    """``tokengrpc_authz_decisions_total{endpoint,result}``: what each check answered."""

    #: Every result a decision can have.
    RESULTS = ("allowed", "unauthenticated", "forbidden", "unavailable")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, endpoint: str, result: str) -> None:
        key = (endpoint, result)
        self.counts[key] = self.counts.get(key, 0) + 1

    def snapshot(self) -> list[list[object]]:
        return [
            [endpoint, result, count] for (endpoint, result), count in list(self.counts.items())
        ]

    def merge(self, snapshot: list[list[object]]) -> None:
        for endpoint, result, count in snapshot:
            key = (str(endpoint), str(result))
            self.counts[key] = self.counts.get(key, 0) + int(count)  # type: ignore[call-overload]

    def families(self) -> Iterator[Metric]:
        counted = CounterMetricFamily(
            "tokengrpc_authz_decisions", "authorization checks (Check, /auth/check) by result",
            labels=("endpoint", "result"),
        )  # fmt: skip
        for key, count in list(self.counts.items()):
            counted.add_metric(key, count)
        yield counted


#: Process families whose sum over workers means nothing: the limit and the
#: start are each worker's own, so a scrape shows the highest and the earliest.
_NOT_SUMMED = {"process_max_fds": max, "process_start_time_seconds": min}


class _Process:
    """``process_*`` and ``python_gc_*``: read from this process, or summed over workers.

    Summed, they describe the service as a whole (CPU seconds, memory, open
    descriptors and collections of every worker together), as the request
    counters do; see :data:`_NOT_SUMMED` for the two that are not sums.
    """

    def __init__(self) -> None:
        #: Family name -> (type, help, {(sample name, labels): value}); the merged numbers.
        self.merged: dict[str, tuple[str, str, dict[tuple[str, str], float]]] = {}

    @staticmethod
    def read() -> list[list[Any]]:
        """This process's families as plain data: [name, type, help, [[sample, labels, value]]]."""
        found = []
        for collector in _OWN_COLLECTORS:
            for family in collector.collect():
                samples = [[sample.name, json.dumps(sample.labels, sort_keys=True), sample.value]
                           for sample in family.samples]  # fmt: skip
                found.append([family.name, family.type, family.documentation, samples])
        return found

    def merge(self, snapshot: list[list[Any]]) -> None:
        for name, kind, text, samples in snapshot:
            _, _, values = self.merged.setdefault(name, (kind, text, {}))
            pick = _NOT_SUMMED.get(name)
            for sample, labels, value in samples:
                key = (sample, labels)
                known = values.get(key)
                if known is None:
                    values[key] = value
                else:
                    values[key] = pick(known, value) if pick is not None else known + value

    def families(self) -> Iterator[Metric]:
        for name, (kind, text, values) in list(self.merged.items()):
            family = Metric(name, text, kind)
            for (sample, labels), value in values.items():
                family.add_sample(sample, json.loads(labels), value)
            yield family


#: What ``process_*`` and ``python_gc_*`` are read from (prometheus-client's own).
_OWN_COLLECTORS = (ProcessCollector(registry=None), GCCollector(registry=CollectorRegistry()))


def _build_info() -> Iterator[Metric]:
    built = GaugeMetricFamily("tokengrpc_build_info", "the running version", labels=("version",))
    built.add_metric((version(),), 1)
    yield built
    yield from PlatformCollector(registry=None).collect()  # python_info: the same in every worker


class _Counts:
    """Every number one process records; also what a scrape adds the workers' into."""

    def __init__(self) -> None:
        self.grpc = _Requests("grpc", "method", "code", "gRPC call")
        self.http = _Requests("http", "route", "status", "HTTP request")
        self.authentications = _Outcomes(
            "tokengrpc_authentications", "result", "bearer checks of callers, ok or failed",
            "ok", "failed",
        )  # fmt: skip
        self.introspections = _Outcomes(
            "tokengrpc_introspections", "active", "IntrospectToken answers by active",
            "true", "false",
        )  # fmt: skip
        self.webhooks = _Webhooks()
        self.decisions = _Decisions()
        self.process = _Process()
        self.handshakes = 0

    def collect(self) -> Iterator[Metric]:
        """The families (prometheus-client's collector protocol)."""
        yield from self.grpc.families()
        yield from self.http.families()
        yield from self.authentications.families()
        yield from self.introspections.families()
        yield from self.webhooks.families()
        yield from self.decisions.families()
        failed = CounterMetricFamily(
            "tokengrpc_tls_handshake_failures", "TLS handshakes that failed (gRPC listener)"
        )
        failed.add_metric((), self._handshakes())
        yield failed
        yield from _build_info()
        yield from self._process_families()

    def _process_families(self) -> Iterator[Metric]:
        yield from self.process.families()

    def _handshakes(self) -> int:
        return self.handshakes

    def snapshot(self) -> Snapshot:
        """Plain numbers, for another process to :meth:`merge`."""
        return {
            "grpc": self.grpc.snapshot(),
            "http": self.http.snapshot(),
            "authentications": self.authentications.snapshot(),
            "introspections": self.introspections.snapshot(),
            "webhooks": self.webhooks.snapshot(),
            "decisions": self.decisions.snapshot(),
            "handshakes": self._handshakes(),
            "process": _Process.read(),
        }

    def merge(self, snapshot: Snapshot) -> None:
        self.grpc.merge(snapshot["grpc"])
        self.http.merge(snapshot["http"])
        self.authentications.merge(snapshot["authentications"])
        self.introspections.merge(snapshot["introspections"])
        self.webhooks.merge(snapshot["webhooks"])
        # A file from a process of an earlier version lacks these.
        self.decisions.merge(snapshot.get("decisions", []))
        self.handshakes += int(snapshot.get("handshakes", 0))
        self.process.merge(snapshot.get("process", []))


class Metrics(_Counts):
    """Every metric of one process, and its scrape."""

    def _process_families(self) -> Iterator[Metric]:
        for collector in _OWN_COLLECTORS:  # this process alone, read now
            yield from collector.collect()

    def _handshakes(self) -> int:
        return corelog.failed_handshakes()

    def __init__(self) -> None:
        super().__init__()
        self._registry = CollectorRegistry()
        self._registry.register(self)
        directory = shared_directory()
        #: With workers: this process's file among theirs.
        self._files = SnapshotFiles(directory) if directory is not None else None

    def grpc_call(self, method: str, code: str, seconds: float) -> None:
        self.grpc.add(method, code, seconds)

    def http_request(self, route: str, status: str, seconds: float) -> None:
        self.http.add(route, status, seconds)

    def decision(self, endpoint: str, result: str) -> None:
        """One answer of an authorization check: ``endpoint`` is ``Check`` or
        ``/auth/check``, ``result`` one of :attr:`_Decisions.RESULTS`."""
        self.decisions.add(endpoint, result)

    def authenticated(self, ok: bool) -> None:
        if ok:
            self.authentications.yes += 1
        else:
            self.authentications.no += 1

    def introspected(self, active: bool) -> None:
        if active:
            self.introspections.yes += 1
        else:
            self.introspections.no += 1

    def webhook_delivered(self, result: str) -> None:
        """One try's ``result``: one of ``_Webhooks.RESULTS``."""
        self.webhooks.results[result] += 1

    def webhook_oldest(self, event_time: int | None) -> None:
        self.webhooks.oldest = event_time

    @property
    def shared(self) -> bool:
        return self._files is not None

    def share(self) -> None:
        """Write this process's numbers to its shared file (the loop's job)."""
        if self._files is not None:
            self._files.write(self.snapshot())

    async def share_forever(self) -> None:
        """Keep the shared file current until cancelled; the last copy is the caller's.

        A copy that fails (a full disk) is logged once and tried again next
        time: the other workers' figures must not freeze silently.
        """
        failing = False
        while True:
            await asyncio.sleep(SHARE_EVERY)
            try:
                self.share()
            except Exception as error:  # whatever it was, the loop goes on
                if not failing:
                    log.warning("metrics could not be shared with the other workers: %s", error)
                failing = True
            else:
                failing = False

    def share_last(self) -> None:
        """The copy at exit; a failure is logged, never raised into the shutdown."""
        try:
            self.share()
        except Exception as error:
            log.warning("the last metrics of this process could not be shared: %s", error)

    def collector(self) -> CollectorRegistry:
        """What a scrape reads: this process's numbers, plus every other process's file."""
        if self._files is None:
            return self._registry
        summed = CollectorRegistry()
        summed.register(_Summed(self, self._files))
        return summed

    def scrape(self) -> tuple[bytes, str]:
        """The exposition text and its content type (called on the event loop)."""
        self.share()
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


class _Summed:
    """This process's live numbers plus the other processes' last snapshots."""

    def __init__(self, own: _Counts, files: SnapshotFiles) -> None:
        self._own, self._files = own, files

    def collect(self) -> Iterator[Metric]:
        total = _Counts()
        total.merge(self._own.snapshot())
        # The directory is private to one run: every file in it is ours.
        for snapshot in self._files.others():
            total.merge(snapshot)
        yield from total.collect()


#: What the servicer and the authenticator call; a no-op when metrics are off.
Observation = Callable[[bool], None]


def ignore(_: bool) -> None:
    return None
