"""Several ``tokengrpc serve`` processes on one PostgreSQL database (CONTRACT section 5).

Each instance is a real process with its own data dir; they share the
database and the secret key, as a deployment behind a load balancer does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest

from tests import rows
from tests.helpers import bearer
from tests.postgres import PASSWORD, PgServer, remove_server, start_server
from tests.processes import Serving, clean_env, run_cli, serve
from tokengrpc.store.postgres.changes import BOUND, LISTENER_APPLICATION
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(eq=False)
class Instance:
    serving: Serving
    data_dir: Path
    channel: grpc.aio.Channel

    @property
    def stub(self) -> tokens_pb2_grpc.TokenServiceAsyncStub:
        return tokens_pb2_grpc.TokenServiceStub(self.channel)

    @property
    def http(self) -> str:
        return "http://" + self.serving.address("http")

    async def stop(self) -> tuple[int, str]:
        await self.channel.close()
        return await self.serving.stop()


class Cluster:
    """Instances of one database and one key; stops whatever is left at the end."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.key = _key()
        self.instances: list[Instance] = []

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(TOKENGRPC_DATABASE_URL=self.url, TOKENGRPC_SECRET_KEY=self.key) | extra

    async def start(self, name: str, *args: str, **extra: str) -> Instance:
        data = self.root / name
        serving = await serve(
            "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--no-access-log", *args,
            env=self.env(**extra), until="http",
        )  # fmt: skip
        instance = Instance(serving, data, grpc.aio.insecure_channel(serving.address("grpc")))
        self.instances.append(instance)
        return instance

    def admin(self) -> str:
        """The bootstrap token, from whichever instance wrote it."""
        (path,) = [p for p in self.root.glob("*/bootstrap-token")]
        return path.read_text().strip()

    async def close(self) -> None:
        for instance in self.instances:
            if instance.serving.process.returncode is None:
                with contextlib.suppress(Exception):
                    await instance.stop()

    async def fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.url)
        try:
            return list(await connection.fetch(sql, *params))
        finally:
            await connection.close()


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(database_url, tmp_path)
    try:
        yield cluster
    finally:
        await cluster.close()
    # Whatever a test did, no plaintext secret reached the database: no row of
    # either table holds the prefix, as text or as bytes (hex "7467725f").
    found = await rows.rows_holding(cluster.url, ["tgr_", b"tgr_".hex()])
    assert found == {"tokens": 0, "token_events": 0}, f"a plaintext secret was found: {found}"


async def _active(instance: Instance, plaintext: str) -> bool:
    """Whether ``plaintext`` authenticates through ``instance`` (it lists its own tokens)."""
    try:
        await instance.stub.ListTokens(pb.ListTokensRequest(), metadata=bearer(plaintext))
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return False
    return True


async def _create(instance: Instance, admin: str, name: str) -> tuple[int, str]:
    created = await instance.stub.CreateToken(
        pb.CreateTokenRequest(name=name, owner="alice", scopes=["write"]),
        metadata=bearer(admin),
    )
    return created.token.id, created.plaintext


async def test_a_write_through_one_instance_is_seen_by_the_other(cluster: Cluster) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()
    assert (a.data_dir / "bootstrap-token").exists()
    assert not (b.data_dir / "bootstrap-token").exists()

    _, plaintext = await _create(a, admin, "shared")
    assert await _active(b, plaintext), "created through A authenticates through B at once"
    for _ in range(20):  # A keeps it in memory now
        assert await _active(a, plaintext)

    token_id, revoked = await _create(a, admin, "to-revoke")
    assert await _active(a, revoked)
    await b.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
    start = time.perf_counter()
    while await _active(a, revoked):
        assert time.perf_counter() - start < 1.0, "A still accepts a token revoked through B"
    print(f"revoked through B, refused by A after {(time.perf_counter() - start) * 1000:.1f} ms")


