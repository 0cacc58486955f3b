"""Path and query values parsed exactly as grpc-gateway's Go ``strconv`` does.

Python's ``int()`` is far more lenient (``" 7"``, ``"1_000"``, Arabic-Indic digits), and
a value one parser takes and another refuses is an ambiguity an attacker can
use between a proxy and us. So: ``ParseInt(s, 10, bits)`` (an optional sign,
then ASCII digits, range-checked), ``ParseUint`` (no sign at all) and
``ParseBool``'s twelve spellings.
"""

from __future__ import annotations

import math
import re

_SIGNED = re.compile(r"[+-]?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY = re.compile(r"[+-]?(?:inf|infinity)", re.IGNORECASE)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
#: Longer than any 64-bit value with leading zeros a client might sensibly
#: send; past it the digits are not read at all (int() is quadratic in them).
_MAX_DIGITS = 64


def parse_int(text: str, bits: int) -> int | None:
    """``strconv.ParseInt(text, 10, bits)``, or None where Go returns an error."""
    if len(text) > _MAX_DIGITS or not _SIGNED.fullmatch(text):
        return None
    value = int(text, 10)
    limit = 1 << (bits - 1)
    return value if -limit <= value < limit else None


def parse_uint(text: str, bits: int) -> int | None:
    """``strconv.ParseUint(text, 10, bits)``, or None where Go returns an error."""
    if len(text) > _MAX_DIGITS or not _UNSIGNED.fullmatch(text):
        return None
    value = int(text, 10)
    return value if value < 1 << bits else None


def parse_float(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)`` for decimal forms, ``Inf`` and ``NaN``.

    A finite spelling that overflows (``1e400``) is Go's ErrRange: None.
    """
    if len(text) > 2 * _MAX_DIGITS:
        return None
    if _INFINITY.fullmatch(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if text.lower() == "nan":
        return float("nan")
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_bool(text: str) -> bool | None:
    """``strconv.ParseBool(text)``, or None where Go returns an error."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None
