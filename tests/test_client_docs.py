"""The examples of docs/services.md, run exactly as written.

Each example there is a complete file whose first line names it
(``# shop_http.py: …``, ``// shop/v1/orders.proto``). They are copied out of
the docs into a temporary directory and run as their readers would: the
ASGI app under the ``uvicorn`` command line, the gRPC service as its own
``grpc.aio`` server, the script with ``python``, each in a subprocess against
a real tokengrpc. So an example that stops working fails here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import grpc
import httpx
import pytest

from tests.helpers import LiveService, bearer
from tests.processes import Serving, clean_env
from tokengrpc.v1 import tokens_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "services.md"
#: A fenced block: its language and its text.
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: The first line of an example names its file.
_NAMED = re.compile(r"^(?:#|//) ([\w/]+\.(?:py|proto))\b")
UNAVAILABLE_MESSAGE = "token verification is unavailable"


def examples() -> dict[str, str]:
    """Every Python and proto example of the docs, by the file name it gives."""
    found: dict[str, str] = {}
    for language, text in _FENCE.findall(DOCS.read_text()):
        if language not in ("python", "proto"):
            continue
        named = _NAMED.match(text)
        assert named, f"a {language} example in {DOCS.name} names no file: {text[:60]!r}"
        found[named.group(1)] = text
    return found


@pytest.fixture
def written(tmp_path: Path) -> Path:
    """The examples as files, with the proto compiled as its example says."""
    folder = tmp_path / "examples"
    for name, text in examples().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.",
         "--grpc_python_out=.", "shop/v1/orders.proto"],
        cwd=folder, check=True, timeout=60,
    )  # fmt: skip
    return folder


def example_env(
    service: LiveService, introspector: str, folder: Path, **extra: str
) -> dict[str, str]:
    # The examples' own folder first, as when run from it; then this tree.
    path = os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return clean_env(
        INTROSPECT_TARGET=service.target,
        INTROSPECT_TOKEN=introspector,
        PYTHONPATH=path,
        **extra,
    )


async def start(args: list[str], folder: Path, env: dict[str, str], ready: str) -> Serving:
    """A program from the examples' folder, once it prints a line matching ``ready``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=folder, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not any(re.search(ready, line) for line in lines):
            raw = await asyncio.wait_for(process.stdout.readline(), timeout=20)
            assert raw, f"{args[-1]} exited early: {lines}"
            lines.append(raw.decode().rstrip("\n"))
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return Serving(process, lines)


def port_of(serving: Serving, ready: str) -> int:
    return int(next(m.group(1) for line in serving.lines if (m := re.search(ready, line))))


async def introspector(service: LiveService) -> str:
    _, token = await service.create("shop", service_token=True, scopes=["introspect"])
    return token


async def revoke(service: LiveService, token_id: int) -> None:
    await service.stub.RevokeToken(
        pb.RevokeTokenRequest(id=token_id), metadata=bearer(service.admin_token)
    )


def test_every_example_names_its_file() -> None:
    assert set(examples()) == {
        "check_token.py",
        "shop/v1/orders.proto",
        "shop_grpc.py",
        "shop_http.py",
    }


async def test_the_script(sqlite_service: LiveService, written: Path) -> None:
    service = sqlite_service
    env = example_env(service, await introspector(service), written)
    token_id, token = await service.create("app", owner="alice")
    revoked_id, revoked = await service.create("gone", owner="alice")
    await revoke(service, revoked_id)
    for presented, expected in ((token, f"Identity(token_id={token_id}, "), (revoked, "None")):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "check_token.py", presented],
            cwd=written, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected)


HTTP_READY = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"


@pytest.fixture
async def shop_http(sqlite_service: LiveService, written: Path) -> AsyncIterator[Serving]:
    """``python -m uvicorn shop_http:app``, as the docs say, on a port the OS picks."""
    env = example_env(sqlite_service, await introspector(sqlite_service), written)
    args = ["-m", "uvicorn", "shop_http:app", "--host", "127.0.0.1", "--port", "0"]
    serving = await start(args, written, env, HTTP_READY)
    try:
        yield serving
    finally:
        _, output = await serving.stop()
        # Every answer below is a deliberate one: nothing failed on the way.
        assert "Traceback" not in output
        assert "RuntimeError" not in output


