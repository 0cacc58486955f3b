"""gRPC core's own lines (a failed TLS handshake's, above all) never break
``--log-format json``: every line on stderr parses, and the failures are counted."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from io import BytesIO
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.certs import make_pki
from tests.processes import serve
from tests.test_access_log import STDOUT_LINES
from tokengrpc import corelog

#: A client that speaks HTTP/2 in the clear to a TLS port: the handshake fails.
PLAINTEXT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: A correctness bound for a count that moves within milliseconds.
WAIT = 10.0


def _fail_a_handshake(address: str) -> None:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
        raw.sendall(PLAINTEXT_PREFACE)
        raw.recv(100)  # the server's alert, or end of file: it has judged the handshake


async def _failures(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "tokengrpc_tls_handshake_failures":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("no tokengrpc_tls_handshake_failures_total")


async def test_failed_handshakes_are_counted_and_every_line_is_json(tmp_path: Path) -> None:
    """With workers: each process captures its own gRPC core lines, and a scrape sums."""
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.server()
    server = await serve(
        "--data-dir", str(tmp_path / "data"), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--log-format", "json", "--workers", "2", until="http",
    )  # fmt: skip
    trusting = ssl.create_default_context(cafile=pki.ca_file)
    try:
        async with httpx.AsyncClient(
            base_url=f"https://{server.address('http')}", verify=trusting
        ) as client:
            for _ in range(2):
                await asyncio.to_thread(_fail_a_handshake, server.address("grpc"))
            # Counted by a thread as the line comes: each scrape is a moment more.
            async with asyncio.timeout(WAIT):
                while await _failures(client) < 2:
                    continue
            assert await _failures(client) == 2
    finally:
        code, output = await server.stop()
    assert code == 0, output
    for line in [*server.lines, *output.splitlines()]:
        if not line.startswith(STDOUT_LINES):
            json.loads(line)  # every stderr line, gRPC core's included
    assert "Handshake failed" not in output


def test_core_lines_are_leveled_and_other_lines_pass_through() -> None:
    passed = BytesIO()
    before = corelog.failed_handshakes()
    corelog.relay_line(b"I1202 07:55:44.188422   27049 ssl_transport_security.cc:2563] "
                       b"Handshake failed with error SSL_ERROR_SSL\n", passed)  # fmt: skip
    assert corelog.failed_handshakes() == before + 1
    worker = b'{"time":"2026-12-02T07:55:44.188Z","level":"INFO","logger":"tokengrpc"}\n'
    corelog.relay_line(worker, passed)
    assert passed.getvalue() == worker  # a worker's line, as it came
