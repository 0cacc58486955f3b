"""The gRPC face of TokenManager: authenticate, delegate, map errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from grpc_status import rpc_status

from tokengrpc import forwardcheck
from tokengrpc.addresses import IPAddress
from tokengrpc.auth import Authenticator, Caller
from tokengrpc.errors import DomainError, PermissionDenied, to_status
from tokengrpc.inprocess import PEER
from tokengrpc.leaks import LeakReports, UnverifiedReport
from tokengrpc.logs import caller_metadata, checked_metadata, note_caller
from tokengrpc.metrics import Observation, ignore
from tokengrpc.store import Cached, TokenRecord
from tokengrpc.tokens import TokenManager
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")


class TokenServicer(tokens_pb2_grpc.TokenServiceServicer):
    def __init__(
        self,
        manager: TokenManager,
        authenticator: Authenticator,
        introspected: Observation = ignore,
        leaks: LeakReports | None = None,
    ) -> None:
        self._manager = manager
        self._auth = authenticator
        #: None: no key source is configured, so no report verifies.
        self._leaks = leaks
        #: Told whether each introspection found the token active (the metric).
        self._introspected = introspected
        #: CheckToken's allowing answer and trailing metadata, built once per record.
        self._checked = forwardcheck.KeptAnswers(_checked)

    async def _call(
        self,
        operation: Callable[[Caller, Request], Awaitable[Response]],
        request: Request,
        context: grpc.aio.ServicerContext[Request, Response],
        *,
        authenticate: bool = True,
    ) -> Response:
        named: tuple[tuple[str, str], ...] = ()
        try:
            metadata = context.invocation_metadata() or ()
            if authenticate:
                caller = await self._auth.authenticate(metadata, context.peer())
                # Set once authenticated, so that every ending names the caller
                # (a refusal after it too); never for a failed authentication.
                named = caller_metadata(caller.token_id)
                context.set_trailing_metadata(named)
            else:
                caller = self._auth.anonymous(metadata, context.peer())
            return await operation(caller, request)
        except Exception as error:
            await _abort(context, error, named)
            raise  # unreachable: abort raises

    async def CreateToken(
        self,
        request: pb.CreateTokenRequest,
        context: grpc.aio.ServicerContext[pb.CreateTokenRequest, pb.CreateTokenResponse],
    ) -> pb.CreateTokenResponse:
        return await self._call(self._manager.create_token, request, context)

    async def ListTokens(
        self,
        request: pb.ListTokensRequest,
        context: grpc.aio.ServicerContext[pb.ListTokensRequest, pb.ListTokensResponse],
    ) -> pb.ListTokensResponse:
        return await self._call(self._manager.list_tokens, request, context)

    async def GetToken(
        self,
        request: pb.GetTokenRequest,
        context: grpc.aio.ServicerContext[pb.GetTokenRequest, pb.GetTokenResponse],
    ) -> pb.GetTokenResponse:
        return await self._call(self._manager.get_token, request, context)

    async def UpdateToken(
        self,
        request: pb.UpdateTokenRequest,
        context: grpc.aio.ServicerContext[pb.UpdateTokenRequest, pb.UpdateTokenResponse],
    ) -> pb.UpdateTokenResponse:
        return await self._call(self._manager.update_token, request, context)

    async def RevokeToken(
        self,
        request: pb.RevokeTokenRequest,
        context: grpc.aio.ServicerContext[pb.RevokeTokenRequest, pb.RevokeTokenResponse],
    ) -> pb.RevokeTokenResponse:
        return await self._call(self._manager.revoke_token, request, context)

    async def GetTokenValue(
        self,
        request: pb.GetTokenValueRequest,
        context: grpc.aio.ServicerContext[pb.GetTokenValueRequest, pb.GetTokenValueResponse],
    ) -> pb.GetTokenValueResponse:
        return await self._call(self._manager.get_token_value, request, context)

    async def IntrospectToken(
        self,
        request: pb.IntrospectTokenRequest,
        context: grpc.aio.ServicerContext[pb.IntrospectTokenRequest, pb.IntrospectTokenResponse],
    ) -> pb.IntrospectTokenResponse:
        response = await self._call(self._manager.introspect_token, request, context)
        self._introspected(response.active)
        return response

    async def RotateToken(
        self,
        request: pb.RotateTokenRequest,
        context: grpc.aio.ServicerContext[pb.RotateTokenRequest, pb.RotateTokenResponse],
    ) -> pb.RotateTokenResponse:
        return await self._call(self._manager.rotate_token, request, context)

    async def RevokeTokenByValue(
        self,
        request: pb.RevokeTokenByValueRequest,
        context: grpc.aio.ServicerContext[
            pb.RevokeTokenByValueRequest, pb.RevokeTokenByValueResponse
        ],
    ) -> pb.RevokeTokenByValueResponse:
        # Not authenticated: holding the token is the proof (RFC 7009).
        return await self._call(
            self._manager.revoke_token_by_value, request, context, authenticate=False
        )

    async def ListTokenEvents(
        self,
        request: pb.ListTokenEventsRequest,
        context: grpc.aio.ServicerContext[pb.ListTokenEventsRequest, pb.ListTokenEventsResponse],
    ) -> pb.ListTokenEventsResponse:
        return await self._call(self._manager.list_token_events, request, context)

    async def CheckToken(
        self,
        request: pb.CheckTokenRequest,
        context: grpc.aio.ServicerContext[pb.CheckTokenRequest, pb.CheckTokenResponse],
    ) -> pb.CheckTokenResponse:
        # Not authenticated as a caller: the token checked is the call's own.
        try:
            record = await forwardcheck.check_call(
                self._auth,
                context.invocation_metadata() or (),
                context.peer(),
                request.required_scopes,
            )
        except Exception as error:
            # Refused for a scope, the token was judged: a gateway in another
            # process logs it as it would an allowed one. Nobody is named else.
            named = checked_metadata() if isinstance(error, PermissionDenied) else ()
            await _abort(context, error, named)
            raise  # unreachable: abort raises
        answer, named = self._checked(record)
        note_caller(record.id)
        context.set_trailing_metadata(named)
        return answer

    async def check_local(
        self, authorization: str | None, client: str | None, required: Sequence[str]
    ) -> pb.CheckTokenResponse | grpc.StatusCode:
        """``CheckToken`` as the in-process channel calls it (peer ``PEER``, the
        ``authorization`` and ``x-forwarded-for`` the gateway would send), without
        the call: no metadata, context or trailers. The answer, or the code the
        call would end with (docs/performance.md)."""
        try:
            record = await forwardcheck.check_presented(
                self._auth, *self._as_called(authorization, client), required
            )
        except Exception as error:
            return _code(error)
        return self._local_answer(record)

    def check_local_cached(
        self, authorization: str | None, client: str | None, required: Sequence[str]
    ) -> pb.CheckTokenResponse | grpc.StatusCode | None:
        """``check_local`` without waiting, when the token's record is in memory
        (a check a proxy waits on need not pay for a task); None if the answer
        needs the store: then call ``check_local``, which decides afresh."""
        try:
            record = forwardcheck.check_presented_cached(
                self._auth, *self._as_called(authorization, client), required
            )
        except Exception as error:
            return _code(error)
        return None if record is Cached.MISS else self._local_answer(record)

    def _as_called(
        self, authorization: str | None, client: str | None
    ) -> tuple[tuple[str, ...], IPAddress | None]:
        """The ``authorization`` values and client address the call would carry."""
        presented = () if authorization is None else (authorization,)
        return presented, self._auth.resolver.resolve(PEER, client or "")

    def _local_answer(self, record: TokenRecord) -> pb.CheckTokenResponse:
        note_caller(record.id)
        return self._checked(record)[0]

    async def ReportLeakedTokens(
        self,
        request: pb.ReportLeakedTokensRequest,
        context: grpc.aio.ServicerContext[
            pb.ReportLeakedTokensRequest, pb.ReportLeakedTokensResponse
        ],
    ) -> pb.ReportLeakedTokensResponse:
        # Not authenticated by a token: the report's signature is the proof.
        return await self._call(self._report_leaks, request, context, authenticate=False)

    async def _report_leaks(
        self, caller: Caller, request: pb.ReportLeakedTokensRequest
    ) -> pb.ReportLeakedTokensResponse:
        if self._leaks is None:
            raise UnverifiedReport
        return await self._leaks.report(caller, request)


def _checked(record: TokenRecord) -> tuple[pb.CheckTokenResponse, tuple[tuple[str, str]]]:
    headers = [
        pb.IdentityHeader(name=name, value=value)
        for name, value in forwardcheck.identity_headers(record)
    ]
    return pb.CheckTokenResponse(identity_headers=headers), caller_metadata(record.id)


async def _abort(
    context: grpc.aio.ServicerContext[Request, Response],
    error: Exception,
    named: tuple[tuple[str, str], ...],
) -> None:
    """End the call with ``error``'s status; ``named``: the caller, when known."""
    if isinstance(error, DomainError):
        status = rpc_status.to_status(to_status(error))
        # An abort's own trailing metadata replaces what was set: keep the name.
        await context.abort(status.code, status.details, (*status.trailing_metadata, *named))
    await context.abort(_code(error), "internal error")


def _code(error: Exception) -> grpc.StatusCode:
    """The status a call failing with ``error`` ends with."""
    if isinstance(error, DomainError):
        code: grpc.StatusCode = rpc_status.to_status(to_status(error)).code
        return code
    # Left to grpc, it would be UNKNOWN naming the exception's class and
    # repeating its text (an engine's message, say) to the client.
    log.exception("unexpected error in a TokenService call")
    return grpc.StatusCode.INTERNAL
