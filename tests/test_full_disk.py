"""A full disk: UNAVAILABLE / 503 saying so, /readyz 503, nothing acknowledged lost,
and service resumes by itself once there is room again. A real tmpfs, a real filler file."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.helpers import bearer
from tests.processes import Serving, serve
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc


@contextlib.contextmanager
def _small_disk(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


@pytest.fixture
async def on_small_disk(tmp_path: Path) -> AsyncIterator[Serving]:
    with _small_disk(tmp_path / "disk") as disk:
        server = await serve(
            "--data-dir", str(disk / "data"), "--grpc-listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", until="http",
        )  # fmt: skip
        try:
            yield server
        finally:
            (disk / "filler").unlink(missing_ok=True)
            assert (await server.stop())[0] == 0


async def _ready(client: httpx.AsyncClient, expected: int) -> int:
    """The /readyz status once it is ``expected`` (the watchdog looks once a second)."""
    for _ in range(50):
        status = (await client.get("/readyz")).status_code
        if status == expected:
            return status
        await asyncio.sleep(0.1)
    return status


async def test_a_full_disk_is_unavailable_then_heals(
    on_small_disk: Serving, tmp_path: Path
) -> None:
    server = on_small_disk
    disk = tmp_path / "disk"
    admin = (disk / "data" / "bootstrap-token").read_text().strip()
    async with (
        grpc.aio.insecure_channel(server.address("grpc")) as channel,
        httpx.AsyncClient(base_url=f"http://{server.address('http')}", timeout=30) as client,
    ):
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        acknowledged = []
        for i in range(5):
            created = await stub.CreateToken(
                pb.CreateTokenRequest(name=f"before-{i}"), metadata=bearer(admin)
            )
            acknowledged.append(created.token.id)
        filler = _fill(disk)

        refusals: list[tuple[grpc.StatusCode, str]] = []
        for i in range(20):  # until SQLite has used up what little room the WAL had
            try:
                created = await stub.CreateToken(
                    pb.CreateTokenRequest(name=f"during-{i}" + "x" * 200), metadata=bearer(admin)
                )
                acknowledged.append(created.token.id)
            except grpc.aio.AioRpcError as error:
                refusals.append((error.code(), error.details() or ""))
        assert refusals, "the full disk refused at least one create"
        for code, details in refusals:
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "disk is full" in details
            assert "sqlite" not in details.lower()
            assert "Error" not in details

        answer = await client.post(
            "/v1/tokens", json={"name": "http-during"}, headers={"Authorization": f"Bearer {admin}"}
        )
        assert answer.status_code == 503
        assert "disk is full" in answer.json()["message"]
        assert await _ready(client, 503) == 503
        # Reads still work while writes cannot.
        listed = await stub.ListTokens(pb.ListTokensRequest(page_size=100), metadata=bearer(admin))
        assert {t.id for t in listed.tokens} >= set(acknowledged)

        filler.unlink()
        assert await _ready(client, 200) == 200, "ready again once there is room"
        again = await stub.CreateToken(pb.CreateTokenRequest(name="after"), metadata=bearer(admin))
        acknowledged.append(again.token.id)
        listed = await stub.ListTokens(pb.ListTokensRequest(page_size=100), metadata=bearer(admin))
        assert {t.id for t in listed.tokens} >= set(acknowledged), "nothing acknowledged was lost"
