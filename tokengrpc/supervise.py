"""Worker processes of ``serve --workers N``: started, told apart from their output, tied to us.

Each worker gets two pipes. It writes one byte on the *ready* pipe once it
serves (its output is the operator's, not a protocol). It watches the read
end of the *lifeline* pipe, whose write end only the parent holds: when the
parent dies, however it dies (``kill -9`` included), the kernel closes that
end, the worker reads EOF and shuts down. On Linux the worker also asks for
SIGTERM on its parent's death (``PR_SET_PDEATHSIG``), then checks that the
parent is still the one that started it, since it may have died before the
request took effect.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: How long a worker may take to start serving.
START_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerPipes:
    """What a worker is handed: its ends of the two pipes, and whose child it is."""

    lifeline: int
    ready: int
    parent: int

    def encode(self) -> str:
        return f"{self.lifeline},{self.ready},{self.parent}"

    @classmethod
    def decode(cls, text: str) -> WorkerPipes:
        lifeline, ready, parent = (int(part) for part in text.split(","))
        return cls(lifeline, ready, parent)


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    #: Our end of the lifeline; closing it (or dying) tells the worker to stop.
    lifeline: int


async def start_workers(count: int, command: Sequence[str]) -> list[Worker]:
    """Start ``count`` workers running ``command`` plus ``--supervised``; wait until each serves."""
    started: list[Worker] = []
    try:
        for _ in range(count):
            started.append(await _start_one(command))
    except BaseException:
        await stop_workers(started, 0)
        raise
    return started


async def _start_one(command: Sequence[str]) -> Worker:
    life_read, life_write = os.pipe()
    ready_read, ready_write = os.pipe()
    os.set_inheritable(life_write, False)
    os.set_inheritable(ready_read, False)
    pipes = WorkerPipes(life_read, ready_write, os.getpid())
    try:
        process = await asyncio.create_subprocess_exec(
            *command, "--supervised", pipes.encode(), pass_fds=(life_read, ready_write)
        )
    except BaseException:
        for fd in (life_read, life_write, ready_read, ready_write):
            os.close(fd)
        raise
    os.close(life_read)
    os.close(ready_write)
    worker = Worker(process, life_write)
    try:
        # The worker's end closes when it exits, so a failed start reads b"".
        async with asyncio.timeout(START_TIMEOUT):
            signal_byte = await asyncio.to_thread(os.read, ready_read, 1)
    except BaseException:
        await stop_workers([worker], 0)
        raise
    finally:
        os.close(ready_read)
    if not signal_byte:
        await stop_workers([worker], 0)
        raise OSError("a worker process failed to start")
    return worker


async def stop_workers(workers: Sequence[Worker], grace: float) -> None:
    """SIGTERM each, give it the grace period and 2 s more, then kill it."""
    for worker in workers:
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.process.wait(), timeout=grace + 2)
        except TimeoutError:
            worker.process.kill()
            await worker.process.wait()
        finally:
            if worker.lifeline >= 0:
                os.close(worker.lifeline)
                worker.lifeline = -1


def die_with_parent(pipes: WorkerPipes, stop: asyncio.Event) -> None:
    """In a worker: set ``stop`` when the parent goes, whichever way it goes."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != pipes.parent:  # gone before PDEATHSIG was set: nobody will signal
        stop.set()
        return
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        loop.remove_reader(pipes.lifeline)
        stop.set()

    # Nothing is ever written on the lifeline: readable means EOF, the parent is gone.
    loop.add_reader(pipes.lifeline, parent_gone)


def report_ready(pipes: WorkerPipes) -> None:
    """In a worker: tell the parent it serves."""
    os.write(pipes.ready, b"1")
    os.close(pipes.ready)