async def test_a_lost_notification_connection_never_serves_a_revoked_token(
    cluster: Cluster,
) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()
    tokens = [await _create(b, admin, f"t{n}") for n in range(6)]
    for _, plaintext in tokens:
        assert await _active(a, plaintext)  # in A's cache from here on

    (ended,) = await cluster.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        f"{LISTENER_APPLICATION} {a.serving.process.pid}",
    )
    assert ended[0] is True
    # Until A hears of the loss (the end of its connection takes a moment to
    # arrive), section 5's bound covers it, as test_a_frozen_listener_… checks;
    # from then on, until it listens again, A must answer nothing from memory.
    async with asyncio.timeout(10):
        await a.serving.hear("lost the database's change notifications")
    start = time.perf_counter()
    for token_id, plaintext in tokens:
        await b.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
        assert not await _active(a, plaintext), "A served a revoked token from memory"
        await asyncio.sleep(0.1)  # spread over the reconnection
    print(f"{len(tokens)} revocations over {time.perf_counter() - start:.2f} s of reconnecting")
    # A listens again (a new listener for its pid) and keeps serving.
    for _ in range(100):
        listeners = await cluster.fetch(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1",
            f"{LISTENER_APPLICATION} {a.serving.process.pid}",
        )
        if listeners:
            break
        await asyncio.sleep(0.05)
    assert listeners, "A did not listen again"
    _, fresh = await _create(a, admin, "after")
    assert await _active(b, fresh)


async def test_a_frozen_listener_never_serves_a_revocation_past_the_bound(
    cluster: Cluster,
) -> None:
    """A listener that goes silent (its backend stopped dead: no error, no close) must
    not keep A answering from memory: a revocation through B is refused by A on its
    first request a bound after B acknowledged it, in every round."""
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()
    for round_ in range(4):
        token_id, plaintext = await _create(b, admin, f"frozen-{round_}")
        assert await _active(a, plaintext)
        assert await _active(a, plaintext)  # from A's memory now
        listeners = await cluster.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            f"{LISTENER_APPLICATION} {a.serving.process.pid}",
        )
        assert listeners, "A listens"
        frozen = [row[0] for row in listeners]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            await b.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
            acknowledged = time.monotonic()
            await asyncio.sleep(BOUND - (time.monotonic() - acknowledged))
            assert not await _active(a, plaintext), f"round {round_}: A served a revoked token"
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
    _, fresh = await _create(a, admin, "after")
    assert await _active(b, fresh)


async def test_three_instances_started_at_once_bootstrap_once(cluster: Cluster) -> None:
    await asyncio.gather(*(cluster.start(name) for name in ("a", "b", "c")))
    written = list(cluster.root.glob("*/bootstrap-token"))
    assert len(written) == 1
    rows = await cluster.fetch("SELECT owner, name FROM tokens")
    assert [tuple(row) for row in rows] == [("admin", "bootstrap")]
    versions = await cluster.fetch("SELECT version FROM tokengrpc_schema")
    assert len(versions) == 1
    admin = cluster.admin()
    for instance in cluster.instances:
        assert await _active(instance, admin)


async def test_kill_9_during_creates_loses_no_acknowledged_one(cluster: Cluster) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()
    acknowledged: list[int] = []
    enough = asyncio.Event()

    async def creator(worker: int) -> None:
        for n in range(1000):
            try:
                token_id, _ = await _create(a, admin, f"w{worker}-{n}")
            except grpc.aio.AioRpcError:
                return  # A is gone
            acknowledged.append(token_id)
            if len(acknowledged) >= 100:
                enough.set()

    burst = [asyncio.create_task(creator(worker)) for worker in range(8)]
    await asyncio.wait_for(enough.wait(), 60)
    a.serving.process.send_signal(signal.SIGKILL)
    await asyncio.gather(*burst)
    await a.serving.process.wait()
    print(f"{len(acknowledged)} creates acknowledged before kill -9")

    stored = {row[0] for row in await cluster.fetch("SELECT id FROM tokens")}
    assert set(acknowledged) <= stored
    events = {row[0] for row in await cluster.fetch("SELECT token_id FROM token_events")}
    assert set(acknowledged) <= events
    _, plaintext = await _create(b, admin, "b-still-serves")
    assert await _active(b, plaintext)


