"""Closes gRPC connections that start no call, or leave a call's request
unsent, for longer than the head timeout.

grpc core closes a connection that has not finished its handshake (TLS and
the client's HTTP/2 SETTINGS) within ``grpc.server_handshake_timeout_ms``,
and one without calls after ``grpc.max_connection_idle_ms``, but it has no
deadline for the first call, nor for a call's request message: a client that
sends the preface and SETTINGS and then nothing, or opens a stream and never
sends its message (which keeps the idle timer from ever starting), holds a
place under ``grpc.max_allowed_incoming_connections``. This watcher gives a
connection the head timeout to start a call, and a call the head timeout to
deliver its request, as the HTTP listener gives a request the head timeout
for its head and again for its body.

It reads grpc's own per-connection counters (channelz, which grpc keeps
anyway: no work on the call path). The cheap listing of connections runs
every eighth of the timeout; a connection's counters are read only when it
is due (the timeout after it was first seen, then every ``RECHECK`` timeouts
while it lives), a bounded batch per turn of the event loop, so thousands of
connections never hold the loop. A late connection is closed by shutting its
socket down, found by its peer address among this process's descriptors
(scanned in slices between turns of the loop); grpc then sees an ordinary
end of stream and frees the place. A closed client had no request in flight;
grpc clients reconnect for their next call.
"""

from __future__ import annotations

import asyncio
import calendar
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
#: Connections whose counters are read in one turn of the event loop.
_BATCH = 32
#: Descriptors looked at in one turn of the event loop when closing.
_FD_SLICE = 256
#: A connection that has made calls is looked at again every this many timeouts.
RECHECK = 4
_FD_FOLDER = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
#: At most one log line per this many seconds, however many connections are closed.
_REPORT_EVERY = 60.0


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return ip, port


def _peer(name: str) -> Address | None:
    """The peer of a channelz socket name: ``chttp2 ipv4:1.2.3.4:5`` or ``… ipv6:[::1]:5``."""
    _, _, uri = name.rpartition(" ")
    kind, _, rest = uri.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return _address(ipaddress.ip_address(host.strip("[]").partition("%")[0]), int(port))
    except ValueError:
        return None


def _seconds(stamp: str | None) -> float:
    """A channelz timestamp (``2026-12-02T06:04:46.585163789Z``) in Unix seconds; 0 if none."""
    if not stamp:
        return 0.0
    return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))


def stalled(data: dict[str, Any], now: float, timeout: float) -> bool:
    """Whether a connection's counters show it holding its place for nothing:
    no call started, or a call whose request never came, with nothing new
    from the client for ``timeout`` seconds (``now`` is Unix time)."""
    started = int(data.get("streamsStarted", 0))
    if started == 0:
        return True
    if int(data.get("messagesReceived", 0)) >= started:
        return False  # every call delivered its request: in use, or merely idle
    last = max(
        _seconds(data.get("lastRemoteStreamCreatedTimestamp")),
        _seconds(data.get("lastMessageReceivedTimestamp")),
    )
    # One second of slack: the stamps are read to the second.
    return now - last >= timeout + 1


def _servers() -> Iterator[dict[str, Any]]:
    start = 0
    while True:
        page = json.loads(cygrpc.channelz_get_servers(start))
        for server in page.get("server", ()):
            start = int(server["ref"]["serverId"]) + 1
            yield server
        if page.get("end", True):
            return


def _local_port(server_id: int) -> int | None:
    """The port a server's connections arrive on, from its first connection
    (channelz names a listener by the address it was asked for: port 0)."""
    for socket_id, _ in _connections(server_id):
        found = json.loads(cygrpc.channelz_get_socket(socket_id)).get("socket", {})
        tcp = found.get("local", {}).get("tcpipAddress")
        return None if tcp is None else int(tcp["port"])
    return None


def _connections(server_id: int) -> Iterator[tuple[int, str]]:
    """(id, name) of every connection the server holds."""
    first = 0
    while True:
        page = json.loads(cygrpc.channelz_get_server_sockets(server_id, first, _PAGE))
        for ref in page.get("socketRef", ()):
            socket_id = int(ref["socketId"])
            first = socket_id + 1
            yield socket_id, ref.get("name", "")
        if page.get("end", True):
            return


async def shutdown_sockets(port: int, peers: set[Address]) -> int:
    """Shut down this process's connections on local ``port`` from ``peers``.

    Only a duplicate descriptor is opened and closed here; the shutdown acts
    on the connection, and grpc closes its own descriptor when it reads the end.
    """
    closed = 0
    for index, name in enumerate(os.listdir(_FD_FOLDER)):
        if index % _FD_SLICE == _FD_SLICE - 1:
            await asyncio.sleep(0)  # a long list of descriptors must not hold the loop
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
        self._server_id: int | None = None
        #: Servers of this process on other ports (tests run several).
        self._others: set[int] = set()
        #: Connection id -> when its counters are next read (monotonic).
        self._due: dict[int, float] = {}
        self._closed = 0
        self._reported = -_REPORT_EVERY

    def _our_server(self) -> int | None:
        """The channelz id of the server on our port, found once it holds a connection."""
        if self._server_id is None:
            for server in _servers():
                server_id = int(server["ref"]["serverId"])
                if server_id in self._others:
                    continue
                port = _local_port(server_id)
                if port == self._port:
                    self._server_id = server_id
                elif port is not None:
                    self._others.add(server_id)  # another server of this process
        return self._server_id

    async def sweep(self, now: float) -> int:
        """Close the connections that are late; how many."""
        server_id = self._our_server()
        if server_id is None:
            return 0
        names: dict[int, str] = {}
        for socket_id, name in _connections(server_id):
            names[socket_id] = name
            self._due.setdefault(socket_id, now + self._timeout)
        # Ids are never reused: forget the connections that are gone.
        self._due = {key: due for key, due in self._due.items() if key in names}
        late: set[Address] = set()
        wall = time.time()
        for count, socket_id in enumerate([key for key, due in self._due.items() if due <= now]):
            if count % _BATCH == _BATCH - 1:
                await asyncio.sleep(0)
            found = json.loads(cygrpc.channelz_get_socket(socket_id)).get("socket")
            if found is None:
                continue  # closed meanwhile
            data = found.get("data", {})
            peer = _peer(names[socket_id])
            if peer is not None and stalled(data, wall, self._timeout):
                late.add(peer)
                self._due[socket_id] = now + self._timeout  # if it outlives the shutdown
            elif int(data.get("messagesReceived", 0)) < int(data.get("streamsStarted", 0)):
                self._due[socket_id] = now + self._timeout / 2  # a request is on its way
            else:
                self._due[socket_id] = now + RECHECK * self._timeout
        return await shutdown_sockets(self._port, late) if late else 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until ``stopping`` is set. A connection is first looked at a
        timeout after it was seen (an eighth of one, at most, after it opened)."""
        interval = self._timeout / 8
        failed = False
        while not stopping.is_set():
            try:
                self._closed += await self.sweep(time.monotonic())
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
                "closed %d gRPC connection(s) that started no call, or sent no request,"
                " within %g s",
                self._closed,
                self._timeout,
            )
            self._closed, self._reported = 0, now
