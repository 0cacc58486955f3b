"""Forward auth (contract section 11) through the real proxies, configured as
docs/forward-auth.md shows: nginx (``auth_request``), Caddy (``forward_auth``),
Envoy (``ext_authz`` with ``http_service``), and Traefik by the request shape
its ForwardAuth documents (no package ships Traefik here).

One service per module (``tests/forwardproxies.py`` runs it on a loop of its
own) and one of each proxy; every test makes its own tokens.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.forwardproxies import (
    DOC_TOKENGRPC,
    DOCS,
    NGINX,
    STARTERS,
    BackgroundService,
    Proxy,
    background_service,
    echo_upstream,
    free_address,
)
from tests.helpers import bearer
from tokengrpc.v1 import tokens_pb2 as pb

Headers = Sequence[tuple[str, str]]
UNAUTHENTICATED_BODY = {"error": "Unauthenticated."}
#: Where Traefik's client seems to come from (Traefik writes it in X-Forwarded-For).
TRAEFIK_CLIENT = "203.0.113.7"


@dataclass
class Outcome:
    """What the client got, and the headers the app received (None: it was not reached)."""

    response: httpx.Response
    upstream: list[tuple[str, str]] | None

    @property
    def status(self) -> int:
        return self.response.status_code

    def values(self, name: str) -> list[str]:
        assert self.upstream is not None, (self.status, self.response.text)
        return [value for key, value in self.upstream if key == name]


class Front:
    """A way in: a real proxy, or Traefik's request shape sent to /auth/check."""

    kind: str

    def send(self, method: str, path: str, headers: Headers) -> Outcome:
        raise NotImplementedError


class ProxyFront(Front):
    def __init__(self, proxy: Proxy) -> None:
        self.kind = proxy.name
        self._client = httpx.Client(base_url=proxy.base_url, timeout=30)

    def send(self, method: str, path: str, headers: Headers) -> Outcome:
        response = self._client.request(method, path, headers=list(headers))
        reached = response.status_code == 200 and response.headers.get("content-type") == (
            "application/json"
        )
        upstream = None
        if reached and method != "HEAD":
            upstream = [(k.lower(), v) for k, v in response.json()["headers"]]
        return Outcome(response, upstream)

    def close(self) -> None:
        self._client.close()


class TraefikFront(Front):
    """Traefik's ForwardAuth, per its documentation, with docs/forward-auth/traefik.toml:
    a GET to the middleware's ``address`` carrying the client's headers and
    X-Forwarded-Method/-Proto/-Host/-Uri/-For (the client's address: with
    ``trustForwardHeader`` off, a client's own X-Forwarded-For is dropped). On
    200 the request goes on without its headers matching
    ``authResponseHeadersRegex``, plus the answer's that match, and without
    ``Authorization`` (the ``no-authorization`` middleware)."""

    def __init__(self, tokengrpc: str, mode: str) -> None:
        self.kind = f"traefik-{mode}"
        self._tokengrpc = tokengrpc
        self._config = tomllib.loads((DOCS / "traefik.toml").read_text())["http"]
        self._client = httpx.Client(timeout=30)

    def send(self, method: str, path: str, headers: Headers) -> Outcome:
        router = "deploy" if path.startswith("/deploy") else "app"
        names = self._config["routers"][router]["middlewares"]
        forward = self._config["middlewares"][names[0]]["forwardAuth"]
        matching = re.compile(forward["authResponseHeadersRegex"], re.IGNORECASE)
        client = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
        shape = [
            *client,
            ("X-Forwarded-Method", method),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "app.example"),
            ("X-Forwarded-Uri", path),
            ("X-Forwarded-For", TRAEFIK_CLIENT),
        ]
        address = forward["address"].replace(DOC_TOKENGRPC, self._tokengrpc)
        answer = self._client.get(address, headers=shape)
        if answer.status_code != 200:
            return Outcome(answer, None)
        assert names[1] == "no-authorization"
        removed = self._config["middlewares"][names[1]]["headers"]["customRequestHeaders"]
        kept = [
            (k.lower(), v)
            for k, v in client
            if not matching.match(k) and removed.get(k.title()) != ""
        ]
        copied = [(k.lower(), v) for k, v in answer.headers.items() if matching.match(k)]
        return Outcome(answer, kept + copied)

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundService]:
    with background_service(tmp_path_factory.mktemp("forward")) as live:
        yield live


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with echo_upstream() as address:
        yield address


FRONTS = ("nginx", "caddy", "envoy", "traefik-in-process", "traefik-network")


def _proxy(kind: str, folder: Path, tokengrpc: str, app: str) -> Proxy:
    if kind == "nginx" and shutil.which(NGINX) is None:
        pytest.skip(
            f"{NGINX} is not installed (apt-get install nginx-light): the nginx case needs it"
        )
    return STARTERS[kind](folder, tokengrpc=tokengrpc, app=app)


