"""Leak reports (GitHub secret scanning's partner format): verify, then revoke.

The signature is checked over the report's bytes before anything in them is
parsed or looked up; only then is the report read, as a JSON array of
``{token, type, url, source}``. Each token is handed to the service's
revocation by value (``TokenManager.revoke_by_value``) with reason
``leaked``, and answered with GitHub's feedback: its SHA-256 and a label,
never the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tokengrpc.auth import Caller
from tokengrpc.errors import DomainError, InvalidArgument, Violation
from tokengrpc.leakkeys import ScanningKeys
from tokengrpc.store import REASON_LEAKED, Actor
from tokengrpc.tokens import TokenManager
from tokengrpc.v1 import tokens_pb2 as pb

#: Tokens one report may list; a longer one is refused before any is looked at.
MAX_REPORT_TOKENS = 1000
#: The longest key identifier and base64 signature taken (a P-256 DER
#: signature is at most 72 bytes, 96 characters of base64).
MAX_IDENTIFIER = 256
MAX_SIGNATURE = 256
#: Characters of a report's url and source kept in an event's detail, and of
#: a token type echoed in the feedback.
MAX_DETAIL = 1024
MAX_TYPE = 256


class UnverifiedReport(DomainError):
    """No configured key vouches for these bytes: nothing in them is read."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self) -> None:
        # The same words whatever failed: a missing key, a bad signature.
        super().__init__("the report's signature does not verify")


@dataclass(frozen=True, slots=True)
class Entry:
    token: str
    type: str
    url: str
    source: str


def _bad_report(description: str, reason: str = "INVALID") -> InvalidArgument:
    return InvalidArgument([Violation("report", description, reason)])


def _printable(text: str, limit: int) -> str:
    """What of a reported string an event or an answer may carry: printable
    characters only (no NUL, no lone surrogate the store or protobuf refuses)."""
    return "".join(char for char in text[:limit] if char.isprintable())


def parse_report(raw: bytes) -> list[Entry]:
    """The report's entries; InvalidArgument unless it is an array of objects
    with string ``token`` and ``type`` (``url``, ``source``: strings if given)."""
    try:
        document: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise _bad_report("is not JSON") from None
    if not isinstance(document, list):
        raise _bad_report("is not an array")
    if len(document) > MAX_REPORT_TOKENS:  # before any per-entry work
        raise _bad_report(f"lists more than {MAX_REPORT_TOKENS} tokens", "TOO_MANY")
    entries = []
    for index, item in enumerate(document):
        fields = item if isinstance(item, dict) else {}
        token, kind = fields.get("token"), fields.get("type")
        url, source = fields.get("url", ""), fields.get("source", "")
        if not (
            isinstance(token, str)
            and isinstance(kind, str)
            and isinstance(url, str)
            and isinstance(source, str)
        ):
            raise _bad_report(f"entry {index} is not an object with string token and type")
        entries.append(Entry(token, kind, url, source))
    return entries


def _verified(key: ec.EllipticCurvePublicKey | None, signature: bytes, report: bytes) -> bool:
    if key is None:
        return False
    try:
        key.verify(signature, report, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _signature(request: pb.ReportLeakedTokensRequest) -> bytes:
    """The DER signature; UnverifiedReport for a malformed one, before any key is sought."""
    identifier, text = request.key_identifier, request.signature
    if not identifier or len(identifier) > MAX_IDENTIFIER or not identifier.isprintable():
        raise UnverifiedReport
    if not text or len(text) > MAX_SIGNATURE:
        raise UnverifiedReport
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UnverifiedReport from None


def token_hash(token: str) -> str:
    """GitHub's ``token_hash``: SHA-256 of the reported string, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _detail(entry: Entry) -> str:
    url, source = _printable(entry.url, MAX_DETAIL), _printable(entry.source, MAX_DETAIL)
    return f"{url} ({source})" if source else url


class LeakReports:
    def __init__(self, keys: ScanningKeys, manager: TokenManager) -> None:
        self._keys = keys
        self._manager = manager

    async def report(
        self, caller: Caller, request: pb.ReportLeakedTokensRequest
    ) -> pb.ReportLeakedTokensResponse:
        signature = _signature(request)
        key = await self._keys.key(request.key_identifier)
        if not _verified(key, signature, request.report):
            raise UnverifiedReport
        entries = parse_report(request.report)
        response = pb.ReportLeakedTokensResponse()
        #: A token listed twice (found at two places) gets one answer, its first.
        labels: dict[str, pb.LeakLabel.ValueType] = {}
        for entry in entries:
            label = labels.get(entry.token)
            if label is None:
                label = await self._label(caller, entry)
                labels[entry.token] = label
            response.feedback.add(
                token_hash=token_hash(entry.token),
                token_type=_printable(entry.type, MAX_TYPE),
                label=label,
            )
        return response

    async def _label(self, caller: Caller, entry: Entry) -> pb.LeakLabel.ValueType:
        # Ours are ASCII (plaintext.parse would choke on a lone surrogate).
        if entry.token.isascii():
            actor = Actor(client_ip=caller.client_ip, reason=REASON_LEAKED, detail=_detail(entry))
            if await self._manager.revoke_by_value(entry.token, caller.now, actor):
                return pb.LEAK_LABEL_TRUE_POSITIVE
        return pb.LEAK_LABEL_FALSE_POSITIVE
