"""The ``tokengrpc`` command as a user runs it, in a subprocess."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sqlite3
import stat
import sys
from pathlib import Path

import grpc
import pytest

from tests.helpers import bearer
from tests.processes import (
    Serving,
    children,
    clean_env,
    new_store,
    run_cli,
    serve,
    start_gateway,
)
from tokengrpc.store.sqlite.migrations import LATEST
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc


async def test_serve_prints_addresses_and_bootstrap_path_then_stops_cleanly(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = clean_env(TOKENGRPC_DATA_DIR=str(data), TOKENGRPC_GRPC_LISTEN="127.0.0.1:0")
    server = await serve("--no-http", env=env)
    bootstrap = data / "bootstrap-token"
    assert f"bootstrap token written to {bootstrap}" in server.lines
    address = server.address("grpc")
    assert address.startswith("127.0.0.1:")
    assert int(address.rpartition(":")[2]) > 0
    assert stat.S_IMODE(bootstrap.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    token = bootstrap.read_text().strip()
    assert token not in "\n".join(server.lines)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        for _ in range(3):
            await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(token))
    code, rest = await server.stop()
    assert code == 0
    assert "shutting down" in rest
    # The last uses were written by the shutdown flush, whatever the timer did.
    with sqlite3.connect(data / "tokens.db") as db:
        assert db.execute("SELECT usage_count FROM tokens WHERE id = 1").fetchone() == (3,)

    again = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http")
    assert not any("bootstrap" in line for line in again.lines), "only an empty store bootstraps"
    code, _ = await again.stop()
    assert code == 0


async def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    first = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http")
    busy = first.address("grpc")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokengrpc", "serve", "--data-dir", str(tmp_path),
        "--grpc-listen", busy, "--no-http",
        env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 2
    assert "could not listen" in err.decode()
    await first.stop()


def test_token_commands_work_on_the_store(tmp_path: Path) -> None:
    data = str(tmp_path)
    new_store(data)
    created = run_cli(
        "token", "create", "--data-dir", data, "--name", "ops", "--owner", "ops-team",
        "--scope", "write", "--scope", "deploy", "--allowed-ip", "10.0.0.0/8",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip()
    assert plaintext.startswith("1|tgr_")

    listed = run_cli("token", "list", "--data-dir", data, "--owner", "ops-team")
    assert listed.returncode == 0
    row = listed.stdout.splitlines()[1].split("\t")
    assert row[:5] == ["1", "active", "ops-team", "ops", "write deploy"]
    assert plaintext.partition("|")[2] not in listed.stdout

    service = run_cli("token", "create", "--data-dir", data, "--name", "ci", "--service")
    assert service.returncode == 0
    assert run_cli("token", "revoke", "--data-dir", data, "ci").returncode == 0
    assert run_cli("token", "revoke", "--data-dir", data, "1").returncode == 0
    again = run_cli("token", "revoke", "--data-dir", data, "1")
    assert again.returncode == 1
    assert "not found" in again.stderr
    everything = run_cli("token", "list", "--data-dir", data, "--owner", "ops-team", "--all")
    assert "\trevoked\t" in everything.stdout

    bad = run_cli("token", "create", "--data-dir", data, "--name", " ", "--owner", "x")
    assert bad.returncode == 1
    assert "name: a name is required" in bad.stderr


@pytest.mark.parametrize("found_version", [0, LATEST])
async def test_an_existing_data_dir_is_upgraded_never_wiped(
    tmp_path: Path, found_version: int
) -> None:
    db_path = tmp_path / "tokens.db"
    if found_version:
        new_store(tmp_path)
        assert run_cli("token", "create", "--data-dir", str(tmp_path), "--name", "kept",
                       "--owner", "o").returncode == 0  # fmt: skip
    else:
        sqlite3.connect(db_path).close()  # an empty file from before any schema
    listed = run_cli("token", "list", "--data-dir", str(tmp_path), "--owner", "o")
    assert listed.returncode == 0
    assert ("\tkept\t" in listed.stdout) == bool(found_version)
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LATEST,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "tokens.db") as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    listed = run_cli("token", "list", "--data-dir", str(tmp_path))
    assert listed.returncode != 0
    assert "newer" in listed.stderr


@pytest.mark.parametrize("upstream", ["in-process", "network"])
async def test_serve_with_http_and_a_separate_gateway(tmp_path: Path, upstream: str) -> None:
    import httpx

    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--http-upstream", upstream, until="http",
    )  # fmt: skip
    token = (tmp_path / "bootstrap-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
        listed = await client.get("/api/token", headers=headers)
        assert [t["name"] for t in listed.json()["tokens"]] == ["bootstrap"]

    alone = await start_gateway(server.address("grpc"))
    assert alone.lines[0].startswith("http listening on 127.0.0.1:")
    async with httpx.AsyncClient(base_url=f"http://{alone.address('http')}") as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        me = await client.get("/api/v1/me/tokens", headers=headers)
        assert me.json()["meta"]["total"] == 1
    assert (await alone.stop())[0] == 0
    assert (await server.stop())[0] == 0


async def test_workers_share_the_ports_and_revocation(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--workers", "2",
    )  # fmt: skip
    workers = children(server.process.pid)
    assert len(workers) == 1, "one extra process next to the parent"
    admin = (tmp_path / "bootstrap-token").read_text().strip()
    address = server.address("grpc")
    # Separate connections, so the kernel spreads them over both processes.
    options = (("grpc.use_local_subchannel_pool", 1),)

    async def list_with(token: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub = tokens_pb2_grpc.TokenServiceStub(channel)
            try:
                await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(token))
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    async with grpc.aio.insecure_channel(address) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        created = await stub.CreateToken(pb.CreateTokenRequest(name="w"), metadata=bearer(admin))
        assert {await list_with(created.plaintext) for _ in range(12)} == {grpc.StatusCode.OK}
        await stub.RevokeToken(pb.RevokeTokenRequest(id=created.token.id), metadata=bearer(admin))
    codes = {await list_with(created.plaintext) for _ in range(12)}
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    code, _ = await server.stop()
    assert code == 0
    assert not set(children(server.process.pid)) & set(workers), "the workers stopped too"


async def test_a_revocation_by_the_cli_stops_a_serving_process_at_once(tmp_path: Path) -> None:
    """The server caches the rows it reads; a write by another process still counts at once."""
    server = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http")
    try:
        admin = (tmp_path / "bootstrap-token").read_text().strip()
        async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
            stub = tokens_pb2_grpc.TokenServiceStub(channel)
            created = await stub.CreateToken(
                pb.CreateTokenRequest(name="cli-revoked"), metadata=bearer(admin)
            )
            for _ in range(3):  # read, then answered from the cache
                await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(created.plaintext))
            revoked = await asyncio.to_thread(
                run_cli, "token", "revoke", "--data-dir", str(tmp_path), str(created.token.id)
            )
            assert revoked.returncode == 0, revoked.stderr
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(created.plaintext))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        code, _ = await server.stop()
    assert code == 0


def test_version_prints_the_package_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"tokengrpc {importlib.metadata.version('tokengrpc')}\n"


def test_token_events_prints_no_header_before_a_refusal(tmp_path: Path) -> None:
    data = str(tmp_path)
    new_store(data)
    missing = run_cli("token", "events", "999", "--data-dir", data)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert "not found" in missing.stderr

    assert (
        run_cli("token", "create", "--data-dir", data, "--name", "e", "--service").returncode == 0
    )
    listed = run_cli("token", "events", "1", "--data-dir", data)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.startswith("TIME\tACTION\t")
    assert row.split("\t")[1:3] == ["created", "1"]
    assert header.endswith("\tREASON\tDETAIL")
    assert row.split("\t")[-2:] == ["cli", "-"]  # made by the command line


def test_a_gateway_without_an_upstream_is_one_line_naming_flag_and_variable() -> None:
    done = run_cli("gateway", "--http-listen", "127.0.0.1:0")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "--upstream" in line
    assert "TOKENGRPC_UPSTREAM" in line


async def test_the_gateway_takes_its_upstream_from_the_variable(tmp_path: Path) -> None:
    import httpx

    server = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokengrpc", "gateway", "--http-listen", "127.0.0.1:0",
            env=clean_env(TOKENGRPC_UPSTREAM=server.address("grpc")),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        alone = Serving(process, [first.rstrip("\n")])
        try:
            token = (tmp_path / "bootstrap-token").read_text().strip()
            async with httpx.AsyncClient(base_url=f"http://{alone.address('http')}") as client:
                listed = await client.get(
                    "/api/token", headers={"Authorization": f"Bearer {token}"}
                )
            assert [t["name"] for t in listed.json()["tokens"]] == ["bootstrap"]
        finally:
            assert (await alone.stop())[0] == 0
    finally:
        assert (await server.stop())[0] == 0


async def test_the_http_listener_is_off_by_variable_too(tmp_path: Path) -> None:
    env = clean_env(TOKENGRPC_HTTP="off", TOKENGRPC_HTTP_LISTEN="127.0.0.1:0")
    server = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", env=env)
    code, rest = await server.stop()
    assert code == 0
    assert "http listening" not in "\n".join(server.lines) + rest


def test_token_create_takes_the_prefix_as_a_flag(tmp_path: Path) -> None:
    new_store(tmp_path)
    created = run_cli("token", "create", "--data-dir", str(tmp_path), "--name", "p",
                      "--service", "--token-prefix", "flg_")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.partition("|")[2].startswith("flg_")
