"""The floors: what Python does with no token logic at all.

    python -m bench.floors grpc-echo --listen 127.0.0.1:0
    python -m bench.floors http-json --listen 127.0.0.1:0
    python -m bench.floors http-grpc-echo --listen 127.0.0.1:0

Each prints ``listening on HOST:PORT`` and serves until killed. The HTTP
floors run on the same ASGI server, with the same settings, as the gateway;
``http-grpc-echo`` runs its echo server in the same process and event loop,
as ``tokengrpc serve`` runs the gateway next to the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import grpc
import uvicorn

from bench.load import ECHO_METHOD
from gateway.app import _bind

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
    sock = _bind(listen)
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
    parser.add_argument("kind", choices=["grpc-echo", "http-json", "http-grpc-echo"])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with others")
    args = parser.parse_args()
    if args.kind == "grpc-echo":
        asyncio.run(grpc_echo(args.listen, args.reuse_port))
    else:
        asyncio.run(http_server(args.listen, with_echo=args.kind == "http-grpc-echo"))


if __name__ == "__main__":
    main()