@pytest.fixture(scope="module", params=FRONTS)
def front(
    request: pytest.FixtureRequest,
    background: BackgroundService,
    upstream: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Front]:
    kind: str = request.param
    if kind.startswith("traefik-"):
        traefik = TraefikFront(background.http(kind.removeprefix("traefik-")), kind)
        yield traefik
        traefik.close()
        return
    proxy = _proxy(kind, tmp_path_factory.mktemp(kind), background.http(), upstream)
    live = ProxyFront(proxy)
    try:
        yield live
    finally:
        live.close()
        proxy.stop()


@pytest.fixture(scope="module", params=FRONTS)
def dead_front(
    request: pytest.FixtureRequest,
    background: BackgroundService,
    upstream: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Front]:
    """A proxy whose tokengrpc is not running (nothing listens at its address);
    for Traefik's shape, ``tokengrpc gateway`` in front of a service that is not."""
    kind: str = request.param
    if kind.startswith("traefik-"):
        traefik = TraefikFront(background.stranded, kind)
        yield traefik
        traefik.close()
        return
    proxy = _proxy(kind, tmp_path_factory.mktemp(f"{kind}-dead"), free_address(), upstream)
    live = ProxyFront(proxy)
    try:
        yield live
    finally:
        live.close()
        proxy.stop()


class Tokens:
    """Creating and changing tokens on the background service, from a test."""

    def __init__(self, background: BackgroundService) -> None:
        self._background = background
        self.service = background.service

    def create(self, name: str, **fields: Any) -> tuple[int, str]:
        return self._background.run(self.service.create(name, **fields))

    def call(self, method: str, message: Any) -> Any:
        async def call() -> Any:
            stub = self.service.stub
            return await getattr(stub, method)(message, metadata=bearer(self.service.admin_token))

        return self._background.run(call())

    def expiring(self, name: str, seconds: float) -> str:
        """A personal token that expires ``seconds`` after the service's now."""
        at = timestamp_pb2.Timestamp()
        at.FromMicroseconds(self.service.clock() + round(seconds * 1e6))
        created = self.call(
            "CreateToken", pb.CreateTokenRequest(name=name, owner="alice", expire_time=at)
        )
        self.service.plaintexts.append(created.plaintext)
        return str(created.plaintext)

    def usage(self, token_id: int) -> pb.Token:
        self._background.run(self.service.core.usage.flush())
        answer: pb.GetTokenResponse = self.call("GetToken", pb.GetTokenRequest(id=token_id))
        return answer.token


@pytest.fixture
def tokens(background: BackgroundService) -> Tokens:
    return Tokens(background)


