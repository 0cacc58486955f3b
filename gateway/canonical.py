"""The canonical family: the routes generated from the proto's HTTP annotations.

Its routes come from ``gateway.transcode``, its document from
``gateway.openapi``; every failure is a ``google.rpc.Status`` in JSON, with
the HTTP status of its code (``gateway.status``) as grpc-gateway answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway import openapi
from gateway.family import Fragment, Route
from gateway.http import BadInput, BodyTooLarge, Request, Response
from gateway.transcode import Transcoder, error_response
from gateway.upstream import RpcFailure, Upstream


class StatusErrors:
    """Failures as a ``google.rpc.Status`` in JSON: the shape of every ``/v1`` route."""

    def bad_input(self, request: Request, problem: BadInput) -> Response:
        if isinstance(problem, BodyTooLarge):
            return error_response(grpc.StatusCode.RESOURCE_EXHAUSTED, str(problem), http=413)
        return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(problem), http=400)

    def failed(self, request: Request, failure: RpcFailure) -> Response:
        return error_response(failure.code, failure.message, failure.status)


class Canonical(StatusErrors):
    def __init__(self, upstream: Upstream, service: ServiceDescriptor) -> None:
        self._transcoder = Transcoder(upstream, service)
        self._service = service

    def routes(self) -> Iterator[Route]:
        return self._transcoder.routes()

    def openapi(self) -> Fragment:
        return openapi.canonical(self._service)