async def test_the_asgi_example_under_uvicorn(
    sqlite_service: LiveService, shop_http: Serving
) -> None:
    service = sqlite_service
    _, reader = await service.create("reader", owner="alice", scopes=["read"])
    _, writer = await service.create("writer", owner="alice", scopes=["write"])
    revoked_id, revoked = await service.create("gone", owner="alice", scopes=["read"])
    await revoke(service, revoked_id)
    _, unseen = await service.create("unseen", owner="bob", scopes=["read"])
    port = port_of(shop_http, HTTP_READY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

        async def get(path: str, token: str | None = None) -> httpx.Response:
            return await http.get(
                path, headers={"authorization": f"Bearer {token}"} if token else {}
            )

        healthy = await get("/healthz")
        assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})
        allowed = await get("/orders", reader)
        assert (allowed.status_code, allowed.json()) == (200, {"owner": "alice", "name": "reader"})
        for token in (None, "1|tgr_nope", revoked):
            denied = await get("/orders", token)
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"] == "Bearer"
            assert denied.json() == {"error": "Unauthenticated."}
        lacking = await get("/orders", writer)
        assert (lacking.status_code, lacking.json()) == (403, {"error": "Forbidden."})

        # tokengrpc gone: a token not yet seen cannot be checked, and is refused.
        await service.server.stop(0)
        unavailable = await get("/orders", unseen)
        assert unavailable.status_code == 503
        assert unavailable.content == b'{"error": "Service unavailable."}'


GRPC_READY = r"listening on port (\d+)"


def load(path: Path) -> ModuleType:
    """A generated module of the example, without putting its folder on sys.path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_grpc_example_as_a_grpc_aio_server(
    sqlite_service: LiveService, written: Path
) -> None:
    service = sqlite_service
    env = example_env(service, await introspector(service), written, LISTEN="127.0.0.1:0")
    orders_pb2 = load(written / "shop" / "v1" / "orders_pb2.py")
    _, refunder = await service.create("refunder", owner="alice", scopes=["read", "refund"])
    _, reader = await service.create("reader", owner="alice", scopes=["read"])
    _, refund_only = await service.create("refund only", owner="alice", scopes=["refund"])
    revoked_id, revoked = await service.create("gone", owner="alice", scopes=["read", "refund"])
    await revoke(service, revoked_id)
    _, unseen = await service.create("unseen", owner="bob", scopes=["read", "refund"])

    serving = await start(["shop_grpc.py"], written, env, GRPC_READY)
    try:
        port = port_of(serving, GRPC_READY)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            refund = channel.unary_unary(
                "/shop.v1.Orders/Refund",
                request_serializer=orders_pb2.RefundRequest.SerializeToString,
                response_deserializer=orders_pb2.RefundReply.FromString,
            )

            async def call(token: str | None) -> grpc.StatusCode:
                try:
                    reply = await refund(
                        orders_pb2.RefundRequest(order="A1"),
                        metadata=bearer(token) if token else (),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError as error:
                    details = error.details() or ""
                    assert "Error" not in details
                    assert "loop" not in details
                    if error.code() is grpc.StatusCode.UNAVAILABLE:
                        assert details == UNAVAILABLE_MESSAGE
                    return error.code()
                assert (reply.order, reply.refunded_by) == ("A1", "refunder")
                return grpc.StatusCode.OK

            assert await call(refunder) is grpc.StatusCode.OK
            for token in (None, "1|tgr_nope", revoked):
                assert await call(token) is grpc.StatusCode.UNAUTHENTICATED
            for token in (reader, refund_only):
                assert await call(token) is grpc.StatusCode.PERMISSION_DENIED

            await service.server.stop(0)
            assert await call(unseen) is grpc.StatusCode.UNAVAILABLE
    finally:
        _, output = await serving.stop()
    assert "Traceback" not in output
    assert "RuntimeError" not in output
