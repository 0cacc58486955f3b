"""Running ``tokengrpc`` as a user does: in a subprocess, reading its output."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENGRPC_")}
    return env | extra


class Serving:
    def __init__(self, process: asyncio.subprocess.Process, lines: list[str]) -> None:
        self.process = process
        self.lines = lines
        #: Output after the start-up lines, read as it comes: an access line per request
        #: must never fill the pipe and block the server.
        self._rest: list[bytes] = []
        #: Set whenever more output has come (``hear``).
        self._more = asyncio.Event()
        self._drain = asyncio.ensure_future(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self._rest.append(chunk)
            self._more.set()

    async def hear(self, text: str) -> None:
        """Returns once the output after the start-up lines holds ``text``."""
        while text.encode() not in b"".join(self._rest):
            self._more.clear()
            await self._more.wait()

    def address(self, kind: str) -> str:
        prefix = f"{kind} listening on "
        return next(line[len(prefix) :] for line in self.lines if line.startswith(prefix))

    async def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(self.process.wait(), self._drain), timeout=20)
        except TimeoutError:
            self.process.kill()  # never leave a server behind a failed test
            await self.process.wait()
            raise
        return self.process.returncode or 0, b"".join(self._rest).decode()


async def serve(
    *args: str,
    env: dict[str, str] | None = None,
    until: str = "grpc",
    open_files: tuple[int, int] | None = None,
) -> Serving:
    """``tokengrpc serve`` until it prints its ``until`` address; ``open_files``
    sets its (soft, hard) descriptor limits as an operator's shell would."""
    return await _start("serve", *args, env=env, until=until, open_files=open_files)


async def start_gateway(upstream: str, *args: str, env: dict[str, str] | None = None) -> Serving:
    """``tokengrpc gateway`` in front of ``upstream``, until it listens."""
    command = ("--upstream", upstream, "--http-listen", "127.0.0.1:0", *args)
    return await _start("gateway", *command, env=env, until="http")


#: ``python -c`` this SOFT HARD ARGS...: set the descriptor limits as an
#: operator's shell would, then run ``python -m tokengrpc ARGS...`` in place.
_WITH_OPEN_FILES = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
os.execv(sys.executable, [sys.executable, "-m", "tokengrpc", *sys.argv[3:]])
"""


async def _start(
    command: str,
    *args: str,
    env: dict[str, str] | None,
    until: str,
    open_files: tuple[int, int] | None = None,
) -> Serving:
    launcher: tuple[str, ...] = ("-m", "tokengrpc")
    if open_files is not None:
        # Set in the child by a trampoline that then becomes tokengrpc (same pid),
        # never by ``preexec_fn``: that forks this process, whose gRPC threads'
        # fork handlers can kill the child before it runs anything.
        launcher = ("-c", _WITH_OPEN_FILES, *map(str, open_files))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *launcher,
        command,
        *args,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not any(line.startswith(f"{until} listening on") for line in lines):
        raw = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        assert raw, f"{command} exited early: {lines}"
        lines.append(raw.decode().rstrip("\n"))
    return Serving(process, lines)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the workers of a ``serve``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokengrpc", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=60,
        check=False,
        cwd=cwd,
    )


def new_store(data_dir: Path | str, env: dict[str, str] | None = None) -> None:
    """An empty store in ``data_dir``, as ``tokengrpc migrate`` makes it (the ``token``
    commands make none)."""
    done = run_cli("migrate", "--data-dir", str(data_dir), env=env)
    assert done.returncode == 0, done.stderr
