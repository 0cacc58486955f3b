"""How much of a body the gateway reads: every body limit, in one place.

A route declares only whether it needs a token; its limit follows from that
(``body_limit``), and so does how much a stranger can make it read
(``gateway.authfirst``). Error messages state a limit with ``size_text``.
"""

from __future__ import annotations

#: The largest body any route reads (the service's own message limit is the same).
MAX_BODY = 1024 * 1024
#: The most of a body a stranger can make the gateway read and parse: a
#: route that needs a token reads a body this small before the caller is
#: authenticated (a larger one only after), and a route that needs no token
#: (a revocation names one token) takes no more.
STRANGER_BODY = 16 * 1024
#: A form body's limit (below the route's): percent-decoding runs in Python,
#: on the event loop (docs/performance.md), and no form a family takes needs more.
MAX_FORM_BODY = 64 * 1024
#: A leak report's limit: a stranger's body, read only once its signature
#: headers are well-formed; room for a report of ``MAX_REPORT_TOKENS``
#: (tokengrpc.leaks) entries, within the service's 1 MiB message limit.
LEAK_REPORT_BODY = 512 * 1024


def body_limit(needs_token: bool, own: int | None = None) -> int:
    """The largest body a route takes: its ``own`` limit, if it has one."""
    if own is not None:
        return own
    return MAX_BODY if needs_token else STRANGER_BODY


def size_text(size: int) -> str:
    """``1 MiB``, ``16 KiB``: a limit as an error message states it."""
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"
