"""Envoy external authorization: ``envoy.service.auth.v3.Authorization/Check``.

Envoy (or a mesh built on it) asks here before it forwards an HTTP request, so
the protected service needs no code of its own. The rules are the service's:
the checked request's bearer token goes through the same ``Authenticator``
(checksum, hash, status, ``allowed_ips`` against the client address Envoy saw)
and an allowed check counts one use.

Every answer is a ``CheckResponse`` with an explicit HTTP status, never a gRPC
error: Envoy turns a gRPC error into "allow" when ``failure_mode_allow`` is
set, and a denial without a status into a bare 403.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from tokengrpc import forwardcheck
from tokengrpc.addresses import parse_address
from tokengrpc.auth import Authenticator, Caller
from tokengrpc.errors import Unauthenticated, Unavailable
from tokengrpc.forwardcheck import Refusal
from tokengrpc.rules import INTROSPECT
from tokengrpc.store import TokenRecord

log = logging.getLogger(__name__)

SERVICE_NAME: str = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
#: The full method name, as the observer knows it (for ``TOO_LARGE``).
CHECK_METHOD = f"/{SERVICE_NAME}/Check"
#: The ``endpoint`` label of Check's decisions (``tokengrpc_authz_decisions_total``).
ENDPOINT = "Check"
#: The checked request's headers that carry its trace context (W3C).
_TRACE_HEADERS = ("traceparent", "tracestate")

#: Counts one decision: (endpoint, result); ``Metrics.decision`` or nothing.
Decided = Callable[[str, str], None]


def _uncounted(endpoint: str, result: str) -> None:
    return None


#: The per-route ``context_extensions`` key naming the scopes a route demands.
REQUIRED_SCOPES = "required_scopes"
#: At most one warning per this many seconds about Envoy's own bad token, so a
#: misconfigured proxy under load does not flood the log.
_WARN_EVERY = 60.0

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def _denied(
    grpc_code: int, http_code: int, message: str, *, challenge: bool
) -> external_auth_pb2.CheckResponse:
    headers = [_header("content-type", "application/json")]
    if challenge:
        headers.append(_header("www-authenticate", "Bearer"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=grpc_code),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_code),
            headers=headers,
            body=json.dumps({"error": message}),
        ),
    )


UNAUTHENTICATED = _denied(
    code_pb2.UNAUTHENTICATED, http_status_pb2.Unauthorized, "Unauthenticated.", challenge=True
)
FORBIDDEN = _denied(
    code_pb2.PERMISSION_DENIED, http_status_pb2.Forbidden, "Forbidden.", challenge=False
)
#: Envoy itself is not allowed to ask: the client is not at fault, and the
#: request must not pass, so it is the answer Envoy gives when we are down.
UNAVAILABLE = _denied(
    code_pb2.UNAVAILABLE,
    http_status_pb2.ServiceUnavailable,
    "Service unavailable.",
    challenge=False,
)

#: A check request over the per-message limit is not read, and not let through:
#: the observer answers it with this instead of a gRPC error (which Envoy with
#: ``failure_mode_allow`` would turn into an allow).
TOO_LARGE = _denied(
    code_pb2.RESOURCE_EXHAUSTED,
    http_status_pb2.PayloadTooLarge,
    "Request too large.",
    challenge=False,
)


def presented_token(http: attribute_context_pb2.AttributeContext.HttpRequest) -> str | None:
    """The one bearer token of the checked request, or None if not exactly one.

    Envoy merges repeated headers into one comma-joined value in ``headers``
    (or lists each in ``header_map`` with ``encode_raw_headers``).
    """
    values: Sequence[str]
    if http.header_map.headers:
        values = [
            entry.raw_value.decode("latin-1") if entry.raw_value else entry.value
            for entry in http.header_map.headers
            if entry.key.lower() == "authorization"
        ]
    else:
        single = http.headers.get("authorization")
        values = [] if single is None else [single]
    return forwardcheck.presented_token(values)


def checked_trace_context(request: object) -> list[tuple[str, str]] | None:
    """The checked request's trace context (its ``traceparent``), for Check's span:
    the protected request's trace goes on through the check. None if it has none."""
    if not isinstance(request, external_auth_pb2.CheckRequest):
        return None
    http = request.attributes.request.http
    found = [(name, http.headers[name]) for name in _TRACE_HEADERS if name in http.headers]
    if not found:
        found = [
            (entry.key.lower(), entry.raw_value.decode("latin-1") or entry.value)
            for entry in http.header_map.headers
            if entry.key.lower() in _TRACE_HEADERS
        ]
    return found or None


