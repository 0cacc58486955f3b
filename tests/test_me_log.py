"""The ``me`` family's trace_id reaches stderr of a real ``tokengrpc serve``,
so an operator can find the request a client quotes; no token does."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.processes import serve


async def test_problem_trace_ids_are_logged_and_tokens_are_not(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", until="http",
    )  # fmt: skip
    token = (tmp_path / "bootstrap-token").read_text().strip()
    secret = token.partition("|")[2]
    trace_ids = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{server.address('http')}") as client:
            stranger = await client.get("/api/v1/me/tokens")
            # A plaintext pasted where the id goes, and one in a bad body.
            pasted = await client.delete(
                f"/api/v1/me/tokens/{token.replace('|', '%7C')}",
                headers={"Authorization": f"Bearer {token}"},
            )
            invalid = await client.post(
                "/api/v1/me/tokens",
                json={"name": "x", "expires_at": token},
                headers={"Authorization": f"Bearer {token}"},
            )
            for response, status in ((stranger, 401), (pasted, 404), (invalid, 422)):
                assert response.status_code == status, response.text
                assert response.json()["trace_id"] == response.headers["x-trace-id"]
                assert secret not in response.text
                trace_ids.append(response.json()["trace_id"])
            assert pasted.json()["instance"] == "/api/v1/me/tokens/{id}"
    finally:
        _, output = await server.stop()
    for trace_id in trace_ids:
        assert trace_id in output, output
    assert secret not in output
