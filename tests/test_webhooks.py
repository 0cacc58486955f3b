"""Webhooks (CONTRACT section 13): real ``serve`` processes POST to a real receiver.

The receiver is an ASGI app under uvicorn in the test's loop, recording every
request and answering as the test says (200, a failure, or nothing at all).
Signatures are checked with the Standard Webhooks reference library. The
sender's times run at a tenth (``TOKENGRPC_WEBHOOK_TIME_SCALE``) unless a
test needs the real 10 s answer timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from standardwebhooks import Webhook

from tests.asgiserver import AsgiServer, Receive, Scope, Send
from tests.helpers import bearer
from tests.processes import Serving, clean_env, run_cli, serve
from tokengrpc.clock import now_us
from tokengrpc.metrics import Metrics
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()
FAST = "0.1"
OLDEST = "tokengrpc_webhook_oldest_undelivered_seconds "


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered (0: nothing, it hung).
    status: int = 0

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def document(self) -> Any:
        return json.loads(self.body)

    @property
    def token_id(self) -> int:
        return int(self.document["data"]["event"]["tokenId"])


@dataclass
class Receiver:
    """Records every POST; ``answer`` decides each status (None: hang until the test ends)."""

    answer: Callable[[Received], int | None] = lambda _: 200
    got: list[Received] = field(default_factory=list)
    more: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        received = Received(headers, body)
        self.got.append(received)
        self.more.set()
        status = self.answer(received)
        if status is None:
            await self.released.wait()
            return
        received.status = status
        self.more.set()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def delivered(self) -> list[Received]:
        return [r for r in self.got if 200 <= r.status < 300]

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not done():
                self.more.clear()
                await self.more.wait()


@contextlib.asynccontextmanager
async def receiving(
    answer: Callable[[Received], int | None] = lambda _: 200,
) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(answer)
    server = await AsgiServer.start(receiver)
    try:
        yield receiver, f"http://127.0.0.1:{server.port}/hooks?key=receiver-secret"
    finally:
        receiver.released.set()
        await server.stop()


def hook_env(url: str, scale: str = FAST, **extra: str) -> dict[str, str]:
    return clean_env(
        TOKENGRPC_WEBHOOK_URLS=url,
        TOKENGRPC_WEBHOOK_SECRET=SECRET,
        TOKENGRPC_WEBHOOK_TIME_SCALE=scale,
        TOKENGRPC_SECRET_KEY=base64.b64encode(b"k" * 32).decode(),
        **extra,
    )


async def start(data_dir: Path, env: dict[str, str]) -> Serving:
    return await serve(
        "--data-dir", str(data_dir), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--no-access-log", env=env, until="http",
    )  # fmt: skip


def stub(serving: Serving) -> tokens_pb2_grpc.TokenServiceAsyncStub:
    return tokens_pb2_grpc.TokenServiceStub(grpc.aio.insecure_channel(serving.address("grpc")))


def admin_of(root: Path) -> str:
    (path,) = root.glob("**/bootstrap-token")
    return path.read_text().strip()


def verified(received: Received) -> Any:
    """The body, once the reference library says our signature holds."""
    return Webhook(SECRET).verify(received.body, received.headers)


async def create(tokens: tokens_pb2_grpc.TokenServiceAsyncStub, admin: str, name: str) -> int:
    made = await tokens.CreateToken(
        pb.CreateTokenRequest(name=name, owner="alice", scopes=["write"]), metadata=bearer(admin)
    )
    return made.token.id


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_every_event_is_posted_signed_as_v1_shows_it(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("database_url") if engine == "postgres" else ""
    async with receiving() as (receiver, hook):
        env = hook_env(hook) | ({"TOKENGRPC_DATABASE_URL": url} if url else {})
        serving = await start(tmp_path / "data", env)
        try:
            admin = admin_of(tmp_path)
            tokens = stub(serving)
            made = await tokens.CreateToken(
                pb.CreateTokenRequest(name="deploy", service_token=True, scopes=["read"]),
                metadata=bearer(admin),
            )
            token_id = made.token.id
            await tokens.UpdateToken(
                pb.UpdateTokenRequest(
                    token=pb.Token(id=token_id, name="deploy-2"),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
                metadata=bearer(admin),
            )
            rotated = await tokens.RotateToken(
                pb.RotateTokenRequest(id=token_id), metadata=bearer(admin)
            )
            await tokens.GetTokenValue(pb.GetTokenValueRequest(id=token_id), metadata=bearer(admin))
            await tokens.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=bearer(admin))
            # The bootstrap token's creation, then this token's five events.
            await receiver.until(lambda: len(receiver.delivered()) == 6)
            async with httpx.AsyncClient(base_url="http://" + serving.address("http")) as http:
                auth = {"authorization": f"Bearer {admin}"}
                events = (await http.get("/v1/events", headers=auth)).json()["events"]
                shown = (await http.get(f"/v1/tokens/{token_id}", headers=auth)).json()
        finally:
            await serving.stop()

    documents = [verified(r) for r in receiver.delivered()]
    assert [d["type"] for d in documents] == [
        "token.created", "token.created", "token.updated", "token.rotated",
        "token.value_read", "token.revoked",
    ]  # fmt: skip
    # Each event as /v1 shows it, oldest first; the token as it was right after.
    assert [d["data"]["event"] for d in documents] == events[::-1]
    assert documents[-1]["data"]["token"] == shown
    assert documents[2]["data"]["token"]["name"] == "deploy-2"
    assert documents[1]["data"]["token"]["status"] == "TOKEN_STATUS_ACTIVE"
    assert all(d["timestamp"] == d["data"]["event"]["eventTime"] for d in documents)
    for received in receiver.got:
        assert received.headers["content-type"] == "application/json"
        for plaintext in (admin, made.plaintext, rotated.plaintext):
            assert plaintext.partition("|")[2].encode() not in received.body
    assert len({r.id for r in receiver.got}) == 6


async def test_a_failing_url_is_retried_with_the_same_id_in_order_per_token(
    tmp_path: Path,
) -> None:
    failing_token: list[int] = []
    failures: list[Received] = []

    def answer(received: Received) -> int:
        # The first token's events fail three times over, then get through.
        if received.token_id in failing_token and len(failures) < 3:
            failures.append(received)
            return 500
        return 200

    async with receiving(answer) as (receiver, hook):
        serving = await start(tmp_path / "data", hook_env(hook))
        try:
            admin = admin_of(tmp_path)
            tokens = stub(serving)
            await receiver.until(lambda: len(receiver.delivered()) == 1)  # the bootstrap token
            first = await create(tokens, admin, "first")
            failing_token.append(first)
            await tokens.RevokeToken(pb.RevokeTokenRequest(id=first), metadata=bearer(admin))
            await receiver.until(lambda: len(failures) >= 1)
            second = await create(tokens, admin, "second")
            await receiver.until(lambda: len(receiver.delivered()) == 4)
            scraped = await _scrape_until(serving, 'deliveries_total{result="delivered"} 4.0')
        finally:
            _, output = await serving.stop()

    # The failing event came back under the same id, and held back only its own token.
    assert len(failures) == 3
    assert {r.id for r in failures} == {failures[0].id}
    delivered = receiver.delivered()[1:]
    assert [(r.token_id, r.document["type"]) for r in delivered] == [
        (second, "token.created"), (first, "token.created"), (first, "token.revoked"),
    ]  # fmt: skip
    assert delivered[1].id == failures[0].id
    first_tries = [r for r in receiver.got if r.token_id == first]
    assert [r.document["type"] for r in first_tries] == ["token.created"] * 4 + ["token.revoked"]
    assert 'tokengrpc_webhook_deliveries_total{result="failed"} 3.0' in scraped
    assert 'tokengrpc_webhook_deliveries_total{result="delivered"} 4.0' in scraped
    assert "\ntokengrpc_webhook_oldest_undelivered_seconds " in scraped
    # One line when the URL began to fail and one when it recovered, never the
    # URL's path or query (a receiver's own secret may be there).
    assert output.count("webhook deliveries to http://127.0.0.1") == 2, output
    assert "receiver-secret" not in output


async def test_a_hanging_url_slows_no_request(tmp_path: Path) -> None:
    async with receiving(lambda _: None) as (receiver, hook):
        # Real times: the sender waits 10 s for an answer.
        serving = await start(tmp_path / "data", hook_env(hook, scale="1"))
        try:
            admin = admin_of(tmp_path)
            tokens = stub(serving)
            await receiver.until(lambda: len(receiver.got) == 1)  # held open by the receiver
            async with asyncio.timeout(5):  # well under the 10 s the sender waits
                for n in range(10):
                    await create(tokens, admin, f"token-{n}")
        finally:
            code, _ = await serving.stop()
    assert code == 0


async def test_no_answer_in_time_is_a_failure_tried_again(tmp_path: Path) -> None:
    async with receiving(lambda r: None if r.id not in tried else 200) as (receiver, hook):
        tried: set[str] = set()
        serving = await start(tmp_path / "data", hook_env(hook))
        try:
            # The bootstrap token's creation: no answer, then a second try, same id.
            await receiver.until(lambda: len(receiver.got) == 1)
            tried.add(receiver.got[0].id)
            await receiver.until(lambda: len(receiver.delivered()) == 1)
        finally:
            await serving.stop()
    assert [r.id for r in receiver.got] == [receiver.got[0].id] * 2


async def test_an_event_survives_kill_9_before_its_delivery(tmp_path: Path) -> None:
    up: list[bool] = []
    async with receiving(lambda _: 200 if up else 503) as (receiver, hook):
        serving = await start(tmp_path / "data", hook_env(hook))
        admin = admin_of(tmp_path)
        token_id = await create(stub(serving), admin, "survivor")
        await receiver.until(lambda: any(r.token_id == token_id for r in receiver.got))
        serving.process.kill()
        await serving.process.wait()
        up.append(True)
        serving = await start(tmp_path / "data", hook_env(hook))
        try:
            await receiver.until(lambda: any(r.token_id == token_id for r in receiver.delivered()))
        finally:
            await serving.stop()
    tried = {r.id for r in receiver.got if r.token_id == token_id}
    assert len(tried) == 1, "every try of one event has one id"


async def test_two_postgres_instances_send_each_event_once(
    database_url: str, tmp_path: Path
) -> None:
    async with receiving() as (receiver, hook):
        env = hook_env(hook, TOKENGRPC_DATABASE_URL=database_url)
        a = await start(tmp_path / "a", env)
        b = await start(tmp_path / "b", env)
        try:
            admin = admin_of(tmp_path)
            made = await asyncio.gather(
                *(create(stub(x), admin, f"t{n}") for n, x in enumerate([a, b] * 10))
            )

            async def queued() -> int:
                connection = await asyncpg.connect(database_url)
                try:
                    return int(await connection.fetchval("SELECT count(*) FROM webhook_outbox"))
                finally:
                    await connection.close()

            await receiver.until(lambda: len(receiver.delivered()) >= 21)
        finally:
            # Stopped, neither sends again: what they sent is all there will be.
            await a.stop()
            await b.stop()
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM webhook_outbox") == 0
    finally:
        await connection.close()
    ids = [r.id for r in receiver.got]
    assert len(ids) == len(set(ids)) == 21
    assert {r.token_id for r in receiver.got} >= set(made)


async def _scrape_until(serving: Serving, text: str) -> str:
    """/metrics once it holds ``text`` (the sender counts a try once the store has its outcome)."""
    async with httpx.AsyncClient(base_url="http://" + serving.address("http")) as http:
        async with asyncio.timeout(10):
            # Another process's counter: no event of ours tells when it moves.
            while text not in (scraped := (await http.get("/metrics")).text):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    return scraped


def test_a_webhook_url_needs_the_secret(tmp_path: Path) -> None:
    env = clean_env(TOKENGRPC_WEBHOOK_URLS="http://127.0.0.1:9/hook")
    done = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--grpc-listen", "127.0.0.1:0",
                   "--no-http", env=env)  # fmt: skip
    assert done.returncode != 0
    assert "TOKENGRPC_WEBHOOK_SECRET" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOKENGRPC_WEBHOOK_URLS", "ftp://user:hunter2@example.com/x"),
        ("TOKENGRPC_WEBHOOK_SECRET", "hunter2"),
        ("TOKENGRPC_WEBHOOK_SECRET", "whsec_hunter2!"),
    ],
)
def test_a_bad_webhook_setting_is_refused_without_repeating_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = clean_env(**{variable: value})
    done = run_cli("serve", "--data-dir", str(tmp_path / "d"), env=env)
    assert done.returncode != 0
    assert variable in done.stderr
    assert "hunter2" not in done.stderr


async def test_every_url_given_gets_every_event(tmp_path: Path) -> None:
    async with receiving() as (one, first), receiving() as (other, second):
        env = clean_env(TOKENGRPC_WEBHOOK_SECRET=SECRET, TOKENGRPC_WEBHOOK_TIME_SCALE=FAST)
        serving = await serve(
            "--data-dir", str(tmp_path / "data"), "--grpc-listen", "127.0.0.1:0", "--no-http",
            "--webhook-url", first, "--webhook-url", second, env=env,
        )  # fmt: skip
        try:
            await one.until(lambda: len(one.delivered()) == 1)
            await other.until(lambda: len(other.delivered()) == 1)
        finally:
            await serving.stop()
    assert one.got[0].body == other.got[0].body


def test_the_oldest_undelivered_event_s_age_is_a_gauge() -> None:
    metrics = Metrics()

    def age() -> float:
        text = metrics.scrape()[0].decode()
        (line,) = [x for x in text.splitlines() if x.startswith(OLDEST)]
        return float(line.split()[1])

    assert age() == 0
    metrics.webhook_oldest(now_us() - 90_000_000)  # queued a minute and a half ago
    assert 90 <= age() < 3600
    metrics.webhook_oldest(None)
    assert age() == 0
