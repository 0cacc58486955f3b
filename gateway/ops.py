"""The operator's routes: ``/healthz`` (this process is up), ``/readyz`` (the
service and its store answer), ``/metrics`` (when the observer serves them)
and ``/openapi.json``, a document of every family, this one included.

None needs a token or reads a body; a failure is a ``google.rpc.Status``,
as on the canonical routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import openapi, openapi_legacy
from gateway.family import Family, Fragment, Route
from gateway.http import BadInput, Request, Response, json_response
from gateway.transcode import error_response
from gateway.upstream import RpcFailure, Upstream

SERVICE = "tokengrpc.v1.TokenService"
DOCUMENT = "/openapi.json"


class Scraper(Protocol):
    """What ``/metrics`` needs of the observer (``gateway.app.Observer``)."""

    serves_metrics: bool

    def scrape(self) -> tuple[bytes, str] | None: ...


class Ops:
    def __init__(
        self, upstream: Upstream, observer: Scraper | None, others: Sequence[Family]
    ) -> None:
        self._health = health_pb2_grpc.HealthStub(upstream.channel)
        self._observer = observer if observer is not None and observer.serves_metrics else None
        # Built and encoded once: the document cannot change while the process runs.
        fragments = [family.openapi() for family in others]
        self._document = json_response(200, openapi.document([*fragments, self.openapi()])).body

    def routes(self) -> list[Route]:
        found = [
            Route("GET", "/healthz", self.healthz, needs_token=False),
            Route("GET", "/readyz", self.readyz, needs_token=False),
            Route("GET", DOCUMENT, self.document, needs_token=False),
        ]
        if self._observer is not None:
            found.append(Route("GET", "/metrics", self.metrics, needs_token=False))
        return found

    def openapi(self) -> Fragment:
        return openapi_legacy.ops(DOCUMENT, metrics=self._observer is not None)

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(problem), http=400)

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        return error_response(failure.code, failure.message, failure.status)

    async def healthz(self, request: Request, _: dict[str, str]) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(self, request: Request, _: dict[str, str]) -> Response:
        # The server reports NOT_SERVING for this service when its store stops answering.
        try:
            answer = await self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=2
            )
        except grpc.aio.AioRpcError as error:
            return json_response(503, {"status": "unavailable", "reason": error.code().name})
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            return json_response(503, {"status": "unavailable", "reason": status})
        return json_response(200, {"status": "ready"})

    async def document(self, request: Request, _: dict[str, str]) -> Response:
        return Response(200, self._document, [(b"content-type", b"application/json")])

    async def metrics(self, request: Request, _: dict[str, str]) -> Response:
        assert self._observer is not None  # routed only with one
        scraped = self._observer.scrape()
        if scraped is None:
            return error_response(grpc.StatusCode.NOT_FOUND, "no route for this path")
        body, content_type = scraped
        return Response(200, body, [(b"content-type", content_type.encode())])
