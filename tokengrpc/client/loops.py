"""What a verifier keeps per event loop.

A ``grpc.aio`` channel, a semaphore and a task all belong to the loop they
were first used in; using them from another loop raises ``RuntimeError``.
A verifier is often built where no loop runs yet (at import time, before
``uvicorn`` or ``asyncio.run`` starts one), and a test suite may run it in
a new loop per test, so it makes these things in the loop that calls it,
on first use, and again for each other loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from tokengrpc.client.identity import Identity
from tokengrpc.v1 import tokens_pb2_grpc


@dataclass(slots=True)
class Binding:
    """One loop's channel, stub, bound on calls in flight and shared lookups."""

    channel: grpc.aio.Channel
    stub: tokens_pb2_grpc.TokenServiceAsyncStub
    calls_allowed: asyncio.Semaphore
    #: Lookups in flight, by cache key: concurrent lookups of a token share one.
    pending: dict[bytes, asyncio.Task[Identity | None]] = field(default_factory=dict)


class Bindings:
    """The bindings of the loops a verifier has served.

    ``make_channel`` is called in the loop the channel is for; None means the
    one channel given, which belongs to the loop it was made in.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        make_channel: Callable[[], grpc.aio.Channel] | None,
        max_calls: int,
    ) -> None:
        self._channel = channel
        self._make_channel = make_channel
        self._max_calls = max_calls
        self._by_loop: dict[asyncio.AbstractEventLoop, Binding] = {}

    def current(self) -> Binding:
        """The running loop's binding, made on its first use."""
        loop = asyncio.get_running_loop()
        binding = self._by_loop.get(loop)
        if binding is None:
            # A loop that has ended drops its binding (and the channel made
            # for it, which grpc closes when it is collected): the dict holds
            # at most the loops still open. A copy of the keys: loops in other
            # threads may bind meanwhile.
            for ended in [old for old in list(self._by_loop) if old.is_closed()]:
                del self._by_loop[ended]
            channel = self._channel
            if channel is None:
                assert self._make_channel is not None
                channel = self._make_channel()
            stub = tokens_pb2_grpc.TokenServiceStub(channel)
            binding = Binding(channel, stub, asyncio.Semaphore(self._max_calls))
            self._by_loop[loop] = binding
        return binding

    async def close(self) -> None:
        """Close the channels made here (a channel given stays its owner's).

        A later lookup binds again, with a new channel.
        """
        bindings, self._by_loop = self._by_loop, {}
        if self._make_channel is not None:
            for binding in bindings.values():
                # Without a grace, closing awaits nothing of the channel's own
                # loop, so a channel of another (even ended) loop closes too.
                await binding.channel.close()
