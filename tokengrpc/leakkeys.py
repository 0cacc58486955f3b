"""The public keys that sign leak reports: GitHub's ``meta/public_keys/secret_scanning``.

The source is a URL (fetched with httpx) or a file holding that document,
``{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}``. Keys are
cached; an identifier the cache lacks makes one new read of the source, at
most once a minute whoever asks, so a stranger sending made-up identifiers
cannot make us fetch more often than that.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tokengrpc.errors import Unavailable

log = logging.getLogger(__name__)

#: Microseconds (the clock's unit) between two reads of the source for an unknown key.
REFETCH_INTERVAL = 60_000_000
#: The largest key document read (GitHub's holds a handful of keys, a few KiB).
MAX_DOCUMENT = 256 * 1024
#: Keys taken from one document; the rest are ignored.
MAX_KEYS = 100
#: Seconds to connect, and between bytes, when fetching the document.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Seconds for a whole fetch: a source that trickles bytes must not hold the
#: refetch (and every report with an unknown key id waiting on it) for longer.
FETCH_DEADLINE = 15.0

PublicKey = ec.EllipticCurvePublicKey


class SourceUnusable(Exception):
    """The key document could not be had; the message says why (no secret in it)."""


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def parse_keys(raw: bytes) -> dict[str, PublicKey]:
    """The P-256 keys of a ``secret_scanning`` document, by identifier; entries
    of another kind are skipped, a document of another shape is SourceUnusable."""
    try:
        document: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise SourceUnusable("the key document is not JSON") from None
    entries = document.get("public_keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise SourceUnusable("the key document has no public_keys list")
    keys: dict[str, PublicKey] = {}
    for entry in entries[:MAX_KEYS]:
        if not isinstance(entry, dict):
            continue
        identifier, pem = entry.get("key_identifier"), entry.get("key")
        if not isinstance(identifier, str) or not isinstance(pem, str):
            continue
        try:
            key = load_pem_public_key(pem.encode())
        except (ValueError, TypeError, UnicodeEncodeError):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            keys[identifier] = key
    return keys


async def _fetch(url: str) -> bytes:
    try:
        async with asyncio.timeout(FETCH_DEADLINE):
            return await _fetch_within(url)
    except TimeoutError:
        raise SourceUnusable("the key source did not answer in time") from None


async def _fetch_within(url: str) -> bytes:
    try:
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise SourceUnusable(f"the key source answered {response.status_code}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_DOCUMENT:
                    raise SourceUnusable("the key document is too large")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as error:
        raise SourceUnusable(f"the key source cannot be reached ({error})") from None


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_DOCUMENT + 1)
    except OSError as error:
        raise SourceUnusable(f"the key file cannot be read ({error.strerror})") from None
    if len(raw) > MAX_DOCUMENT:
        raise SourceUnusable("the key document is too large")
    return raw


class ScanningKeys:
    """The keys of one source, cached; read again only for an identifier not yet known."""

    def __init__(self, source: str, clock: Callable[[], int]) -> None:
        self._source = source
        self._clock = clock
        self._keys: dict[str, PublicKey] = {}
        #: When the source was last read (the clock's microseconds); None: never.
        self._read_at: int | None = None
        #: That read failed: until the next one, an unknown identifier is UNAVAILABLE.
        self._failed = False
        #: One read at a time: requests that need it wait for it, then look again.
        self._lock = asyncio.Lock()
        #: Reads of the source so far (tests and the log).
        self.reads = 0

    async def key(self, identifier: str) -> PublicKey | None:
        """The key named ``identifier``, None if the source has none such;
        Unavailable when the source cannot be read."""
        found = self._keys.get(identifier)
        if found is not None:
            return found
        async with self._lock:
            found = self._keys.get(identifier)  # read by the request we waited for
            if found is not None:
                return found
            now = self._clock()
            if self._read_at is None or now - self._read_at >= REFETCH_INTERVAL:
                self._read_at = now
                await self._read()
            if self._failed:
                raise Unavailable("the keys that sign leak reports cannot be fetched now")
            return self._keys.get(identifier)

    async def _read(self) -> None:
        self.reads += 1
        try:
            if is_url(self._source):
                raw = await _fetch(self._source)
            else:
                raw = await asyncio.to_thread(_read_file, Path(self._source))
            keys = parse_keys(raw)
        except SourceUnusable as error:
            # The keys read before stay: a source down for a while does not
            # stop reports signed by a key already known.
            log.warning("cannot read the secret scanning keys: %s", error)
            self._failed = True
            return
        self._keys = keys
        self._failed = False
