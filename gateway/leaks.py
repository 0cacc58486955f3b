"""``POST /v1/leaks/github``: GitHub secret scanning's partner reports, over ReportLeakedTokens.

No caller token: the report's signature is the proof, and the service checks
it over the raw bytes before it reads them. The gateway only sees to it that
a stranger cannot make it read much: the two signature headers must be
there, once each and well-formed, before a byte of the body is read, and
the body has a limit of its own (``gateway.limits``). Served only when the
service has a key source (``--github-scanning-keys``); else 404 like any
unknown path.
"""

from __future__ import annotations

import re

import grpc

from gateway import openapi_legacy
from gateway.canonical import StatusErrors
from gateway.family import Fragment, Route
from gateway.http import Request, Response, json_response
from gateway.limits import LEAK_REPORT_BODY
from gateway.transcode import error_response
from gateway.upstream import Upstream
from tokengrpc.v1 import tokens_pb2 as pb

PATH = "/v1/leaks/github"
IDENTIFIER_HEADER = "github-public-key-identifier"
SIGNATURE_HEADER = "github-public-key-signature"
#: A key identifier (GitHub's are 64 hex digits) and a base64 signature (a
#: P-256 DER one is at most 96 characters). A repeated header is joined with
#: ", " (``gateway.http``), which neither allows: it is refused too.
_IDENTIFIER = re.compile(r"[A-Za-z0-9._:-]{1,256}")
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{1,254}={0,2}")
_UNVERIFIED = "the report's signature does not verify"
_LABELS = {pb.LEAK_LABEL_TRUE_POSITIVE: "true_positive"}


class LeakReports(StatusErrors):
    """Failures as every ``/v1`` route's: a ``google.rpc.Status`` in JSON."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def routes(self) -> list[Route]:
        return [Route("POST", PATH, self.report, needs_token=False, body_limit=LEAK_REPORT_BODY)]

    def openapi(self) -> Fragment:
        return openapi_legacy.leaks()

    async def report(self, request: Request, _: dict[str, str]) -> Response:
        identifier = request.headers.get(IDENTIFIER_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not (_IDENTIFIER.fullmatch(identifier) and _SIGNATURE.fullmatch(signature)):
            return error_response(grpc.StatusCode.UNAUTHENTICATED, _UNVERIFIED)
        answer = await self._upstream.call(
            self._upstream.tokens.ReportLeakedTokens,
            pb.ReportLeakedTokensRequest(
                report=await request.body(), key_identifier=identifier, signature=signature
            ),
            request,
        )
        feedback = [
            {
                "token_hash": item.token_hash,
                "token_type": item.token_type,
                "label": _LABELS.get(item.label, "false_positive"),
            }
            for item in answer.feedback
        ]
        return json_response(200, feedback, headers=[(b"cache-control", b"no-store")])
