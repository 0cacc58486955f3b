"""A checked request too large for Check, through a real Envoy sending bodies
(``with_request_body``): denied by tokengrpc with 413, never let through.

With an error instead of an answer, an Envoy configured with
``failure_mode_allow: true`` would let the request pass (docs/services.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.asgiserver import AsgiServer
from tests.envoyproxy import echo_app, start_envoy
from tests.helpers import LiveService, start_service, stop_service

#: tokengrpc's per-message limit, small so that a body over it is cheap.
LIMIT = 4096
#: What Envoy buffers and sends: over LIMIT, within what the transport reads (twice it).
ENVOY_BODY_BYTES = 6144


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[LiveService]:
    live = await start_service(tmp_path / "data", grpc_max_receive_bytes=LIMIT)
    try:
        yield live
    finally:
        await stop_service(live)


async def test_a_body_too_large_to_check_is_denied(small: LiveService, tmp_path: Path) -> None:
    _, envoy_token = await small.create("envoy", service_token=True, scopes=["introspect"])
    upstream = await AsgiServer.start(echo_app)
    envoy = await start_envoy(
        tmp_path / "envoy",
        tokengrpc_port=small.port,
        upstream_port=upstream.port,
        token=envoy_token,
        request_body_bytes=ENVOY_BODY_BYTES,
    )
    headers = {"authorization": f"Bearer {small.admin_token}"}
    try:
        async with httpx.AsyncClient(base_url=envoy.base_url, timeout=30) as client:
            # A small body: Check reads it and allows.
            allowed = await client.post("/", content=b"x" * 100, headers=headers)
            assert allowed.status_code == 200, allowed.text
            # A body that makes the check request larger than LIMIT: denied by
            # tokengrpc (its body, not Envoy's own 413), whoever sends it.
            for sent in (headers, {}):
                denied = await client.post("/", content=b"x" * (LIMIT + 1024), headers=sent)
                assert denied.status_code == 413, denied.text
                assert denied.json() == {"error": "Request too large."}
    finally:
        await envoy.stop()
        await upstream.stop()
