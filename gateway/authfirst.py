"""Authenticate before work: what a stranger can make the gateway read and parse.

The gateway holds no token rules: whether a credential is good is the
service's answer to a call. Asking costs a round trip, so a route that needs
a token asks first only where the body is worth protecting:

- a body the head declares at most ``limits.STRANGER_BODY`` long is read, parsed and
  sent with the call itself, which authenticates it: parsing that much costs
  a stranger's request no more than a revocation by value, which needs no
  token at all;
- a longer body, or one of undeclared length (chunked), waits for a call of
  its own: a stranger gets 401 before a byte of it is read;
- bad input is reported only once the caller is authenticated, so a stranger
  sees 401 whatever it sent.

Routes that need no token take at most ``limits.STRANGER_BODY``. The
app applies this to every route that needs a token (``gateway.family.guard``):
no family calls it.
"""

from __future__ import annotations

from gateway.http import Request
from gateway.limits import STRANGER_BODY
from gateway.upstream import Upstream
from tokengrpc.v1 import tokens_pb2 as pb

#: The RPCs the service serves without a caller token (holding the secret
#: being revoked is the proof); tests/test_openapi.py holds it to the service.
UNAUTHENTICATED_RPCS = frozenset({"RevokeTokenByValue"})


async def before_body(upstream: Upstream, request: Request) -> None:
    """Authenticate now unless the head declares a small body; RpcFailure if refused."""
    if not request.declares_body_within(STRANGER_BODY):
        await authenticate(upstream, request)


async def authenticate(upstream: Upstream, request: Request) -> None:
    """RpcFailure (UNAUTHENTICATED for a stranger) unless the service accepts the caller.

    A cheap read-only call (one row at most, no count); like any call, it
    counts a use of the caller's token.
    """
    if request.authenticated:
        return
    await upstream.call(upstream.tokens.ListTokens, pb.ListTokensRequest(page_size=1), request)
    request.authenticated = True
