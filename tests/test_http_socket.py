"""The gateway's listening socket must give accepted connections TCP_NODELAY.

Without it each keep-alive response waits ~40 ms for a delayed ACK: asyncio
sets the option only when the listening socket's protocol is IPPROTO_TCP.
"""

from __future__ import annotations

import asyncio
import socket

from gateway.app import bind


async def test_accepted_connections_have_nodelay() -> None:
    listening = bind("127.0.0.1:0")
    assert listening.proto == socket.IPPROTO_TCP
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
    host, port = listening.getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    assert await asyncio.wait_for(seen, 5) == 1
    writer.close()
    server.close()
    await server.wait_closed()
