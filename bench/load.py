"""gRPC load generator, run as its own process.

    python -m bench.load --target HOST:PORT --call introspect|list|create|echo
        --concurrency N --seconds S [--tokens FILE] [--caller TOKEN] [--payload BYTES]

Prints one JSON line: calls, seconds, calls_per_second, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.stats import percentile
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

ECHO_METHOD = "/bench.Echo/Echo"


def _call_factory(
    args: argparse.Namespace, channel: grpc.aio.Channel
) -> Callable[[], Awaitable[object]]:
    metadata = (("authorization", f"Bearer {args.caller}"),) if args.caller else ()
    if args.call == "echo":
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
        payload = b"x" * args.payload
        return lambda: echo(payload)
    stub = tokens_pb2_grpc.TokenServiceStub(channel)
    if args.call == "introspect":
        tokens = Path(args.tokens).read_text().split()
        random.shuffle(tokens)
        cycle = itertools.cycle(tokens)
        return lambda: stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=next(cycle)), metadata=metadata
        )
    if args.call == "list":
        request = pb.ListTokensRequest(page_size=args.page_size, page_token=args.page_token)
        return lambda: stub.ListTokens(request, metadata=metadata)
    if args.call == "create":
        counter = itertools.count()
        return lambda: stub.CreateToken(
            pb.CreateTokenRequest(name=f"bench-{next(counter)}"), metadata=metadata
        )
    raise SystemExit(f"unknown call {args.call}")


async def run(args: argparse.Namespace) -> dict[str, float]:
    # Several connections when asked: SO_REUSEPORT spreads connections, not calls.
    options = (("grpc.use_local_subchannel_pool", 1),)
    channels = [
        grpc.aio.insecure_channel(args.target, options=options) for _ in range(args.channels)
    ]
    calls = [_call_factory(args, channel) for channel in channels]
    for call in calls:
        for _ in range(min(50, args.concurrency * 5)):  # warm up the connection and caches
            await call()
    latencies: list[float] = []
    deadline = time.perf_counter() + args.seconds

    async def worker(call: Callable[[], Awaitable[object]]) -> None:
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            await call()
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker(calls[i % len(calls)]) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    latencies.sort()
    return {
        "calls": len(latencies),
        "seconds": elapsed,
        "calls_per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--call", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tokens")
    parser.add_argument("--caller")
    parser.add_argument("--payload", type=int, default=160)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--page-token", default="")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
