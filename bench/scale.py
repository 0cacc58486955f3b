"""The reads timed at each size of the scale sections, on either engine.

``run.py`` (SQLite) and ``postgres.py`` seed a store, start ``serve`` on it
and hand the running server here, with ``cold``: what makes the server's next
read go to the database (a change announced by another process), so the
figures are the engine's rather than the read cache's. Each figure is shown
beside its target (issue 22).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import httpx

from bench.harness import Server, timed_ms
from bench.seed import Seeded
from tokengrpc import pagetokens
from tokengrpc.sealing import KEY_FILE, Sealer, decode_key
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

#: The whole-list answer is timed (and its memory watched) up to this size.
STREAMED_UP_TO = 100_000


def scale_reads(
    svc: Server, data: Path, seeded: Seeded, size: int, cold: Callable[[], object]
) -> list[tuple[str, str]]:
    """(what, note) of every read figure at ``size`` tokens of the caller's owner.

    The caller's owner is ``scale``; its tokens are ids 3 to ``size + 2``
    (after the bootstrap token and the introspector), each with its CREATED
    event, the only events of that owner. Up to STREAMED_UP_TO, as many
    service tokens follow them, for the admin family's whole list.
    """
    caller = seeded.callers["scale"]
    before = cold
    metadata = (("authorization", f"Bearer {caller}"),)
    sealer = Sealer(decode_key((data / KEY_FILE).read_text()))
    page_key = sealer.derive(pagetokens.PAGE_TOKEN_LABEL)
    event_key = sealer.derive(pagetokens.EVENT_PAGE_TOKEN_LABEL)
    last_id = size + 2
    near_end = pagetokens.encode_page_token(page_key, last_id - 40, "scale", False)
    # The oldest events of the owner: a page token just above the first ones.
    deep_events = pagetokens.encode_page_token(event_key, 45, "owner:scale/0", False)
    rows: list[tuple[str, str]] = []
    with grpc.insecure_channel(svc.addresses["grpc"]) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        first = timed_ms(15, partial(stub.ListTokens, pb.ListTokensRequest(page_size=20),
                                     metadata=metadata), before)  # fmt: skip
        later = timed_ms(15, partial(stub.ListTokens, pb.ListTokensRequest(
            page_size=20, page_token=near_end), metadata=metadata), before)  # fmt: skip
        rows.append((
            "ListTokens page 1 / near the end (keyset), uncached",
            f"{first:.2f} ms / {later:.2f} ms (×{later / first:.2f})",
        ))  # fmt: skip
        events_first = timed_ms(15, partial(stub.ListTokenEvents, pb.ListTokenEventsRequest(
            page_size=20), metadata=metadata), before)  # fmt: skip
        events_deep = timed_ms(15, partial(stub.ListTokenEvents, pb.ListTokenEventsRequest(
            page_size=20, page_token=deep_events), metadata=metadata), before)  # fmt: skip
        rows.append((
            f"ListTokenEvents page 1 / the oldest page, {size:,} events of the owner, uncached",
            f"{events_first:.2f} ms / {events_deep:.2f} ms (×{events_deep / events_first:.2f};"
            " target ≤ ×2)",
        ))  # fmt: skip
    headers = {"Authorization": f"Bearer {caller}"}
    last_page = f"/api/v1/me/tokens?page={math.ceil(size / 20)}"
    with httpx.Client(base_url=f"http://{svc.addresses['http']}", timeout=120) as client:
        me_first = timed_ms(9, partial(client.get, "/api/v1/me/tokens?page=1", headers=headers),
                            before)  # fmt: skip
        me_last = timed_ms(9, partial(client.get, last_page, headers=headers), before)
        rows.append((
            "/api/v1/me/tokens page 1 / last page, uncached",
            f"{me_first:.2f} ms / {me_last:.2f} ms (×{me_last / me_first:.2f};"
            " target: page 1 ≤ 20 ms, last ≤ ×2)",
        ))  # fmt: skip
        if size <= STREAMED_UP_TO:
            rows.append(_whole_list(client, svc, "/api/token", headers, size))
            admin = {"Authorization": f"Bearer {seeded.admin}"}
            rows.append(_whole_list(client, svc, "/_/token", admin, size))
    return rows


def _whole_list(
    client: httpx.Client, svc: Server, path: str, headers: dict[str, str], size: int
) -> tuple[str, str]:
    """A whole list (GET /api/token, GET /_/token) read at full speed (timed), then
    read slowly, while the server's peak RSS is watched: the list is sent as it is
    read, never held."""
    baseline = peak = svc.rss_mb()
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, svc.rss_mb())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.perf_counter()
        whole = client.get(path, headers=headers)
        seconds = time.perf_counter() - started
        assert whole.status_code == 200
        with client.stream("GET", path, headers=headers) as slow:
            for _ in slow.iter_raw(16_384):
                time.sleep(0.001)  # a slow reader: the server waits, it does not buffer
    finally:
        done.set()
        watcher.join()
    return (
        f"GET {path}, all {size:,} tokens ({len(whole.content) / 1e6:.1f} MB of JSON)",
        f"{seconds * 1000:.0f} ms; server RSS +{peak - baseline:.1f} MB at most, read at full"
        " speed then slowly (target: socket buffers, not the list)",
    )