async def test_kept_counts_stay_exact_under_creates_and_revocations_on_both(
    cluster: Cluster,
) -> None:
    """Two instances create and revoke one owner's tokens at once: the kept
    per-owner counts (and the ``total_size`` a listing reports) equal COUNT(*)."""
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()

    async def worker(n: int) -> None:
        instance = (a, b)[n % 2]
        for round_ in range(12):
            owner = ("alice", "bob")[(n + round_) % 2]
            created = await instance.stub.CreateToken(
                pb.CreateTokenRequest(name=f"w{n}-{round_}", owner=owner, scopes=["write"]),
                metadata=bearer(admin),
            )
            if round_ % 3:
                # Through the other instance, racing the creations there.
                await (b, a)[n % 2].stub.RevokeToken(
                    pb.RevokeTokenRequest(id=created.token.id), metadata=bearer(admin)
                )

    await asyncio.gather(*(worker(n) for n in range(8)))
    counted = await cluster.fetch(
        "SELECT owner, count(*), count(*) - count(revoke_time) FROM tokens GROUP BY owner"
    )
    kept = await cluster.fetch("SELECT owner, total, live FROM token_counts")
    assert sorted(map(tuple, kept)) == sorted(map(tuple, counted))
    expected = {row[0]: (row[1], row[2]) for row in counted}
    assert expected["alice"] == (48, 16)

    async def totals(instance: Instance) -> tuple[int, int]:
        found = []
        for show_revoked in (True, False):
            listing = await instance.stub.ListTokens(
                pb.ListTokensRequest(owner="alice", page=1, show_revoked=show_revoked),
                metadata=bearer(admin),
            )
            found.append(listing.total_size)
        return found[0], found[1]

    for instance in (a, b):
        assert await totals(instance) == expected["alice"]


async def test_usage_counts_of_both_instances_add_up(cluster: Cluster) -> None:
    a = await cluster.start("a")
    b = await cluster.start("b")
    admin = cluster.admin()
    token_id, plaintext = await _create(a, admin, "counted")
    uses = {a: 37, b: 23}
    await asyncio.gather(
        *(_active(instance, plaintext) for instance, n in uses.items() for _ in range(n))
    )
    assert [(await instance.stop())[0] for instance in (a, b)] == [0, 0]
    (row,) = await cluster.fetch("SELECT usage_count FROM tokens WHERE id = $1", token_id)
    assert row[0] == sum(uses.values())


async def _active_on_new_connection(address: str, plaintext: str) -> bool:
    """As :func:`_active`, over a connection of its own: the kernel hands each new
    connection to one of the ``--workers`` processes sharing the port."""
    async with grpc.aio.insecure_channel(
        address, options=(("grpc.use_local_subchannel_pool", 1),)
    ) as channel:
        try:
            await tokens_pb2_grpc.TokenServiceStub(channel).ListTokens(
                pb.ListTokensRequest(), metadata=bearer(plaintext)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            return False
    return True


async def test_workers_of_one_serve_share_the_database(cluster: Cluster) -> None:
    a = await cluster.start("a", "--workers", "2")
    admin = cluster.admin()
    # Each process listens for changes on a connection of its own.
    listeners = await cluster.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
        f"{LISTENER_APPLICATION} %",
    )
    assert len(listeners) == 2, listeners
    address = a.serving.address("grpc")
    token_id, plaintext = await _create(a, admin, "shared by workers")
    sent = 40  # over 40 connections: all on one process is a 1 in 2**39 chance
    assert all(
        await asyncio.gather(*(_active_on_new_connection(address, plaintext) for _ in range(sent)))
    )
    used = sent
    await a.stub.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
    start = time.perf_counter()
    while True:  # the other process learns of it by notification: within the 1 s bound
        served = sum(
            await asyncio.gather(
                *(_active_on_new_connection(address, plaintext) for _ in range(sent))
            )
        )
        used += served
        if not served:
            break
        assert time.perf_counter() - start < 1.0, "a worker still serves a revoked token"
    print(f"revoked through one worker, refused by all after {time.perf_counter() - start:.3f} s")
    code, output = await a.stop()
    assert code == 0, output
    (row,) = await cluster.fetch("SELECT usage_count FROM tokens WHERE id = $1", token_id)
    assert row[0] == used, "every worker's uses were written before it stopped"


async def test_another_key_than_the_store_s_is_refused(cluster: Cluster) -> None:
    a = await cluster.start("a")
    admin = cluster.admin()
    await a.stub.CreateToken(
        pb.CreateTokenRequest(name="ci", service_token=True), metadata=bearer(admin)
    )
    other = cluster.env(TOKENGRPC_SECRET_KEY=_key())
    served = run_cli("serve", "--data-dir", str(cluster.root / "b"), "--grpc-listen",
                     "127.0.0.1:0", "--no-http", env=other)  # fmt: skip
    assert served.returncode != 0
    assert "TOKENGRPC_SECRET_KEY" in served.stderr
    assert "listening" not in served.stdout


