"""One parser for every duration an operator writes (``--grace``, the policy settings)."""

from __future__ import annotations

import pytest

from tests.processes import run_cli
from tokengrpc.config import OPTIONS, SettingError
from tokengrpc.durations import (
    AT_MOST,
    USE,
    duration_list,
    format_duration,
    parse_duration,
    positive_duration,
)

S = 1_000_000


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("30s", 30 * S),
        ("15m", 15 * 60 * S),
        ("2h", 2 * 3600 * S),
        ("7d", 7 * 86400 * S),
        ("1h30m", 5400 * S),
        ("1.5s", 1_500_000),
        ("250ms", 250_000),
        ("0s", 0),
    ],
)
def test_durations_parse(text: str, micros: int) -> None:
    assert parse_duration(text) == micros


@pytest.mark.parametrize("text", ["", "30", "s", "1 h", "-1s", "1y", "1h 30m", "soon", "1e3s"])
def test_anything_else_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"^use a duration") as raised:
        parse_duration(text)
    assert str(raised.value) == USE  # a fixed message, whatever was pasted


def test_limits_are_positive_and_bounded() -> None:
    with pytest.raises(ValueError, match="above zero"):
        positive_duration("0s")
    with pytest.raises(ValueError, match="at most"):
        parse_duration(f"{AT_MOST // S + 1}s")
    assert duration_list("1d, 30d,7d,1d") == (30 * 86400 * S, 7 * 86400 * S, 86400 * S)
    assert duration_list("") == ()
    assert [format_duration(m) for m in (7 * 86400 * S, 90 * S, 1500 * 1000)] == [
        "7d",
        "90s",
        "1500ms",
    ]


def test_the_policy_settings_read_durations_and_name_the_source() -> None:
    options = {option.field: option for option in OPTIONS}
    assert options["max_secret_age"].read("90d", "--max-secret-age:") == 90 * 86400 * S
    assert options["expiry_reminders"].read("", "X:") == ()
    with pytest.raises(SettingError) as raised:
        options["revoke_unused_after"].read("a year", "TOKENGRPC_REVOKE_UNUSED_AFTER:")
    assert str(raised.value).startswith("TOKENGRPC_REVOKE_UNUSED_AFTER: use a duration")
    assert "a year" not in str(raised.value)


def test_rotate_grace_takes_the_same_durations() -> None:
    done = run_cli("token", "rotate", "1", "--grace", "a while")
    assert done.returncode == 2
    assert "use a duration such as 30s, 15m, 2h or 7d" in done.stderr
