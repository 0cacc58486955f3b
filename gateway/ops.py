"""``/healthz`` (this process is up) and ``/readyz`` (the service and its store answer)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.http import Request, Response, json_response
from gateway.legacy import Handler
from gateway.upstream import Upstream

SERVICE = "tokengrpc.v1.TokenService"


class Ops:
    def __init__(self, upstream: Upstream) -> None:
        self._health = health_pb2_grpc.HealthStub(upstream.channel)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/healthz", self.healthz), ("GET", "/readyz", self.readyz)]

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