async def test_an_unreachable_database_ends_serve_quickly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://tokengrpc:Pw-Unreachable-5@127.0.0.1:{port}/tokens"
    start = time.perf_counter()
    served = run_cli("serve", "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
                     "--no-http", env=clean_env(TOKENGRPC_DATABASE_URL=url))  # fmt: skip
    took = time.perf_counter() - start
    print(f"exit {served.returncode} after {took:.2f} s: {served.stderr.strip()}")
    assert served.returncode != 0
    assert took < 10
    assert "cannot use the database" in served.stderr
    assert "Pw-Unreachable-5" not in served.stderr + served.stdout


async def test_a_wrong_password_is_an_error_without_the_password(
    database_url: str, tmp_path: Path
) -> None:
    wrong = database_url.replace(PASSWORD, "Not-The-Password-8")
    assert wrong != database_url or "TOKENGRPC_TEST_DATABASE_URL" in os.environ
    for args in (["serve", "--grpc-listen", "127.0.0.1:0", "--no-http"], ["migrate"],
                 ["token", "list"]):  # fmt: skip
        done = run_cli(*args, "--data-dir", str(tmp_path), "--database", wrong)
        print(done.stderr.strip())
        assert done.returncode != 0
        assert "Not-The-Password-8" not in done.stderr + done.stdout
        assert PASSWORD not in done.stderr + done.stdout
        assert "password" in done.stderr


async def test_migrate_prints_the_schema_version(database_url: str, tmp_path: Path) -> None:
    from tokengrpc.store.postgres.migrations import LATEST

    for _ in range(2):
        done = run_cli("migrate", "--data-dir", str(tmp_path), "--database", database_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"schema version {LATEST}"
        assert PASSWORD not in done.stdout + done.stderr


async def test_token_commands_work_on_the_shared_database(cluster: Cluster) -> None:
    a = await cluster.start("a")
    env = cluster.env()
    data = str(cluster.root / "operator")
    created = run_cli("token", "create", "--data-dir", data, "--name", "from-cli",
                      "--owner", "alice", "--scope", "write", env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip()
    assert await _active(a, plaintext), "a token made by the command works at once"
    listed = run_cli("token", "list", "--data-dir", data, "--owner", "alice", env=env)
    assert "from-cli" in listed.stdout
    token_id = plaintext.partition("|")[0]
    revoked = run_cli("token", "revoke", "--data-dir", data, token_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    start = time.perf_counter()
    while await _active(a, plaintext):
        assert time.perf_counter() - start < 1.0
    assert not (cluster.root / "operator" / "bootstrap-token").exists()


@pytest.fixture
async def own_server() -> AsyncIterator[PgServer]:
    """A server of the test's own, to stop and start under running instances."""
    server = await asyncio.to_thread(start_server)
    try:
        yield server
    finally:
        await asyncio.to_thread(remove_server, server)


async def test_a_stopped_database_is_unavailable_then_resumes(
    own_server: PgServer, tmp_path: Path
) -> None:
    cluster = Cluster(await asyncio.to_thread(own_server.new_database), tmp_path)
    try:
        a = await cluster.start("a")
        admin = cluster.admin()
        acknowledged = [await _create(a, admin, f"before-{n}") for n in range(5)]
        async with httpx.AsyncClient(base_url=a.http, timeout=10) as client:
            assert (await client.get("/readyz")).status_code == 200
            await asyncio.to_thread(own_server.stop)

            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _create(a, admin, "while-down")
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert PASSWORD not in (raised.value.details() or "")
            response = await client.get("/api/token", headers={"Authorization": f"Bearer {admin}"})
            assert response.status_code in (401, 503)  # a cached token may get as far as listing
            start = time.perf_counter()
            while (await client.get("/readyz")).status_code != 503:
                assert time.perf_counter() - start < 5, "/readyz still says ready"
                await asyncio.sleep(0.1)

            await asyncio.to_thread(own_server.start)
            start = time.perf_counter()
            while (await client.get("/readyz")).status_code != 200:
                assert time.perf_counter() - start < 10, "/readyz did not come back"
                await asyncio.sleep(0.1)
            print(f"ready again {time.perf_counter() - start:.2f} s after the database")
        acknowledged.append(await _create(a, admin, "after"))
        stored = {row[0] for row in await cluster.fetch("SELECT id FROM tokens")}
        assert {token_id for token_id, _ in acknowledged} <= stored
        for _, plaintext in acknowledged:
            assert await _active(a, plaintext)
        code, output = await a.stop()
        assert code == 0
        assert PASSWORD not in output
    finally:
        await cluster.close()
