"""Comparing a live response with a documented example, field by field.

Values that must differ (ids, times, secrets, trace ids) are compared by type
and format; everything else must be equal.
"""

from __future__ import annotations

import re
from typing import Any

FORMATS = {
    "micro_z": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"),
    "seconds_z": re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"),
    "plaintext": re.compile(r"^\d+\|tgr_[0-9A-Za-z]{46}$"),
    "uuid": re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"),
}


def same_shape(actual: Any, expected: Any, volatile: dict[str, str], path: str = "$") -> None:
    """Assert ``actual`` matches ``expected``; keys in ``volatile`` by format only.

    ``volatile`` maps a key to a FORMATS name, or to "int"/"any" for type-only.
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            kind = volatile.get(key)
            if kind is None:
                same_shape(actual[key], value, volatile, f"{path}.{key}")
            elif actual[key] is None or value is None:
                assert (actual[key] is None) == (value is None) or kind.endswith("?"), (
                    f"{path}.{key}: {actual[key]!r} vs {value!r}"
                )
            elif kind.rstrip("?") == "int":
                assert isinstance(actual[key], int), f"{path}.{key}: {actual[key]!r}"
            elif kind.rstrip("?") != "any":
                pattern = FORMATS[kind.rstrip("?")]
                assert pattern.match(str(actual[key])), (
                    f"{path}.{key}: {actual[key]!r} is not {kind}"
                )
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), (
            f"{path}: {len(actual)} items, expected {len(expected)}"
        )
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            same_shape(a, e, volatile, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        assert type(actual) is type(expected), f"{path}: {type(actual)} vs {type(expected)}"
