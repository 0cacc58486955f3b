"""Stopping a serving process within its grace period, whatever clients do.

CONTRACT section 10: SIGTERM ends the process within the grace period plus
2 s. ``shut_down`` stops the servers under a deadline of grace + 1 s; a timer
started first (``exit_anyway_after``) ends the process at grace + 2 s should
anything still hang.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

from tokengrpc.server import GrpcServer
from tokengrpc.supervise import Worker, stop_workers

if TYPE_CHECKING:
    from gateway.app import HttpServer

log = logging.getLogger("tokengrpc")


def stop_on_signals() -> asyncio.Event:
    """Installed before anything is announced, so a prompt SIGTERM is still clean."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def shut_down(
    grace: float, grpc_server: GrpcServer, http: HttpServer | None, workers: list[Worker]
) -> None:
    """Stop serving within ``grace`` (plus a little), whatever clients do.

    HTTP first, so requests it forwards over the network still find the gRPC
    server; gRPC gets what is left of the grace period. Whatever still hangs
    after that is abandoned: the usage flush and a clean exit matter more.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    stopping = asyncio.ensure_future(stop_workers(workers, grace))
    try:
        async with asyncio.timeout(grace + 1):
            if http is not None:
                await http.stop()
            await grpc_server.stop(max(deadline - loop.time(), 0.1))
            await stopping
    except TimeoutError:
        log.warning("shutdown passed the grace period; closing anyway")
        stopping.cancel()


def exit_anyway_after(seconds: float) -> None:
    """The last resort, should anything hang past the deadline (a blocked loop, a stuck thread)."""

    def say_so() -> None:
        log.error("shutdown hung; exiting")
        for handler in logging.getLogger().handlers:
            handler.flush()  # os._exit flushes nothing

    def give_up() -> None:
        # From a thread of its own: if stderr itself is what blocks, the line
        # must not keep the process from exiting.
        saying = threading.Thread(target=say_so, name="exit-anyway-log", daemon=True)
        saying.start()
        saying.join(1.0)
        os._exit(1)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
