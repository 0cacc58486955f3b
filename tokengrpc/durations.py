"""Durations as operators write them: ``30s``, ``15m``, ``2h``, ``7d``, ``1h30m``.

One parser for every place that takes one (``token rotate --grace`` and the
policy settings), so they all accept the same words. Standard library only.
"""

from __future__ import annotations

import re

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_MICROS = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
_UNIT_MICROS["d"] = 24 * _UNIT_MICROS["h"]
#: Far beyond any policy, and short of the ~10,000 years a protobuf Duration holds.
AT_MOST = 36_500 * _UNIT_MICROS["d"]
#: What every refusal says (never the text given: it could be anything pasted).
USE = "use a duration such as 30s, 15m, 2h or 7d"


def parse_duration(text: str) -> int:
    """Microseconds of ``text``: numbers with units, largest first or not, no spaces.

    Raises ValueError (with ``USE``, never ``text``) for anything else or
    anything longer than ``AT_MOST``.
    """
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(USE)
    micros = round(sum(float(number) * _UNIT_MICROS[unit] for number, unit in parts))
    if micros > AT_MOST:
        raise ValueError(f"{USE}, at most {AT_MOST // _UNIT_MICROS['d']}d")
    return micros


def positive_duration(text: str) -> int:
    """A duration above zero (a policy's limit)."""
    micros = parse_duration(text)
    if micros <= 0:
        raise ValueError(f"{USE}, above zero")
    return micros


def duration_list(text: str) -> tuple[int, ...]:
    """Comma-separated positive durations, longest first, each once; empty: none."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(sorted({positive_duration(part) for part in parts}, reverse=True))


def format_duration(micros: int) -> str:
    """The shortest of ``parse_duration``'s spellings for ``micros`` (``7d``, ``90s``)."""
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT_MICROS[unit]
        if micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros / 1_000_000:g}s"
