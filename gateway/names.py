"""How an error names something the client sent, without repeating it.

A plaintext pasted into the wrong place (a query key, a body key) must not
come back in the answer. A name is echoed only if it looks like a field
name: a short identifier, which no token (``<id>|tgr_`` and 46 characters)
can be. Anything else is "an unknown field".
"""

from __future__ import annotations

import re

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,31}")


def shown(name: str) -> str:
    """``'name'`` quoted if it is safe to repeat, else a description."""
    return repr(name) if _FIELD_NAME.fullmatch(name) else "an unknown field"
