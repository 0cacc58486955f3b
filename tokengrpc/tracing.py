"""Whether this process traces: decided once, at start, from the ``OTEL_*`` variables.

Contract section 14: on with ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP
endpoint variable, off with ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_SDK_DISABLED=true``, and off when none of them is set. Everything
else (endpoint, headers, TLS, timeouts, the batch processor's ``OTEL_BSP_*``,
the sampler, the resource, the propagators) the SDK reads itself.

Off, :func:`start` returns None without importing the SDK, and the
observers take their untraced path: no tracer call on any request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokengrpc.spans import Tracing

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The exporters this build has (``OTEL_TRACES_EXPORTER``, comma separated).
EXPORTERS = ("otlp", "console")


def exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters asked for; empty when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        chosen = tuple(name.strip() for name in named.split(",") if name.strip())
        if "none" in chosen:
            return ()
        unknown = [name for name in chosen if name not in EXPORTERS]
        if unknown:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER names an exporter this build lacks (it has"
                f" {', '.join(EXPORTERS)} and none)"
            )
        return chosen
    if any(environ.get(name, "").strip() for name in _ENDPOINTS):
        return ("otlp",)
    return ()


def start(environ: Mapping[str, str]) -> Tracing | None:
    """This process's tracing, or None when the variables leave it off."""
    chosen = exporters(environ)
    if not chosen:
        return None
    from tokengrpc.spans import Tracing  # the SDK is imported only when traces are wanted

    return Tracing.start(chosen, environ)
