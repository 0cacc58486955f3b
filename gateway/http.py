"""The few HTTP pieces the gateway needs, straight on ASGI.

A request reads its body at most once and never past the limit; a response
is bytes plus headers. Nothing here knows about tokens.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1024 * 1024  # 1 MiB
#: Compact UTF-8 JSON, built once rather than per response as ``json.dumps`` does.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class BodyTooLarge(Exception):
    """More than MAX_BODY bytes were sent."""


class BadBody(Exception):
    """The body is not JSON, or not a JSON object where one is required."""


@dataclass(frozen=True, slots=True)
class Trust:
    """Which peers may tell us the real client (X-Forwarded-*)."""

    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    #: Answers by peer: the same few peers connect again and again, and
    #: parsing an address costs microseconds.
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, ranges: Iterable[str]) -> Trust:
        return cls(tuple(ipaddress.ip_network(r, strict=False) for r in ranges))

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return True  # a unix socket: a local process
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= 1024:
                self._known.clear()
            known = self._known[host] = self._check(host)
        return known

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.proxies)


@dataclass(slots=True)
class Request:
    method: str
    #: Still percent-encoded, so that %2F can be told from '/'.
    raw_path: str
    query_string: str
    headers: dict[str, str]
    client_host: str | None
    scheme: str
    host: str
    receive: Receive
    _body: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive, trust: Trust) -> Request:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        client = scope.get("client")
        peer = client[0] if client else None
        scheme = scope.get("scheme", "http")
        host = headers.get("host", "localhost")
        if trust.trusts(peer):
            # Behind a trusted proxy, the first hop it names is the client.
            forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
            peer = forwarded or peer
            scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scheme
            host = headers.get("x-forwarded-host", "").split(",")[0].strip() or host
        raw = scope.get("raw_path") or scope["path"].encode()
        return cls(
            method=scope["method"],
            raw_path=raw.decode("latin-1").split("?", 1)[0],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client_host=peer,
            scheme=scheme,
            host=host,
            receive=receive,
        )

    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)

    async def body(self) -> bytes:
        if self._body is not None:
            return self._body
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body

    async def json(self, *, allow_empty: bool = False) -> Any:
        raw = await self.body()
        if not raw.strip() and allow_empty:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadBody(f"the body is not valid JSON: {error}") from None

    async def json_object(self, *, allow_empty: bool = False) -> dict[str, Any]:
        value = await self.json(allow_empty=allow_empty)
        if value is None and allow_empty:
            return {}
        if not isinstance(value, dict):
            raise BadBody("the body must be a JSON object")
        return value

    async def form(self) -> dict[str, list[str]]:
        raw = await self.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody("the form is not UTF-8") from None
        found: dict[str, list[str]] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            found.setdefault(key, []).append(value)
        return found


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    status: int,
    content: Any,
    *,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Response:
    body = _ENCODER.encode(content).encode()
    return Response(status, body, [(b"content-type", content_type), *headers])


def empty_response(status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    return Response(status, b"", list(headers))
