"""The floors: what Python does with no token logic at all.

    python -m bench.floors grpc-echo --listen 127.0.0.1:0
    python -m bench.floors http-json --listen 127.0.0.1:0
    python -m bench.floors http-grpc-echo --listen 127.0.0.1:0
    python -m bench.floors grpc-allow-all --listen 127.0.0.1:0
    python -m bench.floors http-auth-floor --listen 127.0.0.1:0

Each prints ``listening on HOST:PORT`` and serves until killed. The HTTP
floors run on the same ASGI server, with the same settings, as the gateway;
``http-grpc-echo`` runs its echo server in the same process and event loop,
as ``tokengrpc serve`` runs the gateway next to the service.
``grpc-allow-all`` answers Envoy's ``Authorization/Check`` with "allowed" and
nothing else: what any grpcio ext_authz server costs before it looks at a token.
``http-auth-floor`` is the same for forward auth: a few lines of asyncio
answering every request head with 200 and fixed identity headers, the most
any Python server can do for nginx, Caddy or Envoy's ``http_service``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import grpc
import uvicorn
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc.status_pb2 import Status

from bench.load import ECHO_METHOD
from gateway.app import bind
from tokengrpc.extauthz import SERVICE_NAME as AUTHORIZATION

SMALL_JSON = json.dumps({"tokens": [{"id": 1, "name": "bench", "last_used_at": None}]}).encode()


async def start_grpc_echo(listen: str, reuse_port: bool = False) -> tuple[grpc.aio.Server, str]:
    async def echo(request: bytes, context: object) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(options=(("grpc.so_reuseport", int(reuse_port)),))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    await server.start()
    return server, f"{listen.rpartition(':')[0]}:{port}"


async def grpc_echo(listen: str, reuse_port: bool) -> None:
    server, address = await start_grpc_echo(listen, reuse_port)
    print(f"listening on {address}", flush=True)
    await server.wait_for_termination()


async def grpc_allow_all(listen: str) -> None:
    allowed: bytes = CheckResponse(status=Status(code=0)).SerializeToString()

    async def check(request: bytes, context: object) -> bytes:
        return allowed

    handler = grpc.method_handlers_generic_handler(
        AUTHORIZATION, {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    await server.wait_for_termination()


#: What the forward-auth floor answers every request with.
ALLOWED = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncache-control: no-store\r\n"
    b"x-token-id: 2\r\nx-token-name: bench\r\nx-token-scopes: read\r\n"
    b"x-token-owner: bench\r\n\r\n"
)


class _AllowEveryHead(asyncio.Protocol):
    """Answers each complete request head at once; the checks carry no body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        self._pending += data
        heads = self._pending.count(b"\r\n\r\n")
        if heads:
            self._pending = self._pending.rpartition(b"\r\n\r\n")[2]
            self._transport.write(ALLOWED * heads)


async def http_auth_floor(listen: str) -> None:
    sock = bind(listen)
    server = await asyncio.get_running_loop().create_server(_AllowEveryHead, sock=sock)
    host, port = sock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await server.serve_forever()


def _json_app(upstream: str | None) -> Any:
    channel = grpc.aio.insecure_channel(upstream) if upstream else None
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] | None = (
        channel.unary_unary(ECHO_METHOD) if channel else None
    )
    payload = b"x" * 160

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = SMALL_JSON
        if echo is not None:
            await echo(payload)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def http_server(listen: str, with_echo: bool) -> None:
    upstream = None
    if with_echo:
        _, upstream = await start_grpc_echo("127.0.0.1:0")
    sock = bind(listen)
    config = uvicorn.Config(
        _json_app(upstream), log_level="warning", access_log=False, proxy_headers=False,
        lifespan="off", server_header=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    kinds = ["grpc-echo", "http-json", "http-grpc-echo", "grpc-allow-all", "http-auth-floor"]
    parser.add_argument("kind", choices=kinds)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with others")
    args = parser.parse_args()
    if args.kind == "grpc-echo":
        asyncio.run(grpc_echo(args.listen, args.reuse_port))
    elif args.kind == "grpc-allow-all":
        asyncio.run(grpc_allow_all(args.listen))
    elif args.kind == "http-auth-floor":
        asyncio.run(http_auth_floor(args.listen))
    else:
        asyncio.run(http_server(args.listen, with_echo=args.kind == "http-grpc-echo"))


if __name__ == "__main__":
    main()
