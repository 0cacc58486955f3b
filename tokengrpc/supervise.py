"""Worker processes of ``serve --workers N``: started, told apart from their output, tied to us.

Each worker gets three pipes. It reads its settings, the parent's resolved
``Settings`` whole, from the *settings* pipe (never from flags re-rendered for
it, which could forget one, nor from its command line, which anyone can read:
it holds the database URL and the secret key). It writes one byte on the *ready* pipe once it
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

from tokengrpc import corelog

#: How long a worker may take to start serving.
START_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerPipes:
    """What a worker is handed: its ends of the two pipes, and whose child it is."""

    lifeline: int
    ready: int
    parent: int
    settings: int

    def encode(self) -> str:
        return f"{self.lifeline},{self.ready},{self.parent},{self.settings}"

    @classmethod
    def decode(cls, text: str) -> WorkerPipes:
        lifeline, ready, parent, settings = (int(part) for part in text.split(","))
        return cls(lifeline, ready, parent, settings)


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    #: Our end of the lifeline; closing it (or dying) tells the worker to stop.
    lifeline: int


async def start_workers(count: int, command: Sequence[str], settings: bytes) -> list[Worker]:
    """Start ``count`` workers running ``command`` plus ``--supervised``, each handed
    ``settings``; wait until each serves."""
    started: list[Worker] = []
    try:
        for _ in range(count):
            started.append(await _start_one(command, settings))
    except BaseException:
        await stop_workers(started, 0)
        raise
    return started


async def _start_one(command: Sequence[str], settings: bytes) -> Worker:
    life_read, life_write = os.pipe()
    ready_read, ready_write = os.pipe()
    settings_read, settings_write = os.pipe()
    pipes = WorkerPipes(life_read, ready_write, os.getpid(), settings_read)
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            "--supervised",
            pipes.encode(),
            pass_fds=(life_read, ready_write, settings_read),
            stderr=corelog.real_stderr(),  # not our gRPC core pipe: it captures its own
        )
    except BaseException:
        for fd in (life_read, life_write, ready_read, ready_write, settings_read, settings_write):
            os.close(fd)
        raise
    for fd in (life_read, ready_write, settings_read):
        os.close(fd)
    worker = Worker(process, life_write)
    try:
        # Then end-of-file: the worker reads to it. A thread, so a worker that
        # never reads cannot block the loop on a full pipe.
        await asyncio.to_thread(_write_all, settings_write, settings)
    except BaseException:
        await stop_workers([worker], 0)
        os.close(ready_read)
        raise
    finally:
        os.close(settings_write)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_settings(pipes: WorkerPipes) -> bytes:
    """In a worker: the settings the parent sent, read to the end, before anything else."""
    chunks = []
    while chunk := os.read(pipes.settings, 65536):
        chunks.append(chunk)
    os.close(pipes.settings)
    return b"".join(chunks)


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
