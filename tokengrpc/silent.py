"""Closes gRPC connections that start no call within the head timeout.

grpc core closes a connection that has not finished its handshake (TLS and
the client's HTTP/2 SETTINGS) within ``grpc.server_handshake_timeout_ms``,
and one without calls after ``grpc.max_connection_idle_ms``, but it has no
deadline for the first call: a client that sends the preface and SETTINGS
and then nothing holds a place under ``grpc.max_allowed_incoming_connections``
for the whole idle time. This watcher gives each connection the head timeout
to start a call, as the HTTP listener gives a connection the head timeout to
send a request.

It reads grpc's own per-connection counters (channelz, which grpc keeps
anyway: no work on the call path), and closes a connection by shutting its
socket down, found by its addresses among this process's descriptors. grpc
then sees an ordinary end of stream and frees the place. A client whose
connection is closed this way had no call running on it; grpc clients
reconnect for their next call.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from grpc._cython import cygrpc  # type: ignore[attr-defined]  # the channelz API grpcio-channelz uses

from tokengrpc.usage import wait_or_timeout

log = logging.getLogger(__name__)

#: One address as both sides write it: an IPv4 client of a dual-stack listener
#: is ``::ffff:a.b.c.d`` to the socket and ``a.b.c.d`` to grpc.
Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
_INET = (socket.AF_INET, socket.AF_INET6)
#: Sockets listed per channelz page.
_PAGE = 500
#: At most one log line per this many seconds, however many connections are closed.
_REPORT_EVERY = 60.0


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return ip, port


def _channelz_address(entry: dict[str, Any]) -> Address | None:
    tcp = entry.get("tcpipAddress")
    if tcp is None:
        return None
    return _address(ipaddress.ip_address(base64.b64decode(tcp["ipAddress"])), int(tcp["port"]))


def _server_socket_ids() -> Iterator[int]:
    """The id of every connection any gRPC server of this process holds."""
    start = 0
    while True:
        page = json.loads(cygrpc.channelz_get_servers(start))
        for server in page.get("server", ()):
            server_id = int(server["ref"]["serverId"])
            start = server_id + 1
            first = 0
            while True:
                sockets = json.loads(cygrpc.channelz_get_server_sockets(server_id, first, _PAGE))
                for ref in sockets.get("socketRef", ()):
                    first = int(ref["socketId"]) + 1
                    yield first - 1
                if sockets.get("end", True):
                    break
        if page.get("end", True):
            return


def shutdown_sockets(port: int, peers: set[Address]) -> int:
    """Shut down this process's connections on local ``port`` from ``peers``.

    Only a duplicate descriptor is opened and closed here; the shutdown acts
    on the connection, and grpc closes its own descriptor when it reads the end.
    """
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    closed = 0
    for name in os.listdir(folder):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue  # not a socket, or already closed
        with sock:
            try:
                if sock.family not in _INET or sock.type != socket.SOCK_STREAM:
                    continue
                if sock.getsockname()[1] != port:
                    continue
                host, peer_port = sock.getpeername()[:2]
                if _address(ipaddress.ip_address(host.partition("%")[0]), peer_port) in peers:
                    sock.shutdown(socket.SHUT_RDWR)
                    closed += 1
            except (OSError, ValueError, IndexError, TypeError):
                continue  # a listening or unix socket, or one that closed meanwhile
    return closed


class SilentConnections:
    """Watches the gRPC server on ``port``; see the module docstring."""

    def __init__(self, port: int, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        #: Connections that have started a call: never looked at again.
        self._called: set[int] = set()
        #: Connection id -> when it was first seen without a call (monotonic).
        self._waiting: dict[int, float] = {}
        self._closed = 0
        self._reported = -_REPORT_EVERY

    def sweep(self, now: float) -> int:
        """Close the connections past their time without a call; how many."""
        late: set[Address] = set()
        present: set[int] = set()
        for socket_id in _server_socket_ids():
            present.add(socket_id)
            if socket_id in self._called:
                continue
            data = json.loads(cygrpc.channelz_get_socket(socket_id)).get("socket", {})
            local = _channelz_address(data.get("local", {}))
            if local is None or local[1] != self._port:
                continue
            if int(data.get("data", {}).get("streamsStarted", 0)) > 0:
                self._called.add(socket_id)
                self._waiting.pop(socket_id, None)
                continue
            since = self._waiting.setdefault(socket_id, now)
            remote = _channelz_address(data.get("remote", {}))
            if now - since >= self._timeout and remote is not None:
                late.add(remote)
        # Ids are never reused: forget the connections that are gone.
        self._called &= present
        self._waiting = {key: value for key, value in self._waiting.items() if key in present}
        return shutdown_sockets(self._port, late) if late else 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until ``stopping`` is set. A connection without a call is closed
        between the timeout and a quarter of it later (an eighth to be first
        seen, an eighth to the next sweep)."""
        interval = self._timeout / 8
        failed = False
        while not stopping.is_set():
            try:
                self._closed += self.sweep(time.monotonic())
            except Exception:
                if not failed:  # once: the next sweep would fail the same way
                    log.exception("could not look at the gRPC connections")
                failed = True
            self._report()
            await wait_or_timeout(stopping, interval)

    def _report(self) -> None:
        now = time.monotonic()
        if self._closed and now - self._reported >= _REPORT_EVERY:
            log.info(
                "closed %d gRPC connection(s) that started no call within %g s",
                self._closed,
                self._timeout,
            )
            self._closed, self._reported = 0, now
