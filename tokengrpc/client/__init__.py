"""Guard a Python service with tokengrpc: a verifier, a gRPC interceptor, an ASGI middleware.

Needs only grpcio and protobuf (and the generated ``tokengrpc.v1`` stubs),
none of the server's own dependencies. See docs/services.md.
"""

from tokengrpc.client.asgi import TokenMiddleware
from tokengrpc.client.identity import Identity, current_identity
from tokengrpc.client.interceptor import TokenInterceptor
from tokengrpc.client.verifier import CacheInfo, TokenVerifier, VerifierUnavailable

__all__ = [
    "CacheInfo",
    "Identity",
    "TokenInterceptor",
    "TokenMiddleware",
    "TokenVerifier",
    "VerifierUnavailable",
    "current_identity",
]