def auth(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def assert_unauthenticated(front: Front, outcome: Outcome, what: str) -> None:
    assert outcome.status == 401, (front.kind, what, outcome.status)
    assert outcome.upstream is None
    assert outcome.response.headers.get("www-authenticate") == "Bearer", (front.kind, what)
    if front.kind != "nginx":  # nginx keeps only the status and WWW-Authenticate
        assert outcome.response.json() == UNAUTHENTICATED_BODY, (front.kind, what)


def test_each_kind_of_token_passes_with_its_identity_and_without_its_secret(
    front: Front, tokens: Tokens
) -> None:
    alice_id, alice = tokens.create("CI deploy, % done é", owner="alice", scopes=["read", "50%"])
    billing = f"billing via {front.kind}"  # a service token's name is unique
    svc_id, svc = tokens.create(billing, service_token=True, scopes=["read", "write"])
    bare_id, bare = tokens.create("no scopes", owner="bob")
    forged = [
        ("X-Token-Owner", "root"),
        ("x-token-id", "1"),
        ("X-Token-Scopes", "admin"),
        ("X-Token-Name", "root"),
    ]

    personal = front.send("GET", "/things?x=1", [auth(alice), *forged])
    assert personal.status == 200, (front.kind, personal.response.text)
    assert personal.values("x-token-id") == [str(alice_id)]
    assert personal.values("x-token-owner") == ["alice"]
    assert [unquote(v) for v in personal.values("x-token-name")] == ["CI deploy, % done é"]
    assert [unquote(s) for s in personal.values("x-token-scopes")[0].split(" ")] == ["read", "50%"]
    assert personal.values("authorization") == []

    # A service token has no owner: the header is absent, though the client sent one.
    machine = front.send("POST", "/things", [auth(svc), *forged])
    assert machine.values("x-token-id") == [str(svc_id)]
    assert machine.values("x-token-owner") == []
    assert [unquote(v) for v in machine.values("x-token-name")] == [billing]
    assert machine.values("x-token-scopes") == ["read write"]
    assert machine.values("authorization") == []

    # A token without scopes: no scopes header, whatever the client wrote.
    scopeless = front.send("GET", "/", [auth(bare), *forged])
    assert scopeless.values("x-token-id") == [str(bare_id)]
    assert scopeless.values("x-token-scopes") == []
    assert scopeless.values("x-token-owner") == ["bob"]

    for outcome in (personal, machine, scopeless):
        assert outcome.upstream is not None
        for _, value in outcome.upstream:
            for secret in (alice, svc, bare):
                assert secret.partition("|")[2] not in value
    # An allowed check counts one use, with the address it came from.
    assert tokens.usage(alice_id).usage_count == 1
    assert tokens.usage(svc_id).last_use_ip != ""


def test_every_bad_token_is_denied_the_same_way(front: Front, tokens: Tokens) -> None:
    revoked_id, revoked = tokens.create("revoked", owner="alice")
    inactive_id, inactive = tokens.create("inactive", owner="alice")
    _, elsewhere = tokens.create("elsewhere", owner="alice", allowed_ips=["10.9.9.9"])
    expired = tokens.expiring("expired", 5)
    tokens.call("RevokeToken", pb.RevokeTokenRequest(id=revoked_id))
    tokens.call(
        "UpdateToken",
        pb.UpdateTokenRequest(
            token=pb.Token(id=inactive_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
    )
    tokens.service.clock.advance(10)  # past the expiry, not sleeping until it
    _, good = tokens.create("good", owner="alice")
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    unknown = "999999|" + good.partition("|")[2]

    assert_unauthenticated(front, front.send("GET", "/", []), "no token")
    cases = {
        "malformed": "not-a-token",
        "bad checksum": tampered,
        "unknown id": unknown,
        "revoked": revoked,
        "expired": expired,
        "inactive": inactive,
        "wrong address": elsewhere,
    }
    for what, token in cases.items():
        outcome = front.send("GET", "/deploy/x", [auth(token)])
        assert_unauthenticated(front, outcome, what)
        assert token not in outcome.response.text
    odd = {
        "basic scheme": [("Authorization", f"Basic {good}")],
        "bearer without a token": [("Authorization", "Bearer")],
        "two credentials in one line": [("Authorization", f"Bearer {good},Bearer {good}")],
        # The client's own X-Forwarded-For is not its address.
        "forged address": [auth(elsewhere), ("X-Forwarded-For", "10.9.9.9")],
    }
    for what, headers in odd.items():
        assert_unauthenticated(front, front.send("GET", "/", headers), what)
    two = front.send("GET", "/", [auth(good), auth(good)])
    if front.kind == "nginx":
        assert two.status == 400  # nginx refuses two Authorization lines itself
    else:
        assert_unauthenticated(front, two, "two authorization headers")
    # The good token still passes: the denials were about the others.
    assert front.send("GET", "/", [auth(good)]).status == 200


def test_a_route_that_demands_a_scope(front: Front, tokens: Tokens) -> None:
    _, reader = tokens.create("reader", owner="alice", scopes=["read"])
    _, deployer = tokens.create("deployer", owner="alice", scopes=["read", "deploy"])
    _, admin_only = tokens.create("admin", owner="alice", scopes=["admin"])

    forbidden = front.send("GET", "/deploy/now", [auth(reader)])
    assert forbidden.status == 403, front.kind
    assert forbidden.upstream is None
    if front.kind != "nginx":
        assert forbidden.response.json() == {"error": "Forbidden."}
    # Opaque scopes are matched exactly: admin does not stand in for "deploy".
    assert front.send("GET", "/deploy/now", [auth(admin_only)]).status == 403
    allowed = front.send("GET", "/deploy/now?scope=x", [auth(deployer)])
    assert allowed.values("x-token-scopes") == ["read deploy"]
    # Other routes demand an active token and nothing more; the client's own
    # query or path never demands less.
    assert front.send("GET", "/other?scope=", [auth(reader)]).status == 200
    assert_unauthenticated(
        front, front.send("GET", "/deploy/now", []), "no token on a scoped route"
    )


def test_a_revocation_takes_effect_on_the_next_request(front: Front, tokens: Tokens) -> None:
    token_id, token = tokens.create("soon gone", owner="alice")
    assert front.send("GET", "/", [auth(token)]).status == 200
    tokens.call("RevokeToken", pb.RevokeTokenRequest(id=token_id))
    assert_unauthenticated(front, front.send("GET", "/", [auth(token)]), "revoked just now")


def test_nothing_passes_while_tokengrpc_is_stopped(dead_front: Front) -> None:
    outcome = dead_front.send("GET", "/", [auth("1|tgr_" + "a" * 46)])
    assert outcome.upstream is None
    # Each proxy's own answer when it cannot ask (docs/forward-auth.md): nginx
    # 500, Caddy 502 (its reverse proxy's), Envoy 503 (status_on_error); the
    # gateway, whose service is not running, 503.
    expected = {"nginx": 500, "caddy": 502}.get(dead_front.kind, 503)
    assert outcome.status == expected, dead_front.kind
    if dead_front.kind.startswith("traefik-"):
        assert outcome.response.json() == {"error": "Service unavailable."}


def test_the_page_shows_every_configuration_verbatim() -> None:
    """docs/forward-auth.md includes each file these tests run, so they cannot drift apart."""
    page = (DOCS.parent / "forward-auth.md").read_text()
    files = sorted(DOCS.iterdir())
    assert {path.name for path in files} == {
        "Caddyfile", "envoy.yaml", "ingress-nginx.yaml", "nginx.conf", "traefik.toml",
    }  # fmt: skip
    for path in files:
        assert f"\n{path.read_text()}```\n" in page, path.name