def required_scopes(extensions: Mapping[str, str]) -> frozenset[str]:
    """The scopes a route demands through its ``context_extensions``."""
    required = extensions.get(REQUIRED_SCOPES)
    return forwardcheck.required_scopes((required,)) if required else frozenset()


def allowed(record: TokenRecord) -> external_auth_pb2.CheckResponse:
    """The answer letting ``record``'s request through, with its identity headers.

    Set headers overwrite every client copy; the ones we do not set
    (x-token-owner of a service token) and the secret itself are removed.
    """
    identity = forwardcheck.identity_headers(record)
    removed = ["authorization", *forwardcheck.absent_headers(identity)]
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(name, value) for name, value in identity],
            headers_to_remove=removed,
        ),
    )


class AuthorizationServicer:
    """Implements ``Authorization`` (duck-typed: the generated base is untyped)."""

    def __init__(self, authenticator: Authenticator, decided: Decided | None = None) -> None:
        self._auth = authenticator
        self._decided = decided or _uncounted
        self._last_warning = -_WARN_EVERY
        #: An allowing answer is built once per token record (docs/performance.md).
        self._allowed = forwardcheck.KeptAnswers(allowed)

    async def _checking_caller(
        self, context: grpc.aio.ServicerContext[object, object]
    ) -> Caller | None:
        """Envoy authenticates like any caller and needs ``introspect`` (or ``admin``)."""
        try:
            caller = await self._auth.authenticate(
                context.invocation_metadata() or (), context.peer()
            )
        except Unauthenticated:
            self._warn("a Check call came without a valid token (grpc_service.initial_metadata)")
            return None
        if not caller.holds(INTROSPECT):
            self._warn("a Check call came with a token that lacks the introspect scope")
            return None
        return caller

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning("ext_authz: %s; denying every request with 503", why)

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> external_auth_pb2.CheckResponse:
        try:
            answer = await self._check(request, context)
        except Unavailable:
            # The store is down: a denial Envoy can pass on, not a failed call
            # whose fate depends on Envoy's failure_mode_allow.
            answer = UNAVAILABLE
        self._decided(ENDPOINT, _RESULTS.get(answer.status.code, "allowed"))
        return answer

    async def _check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> external_auth_pb2.CheckResponse:
        caller = await self._checking_caller(context)
        if caller is None:
            return UNAVAILABLE
        attributes = request.attributes
        token = presented_token(attributes.request.http)
        address = parse_address(attributes.source.address.socket_address.address)
        required = required_scopes(attributes.context_extensions)
        # Judged at the moment Envoy's own token was: one "now" per request.
        decided = await forwardcheck.decide(self._auth, token, address, required, caller.now)
        if decided is Refusal.UNAUTHENTICATED:
            return UNAUTHENTICATED
        if decided is Refusal.FORBIDDEN:
            return FORBIDDEN
        return self._allowed(decided)


#: A denial's gRPC code -> its result label; OK is "allowed".
_RESULTS = {
    code_pb2.UNAUTHENTICATED: "unauthenticated",
    code_pb2.PERMISSION_DENIED: "forbidden",
    code_pb2.UNAVAILABLE: "unavailable",
}


def register(
    server: grpc.aio.Server, authenticator: Authenticator, decided: Decided | None = None
) -> str:
    """Serve Check beside TokenService; returns the name for reflection."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(authenticator, decided), server
    )
    return str(SERVICE_NAME)
