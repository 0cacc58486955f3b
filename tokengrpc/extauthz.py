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
from urllib.parse import quote

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from tokengrpc.addresses import parse_address
from tokengrpc.auth import Authenticator, Caller, bearer
from tokengrpc.errors import Unauthenticated, Unavailable
from tokengrpc.logs import note_checked
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


#: What the upstream learns about an allowed request; client copies never pass.
IDENTITY_HEADERS = ("x-token-id", "x-token-owner", "x-token-name", "x-token-scopes")
#: The per-route ``context_extensions`` key naming the scopes a route demands.
REQUIRED_SCOPES = "required_scopes"
#: At most one warning per this many seconds about Envoy's own bad token, so a
#: misconfigured proxy under load does not flood the log.
_WARN_EVERY = 60.0
#: Allowing answers kept, one per token: a few hundred bytes each.
_KEPT_ANSWERS = 4096

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Printable ASCII stays readable; the rest (and "%") is percent-encoded UTF-8,
# so a name in any script survives every HTTP parser between Envoy and the app.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


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
    (or lists each in ``header_map`` with ``encode_raw_headers``); a comma is
    never part of a token, so either way two ``authorization`` headers fail.
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
    if len(values) != 1 or "," in values[0]:
        return None
    return bearer(values[0])


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


def identity_headers(record: TokenRecord) -> list[base_pb2.HeaderValueOption]:
    headers = [
        _header("x-token-id", str(record.id)),
        _header("x-token-name", quote(record.name, safe=_SAFE)),
        # Scopes hold no spaces but may hold any other printable text: each is
        # encoded like the name, so the header stays ASCII and splits on " ".
        _header("x-token-scopes", " ".join(quote(scope, safe=_SAFE) for scope in record.scopes)),
    ]
    if record.owner:  # service tokens have none, and then the header is absent
        headers.append(_header("x-token-owner", quote(record.owner, safe=_SAFE)))
    return headers


def lacks_required_scopes(record: TokenRecord, extensions: Mapping[str, str]) -> bool:
    """Opaque scopes are matched exactly: ``admin`` stands in only for reserved ones."""
    required = extensions.get(REQUIRED_SCOPES)
    if not required:
        return False
    return not set(required.split()).issubset(record.scopes)


def allowed(record: TokenRecord) -> external_auth_pb2.CheckResponse:
    """The answer letting ``record``'s request through, with its identity headers.

    Set headers overwrite every client copy; the ones we do not set
    (x-token-owner of a service token) and the secret itself are removed.
    """
    headers = identity_headers(record)
    kept = {option.header.key for option in headers}
    removed = ["authorization", *(name for name in IDENTITY_HEADERS if name not in kept)]
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(headers=headers, headers_to_remove=removed),
    )


class AuthorizationServicer:
    """Implements ``Authorization`` (duck-typed: the generated base is untyped)."""

    def __init__(self, authenticator: Authenticator, decided: Decided | None = None) -> None:
        self._auth = authenticator
        self._decided = decided or _uncounted
        self._last_warning = -_WARN_EVERY
        #: Token id -> (the record it was built from, its allowing answer): an answer
        #: is built once per record, not per check (docs/performance.md). The store
        #: hands out the same record object until the token changes, so identity
        #: says "still true".
        self._answers: dict[int, tuple[TokenRecord, external_auth_pb2.CheckResponse]] = {}

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
        # Judged at the moment Envoy's own token was: one "now" per request.
        record = await self._auth.check(token, address, caller.now)
        if record is None:
            return UNAUTHENTICATED
        note_checked(record.id)
        if lacks_required_scopes(record, attributes.context_extensions):
            return FORBIDDEN
        return self._allowed(record)

    def _allowed(self, record: TokenRecord) -> external_auth_pb2.CheckResponse:
        known = self._answers.get(record.id)
        if known is not None and known[0] is record:
            return known[1]
        answer = allowed(record)
        if len(self._answers) >= _KEPT_ANSWERS:
            self._answers.clear()
        self._answers[record.id] = (record, answer)
        return answer


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
