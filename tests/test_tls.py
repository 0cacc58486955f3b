"""TLS and mTLS on both listeners of a real ``tokengrpc serve``, with real clients:
grpcurl, httpx, a bare TLS handshake, and ``tokengrpc gateway`` in front of it."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import ssl
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.certs import Pki, make_pki
from tests.processes import Serving, clean_env, serve
from tests.test_grpcurl import GRPCURL

#: One route of every family, each answering 200 to the bootstrap (admin) token.
ROUTES = (
    ("GET", "/api/token"),  # solder
    ("GET", "/api/v1/me/tokens"),  # me
    ("GET", "/_/token"),  # admin
    ("GET", "/v1/tokens"),  # canonical
    ("GET", "/healthz"),  # ops
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def _serve_tls(tmp_path: Path, pki: Pki, *extra: str) -> Serving:
    cert, key = pki.server()
    return await serve(
        "--data-dir", str(tmp_path / "data"), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        *extra, until="http",
    )  # fmt: skip


#: Where the handshake must fail: grpcurl redials until this (default 10 s), then
#: gives up; a loopback handshake that succeeds takes milliseconds.
REFUSED = ("-connect-timeout", "3")


async def _grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode or 0, out.decode(), err.decode()


def _admin(tmp_path: Path) -> str:
    return (tmp_path / "data" / "bootstrap-token").read_text().strip()


def _served_certificate(address: str, pki: Pki, alpn: str) -> x509.Certificate:
    """The certificate a new TLS connection is shown (no client certificate offered)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.set_alpn_protocols([alpn])
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_grpcurl_and_https_reach_every_route_family(tmp_path: Path, pki: Pki) -> None:
    server = await _serve_tls(tmp_path, pki)
    try:
        grpc_address, http_address = server.address("grpc"), server.address("http")
        code, out, err = await _grpcurl("-cacert", str(pki.ca_file), grpc_address, "list")
        assert code == 0, err
        assert "tokengrpc.v1.TokenService" in out.split()
        auth = f"authorization: Bearer {_admin(tmp_path)}"
        code, out, err = await _grpcurl(
            "-cacert", str(pki.ca_file), "-H", auth, "-d", "{}", grpc_address,
            "tokengrpc.v1.TokenService/ListTokens",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["tokens"][0]["owner"] == "admin"
        # Without the CA (and so without trust) grpcurl refuses the server.
        code, _, _ = await _grpcurl(*REFUSED, grpc_address, "list")
        assert code != 0

        headers = {"Authorization": f"Bearer {_admin(tmp_path)}"}
        trusting = ssl.create_default_context(cafile=pki.ca_file)
        async with httpx.AsyncClient(base_url=f"https://{http_address}", verify=trusting) as client:
            for method, path in ROUTES:
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 200, (path, response.text)
            introspected = await client.post(
                "/oauth/introspect", data={"token": _admin(tmp_path)}, headers=headers
            )
            assert introspected.json()["active"] is True
            # Links are built from the scheme the client used.
            page = await client.get("/api/v1/me/tokens", headers=headers)
            assert page.json()["links"]["first"].startswith("https://")
    finally:
        code, output = await server.stop()
    assert code == 0, output
    assert "not a loopback address" not in "\n".join(server.lines)


async def test_a_plaintext_client_is_refused_by_both_listeners(tmp_path: Path, pki: Pki) -> None:
    server = await _serve_tls(tmp_path, pki)
    try:
        code, _, err = await _grpcurl(*REFUSED, "-plaintext", server.address("grpc"), "list")
        assert code != 0, "a plaintext gRPC client was served by a TLS listener"
        print("grpcurl -plaintext:", err.strip()[:200])
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/healthz")
    finally:
        await server.stop()


async def test_mtls_refuses_a_client_without_a_certificate_on_both_listeners(
    tmp_path: Path, pki: Pki
) -> None:
    server = await _serve_tls(tmp_path, pki, "--tls-client-ca", str(pki.ca_file))
    client_cert, client_key = pki.client()
    try:
        grpc_address, http_address = server.address("grpc"), server.address("http")
        code, _, _ = await _grpcurl(*REFUSED, "-cacert", str(pki.ca_file), grpc_address, "list")
        assert code != 0, "gRPC served a client without a certificate under mTLS"
        code, out, err = await _grpcurl(
            "-cacert", str(pki.ca_file), "-cert", str(client_cert), "-key", str(client_key),
            grpc_address, "list",
        )  # fmt: skip
        assert code == 0, err
        assert "tokengrpc.v1.TokenService" in out.split()

        trusting = ssl.create_default_context(cafile=pki.ca_file)
        async with httpx.AsyncClient(base_url=f"https://{http_address}", verify=trusting) as bare:
            with pytest.raises(httpx.HTTPError):
                await bare.get("/healthz")
        # A certificate from another CA is no better than none.
        stranger = make_pki(tmp_path / "stranger")
        other_cert, other_key = stranger.client()
        foreign = ssl.create_default_context(cafile=pki.ca_file)
        foreign.load_cert_chain(other_cert, other_key)
        async with httpx.AsyncClient(base_url=f"https://{http_address}", verify=foreign) as other:
            with pytest.raises(httpx.HTTPError):
                await other.get("/healthz")
        identified = ssl.create_default_context(cafile=pki.ca_file)
        identified.load_cert_chain(client_cert, client_key)
        async with httpx.AsyncClient(base_url=f"https://{http_address}", verify=identified) as ok:
            response = await ok.get(
                "/api/token", headers={"Authorization": f"Bearer {_admin(tmp_path)}"}
            )
            assert response.status_code == 200, response.text
    finally:
        await server.stop()


async def test_a_renewed_certificate_is_served_after_sighup(tmp_path: Path, pki: Pki) -> None:
    server = await _serve_tls(tmp_path, pki)
    try:
        grpc_address, http_address = server.address("grpc"), server.address("http")
        before = {
            "grpc": _served_certificate(grpc_address, pki, "h2").serial_number,
            "http": _served_certificate(http_address, pki, "http/1.1").serial_number,
        }
        assert before["grpc"] == before["http"]
        # Renewal as certbot does it: new files under the same names, then a signal.
        renewed_cert, renewed_key = pki.server("renewed")
        shutil.copy(renewed_cert, pki.directory / "server.pem")
        shutil.copy(renewed_key, pki.directory / "server.key")
        expected = x509.load_pem_x509_certificate(renewed_cert.read_bytes()).serial_number
        server.process.send_signal(signal.SIGHUP)
        seen: dict[str, int] = {}
        for _ in range(100):  # a poll on the outcome, not a timed assert
            seen = {
                "grpc": _served_certificate(grpc_address, pki, "h2").serial_number,
                "http": _served_certificate(http_address, pki, "http/1.1").serial_number,
            }
            if seen == {"grpc": expected, "http": expected}:
                break
            await asyncio.sleep(0.1)
        assert seen == {"grpc": expected, "http": expected}
        code, _, err = await _grpcurl("-cacert", str(pki.ca_file), grpc_address, "list")
        assert code == 0, err
    finally:
        code, output = await server.stop()
    assert code == 0, output
    assert server.process.returncode == 0


def _client(pki: Pki, identity: tuple[Path, Path], *, tls12: bool = False) -> ssl.SSLContext:
    """A client presenting ``identity``; a session resumes only with the context it came from."""
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.load_cert_chain(*identity)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _https(
    address: str, context: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[bool, ssl.SSLSession | None, bool]:
    """GET /healthz: (answered 200, the session to resume, whether ``session`` was resumed)."""
    host, _, port = address.rpartition(":")
    try:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host, session=session) as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = tls.recv(65536)
            return answer.startswith(b"HTTP/1.1 200"), tls.session, bool(tls.session_reused)
    except (ssl.SSLError, OSError):
        return False, None, False


async def _grpc_admits(address: str, pki: Pki, identity: tuple[Path, Path]) -> bool:
    """A health check from a fresh connection presenting ``identity`` is answered."""
    cert, key = identity
    credentials = grpc.ssl_channel_credentials(
        pki.ca_file.read_bytes(), key.read_bytes(), cert.read_bytes()
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code() != grpc.StatusCode.UNAVAILABLE
    return True


async def test_a_client_ca_removed_from_the_file_admits_nobody_after_sighup(
    tmp_path: Path, pki: Pki
) -> None:
    """Both listeners: a certificate of the CA taken out of --tls-client-ca is
    refused, also through a TLS 1.2 session resumed from before; the new CA's is
    admitted."""
    first, second = make_pki(tmp_path / "ca-a"), make_pki(tmp_path / "ca-b")
    client_ca = tmp_path / "client-ca.pem"
    shutil.copy(first.ca_file, client_ca)
    server = await _serve_tls(tmp_path, pki, "--tls-client-ca", str(client_ca))
    of_first, of_second = first.client("a"), second.client("b")
    grpc_address, http_address = server.address("grpc"), server.address("http")
    first_tls13, second_tls13 = _client(pki, of_first), _client(pki, of_second)
    first_tls12 = _client(pki, of_first, tls12=True)
    try:
        assert _https(http_address, first_tls13)[0]
        admitted, session, _ = _https(http_address, first_tls12)
        assert admitted
        assert session is not None
        # Resumption works, so its refusal below is the change's doing.
        assert _https(http_address, first_tls12, session) == (True, session, True)
        assert await _grpc_admits(grpc_address, pki, of_first)
        assert not _https(http_address, second_tls13)[0]

        shutil.copy(second.ca_file, client_ca)
        server.process.send_signal(signal.SIGHUP)
        for _ in range(100):  # a poll on the outcome, not a timed assert
            if _https(http_address, second_tls13)[0]:
                break
            await asyncio.sleep(0.1)
        assert _https(http_address, second_tls13)[0]
        assert not _https(http_address, first_tls13)[0]
        assert not _https(http_address, first_tls12, session)[0]
        assert not _https(http_address, first_tls12)[0]
        assert not await _grpc_admits(grpc_address, pki, of_first)
        assert await _grpc_admits(grpc_address, pki, of_second)
    finally:
        code, output = await server.stop()
    assert code == 0, output


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_the_gateway_command_reaches_a_tls_upstream(
    tmp_path: Path, pki: Pki, mutual: bool
) -> None:
    extra = ("--tls-client-ca", str(pki.ca_file)) if mutual else ()
    server = await _serve_tls(tmp_path, pki, *extra)
    client_cert, client_key = pki.client()
    identity = ["--upstream-cert", str(client_cert), "--upstream-key", str(client_key)]
    gateway = await asyncio.create_subprocess_exec(
        *_tokengrpc("gateway", "--upstream", server.address("grpc"), "--http-listen",
                    "127.0.0.1:0", "--upstream-ca", str(pki.ca_file),
                    *(identity if mutual else [])),
        env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert gateway.stdout is not None
        line = (await asyncio.wait_for(gateway.stdout.readline(), timeout=20)).decode()
        assert line.startswith("http listening on "), line
        address = line.split()[-1]
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            response = await client.get(
                "/api/token", headers={"Authorization": f"Bearer {_admin(tmp_path)}"}
            )
            assert response.status_code == 200, response.text
            assert response.json()["tokens"][0]["name"]
    finally:
        gateway.send_signal(signal.SIGTERM)
        await asyncio.wait_for(gateway.wait(), timeout=20)
        await server.stop()
    assert gateway.returncode == 0


async def test_plaintext_on_a_public_address_is_warned_about(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "0.0.0.0:0", "--no-http",
    )  # fmt: skip
    code, _ = await server.stop()
    assert code == 0
    assert "not a loopback address" in "\n".join(server.lines), server.lines
    loopback = await serve("--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http")
    await loopback.stop()
    assert "not a loopback address" not in "\n".join(loopback.lines)


def _tokengrpc(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokengrpc", *args]
