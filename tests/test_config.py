"""The settings table is the one source: the README's table and every ``--help`` follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.processes import run_cli
from tokengrpc.config import COMMANDS, GATEWAY, MIGRATE, OPTIONS, SERVE, TOKEN, Option

README = Path(__file__).parent.parent / "README.md"

#: Every command line that has a ``--help``, with the settings' command it takes.
HELPS: dict[tuple[str, ...], str | None] = {
    (): None,
    ("serve",): SERVE,
    ("gateway",): GATEWAY,
    ("token",): None,
    ("token", "create"): TOKEN,
    ("token", "list"): TOKEN,
    ("token", "revoke"): TOKEN,
    ("token", "rotate"): TOKEN,
    ("token", "events"): TOKEN,
    ("migrate",): MIGRATE,
    ("scan",): None,
}


def _rows() -> dict[str, str]:
    """Each variable of the README's configuration table, with the text of its row."""
    rows = {}
    for line in README.read_text().splitlines():
        if line.startswith("| `TOKENGRPC_"):
            first = line.split("|")[1]
            for variable in re.findall(r"`(TOKENGRPC_[A-Z_]+)`", first):
                rows[variable] = line
    return rows


def test_the_readme_table_lists_every_setting_with_its_flag() -> None:
    rows = _rows()
    for option in OPTIONS:
        assert option.variable_name in rows, f"{option.variable_name} is not in the README"
        if option.flag_name is not None:
            assert f"`{option.flag_name}`" in rows[option.variable_name], option.flag_name
        else:
            assert "`--" not in rows[option.variable_name], f"a flag for {option.field}"


def test_the_readme_table_lists_nothing_else() -> None:
    known = {option.variable_name for option in OPTIONS}
    assert set(_rows()) <= known


def test_every_setting_has_a_variable_and_a_flag_but_secrets_no_flag() -> None:
    for option in OPTIONS:
        assert option.variable_name.startswith("TOKENGRPC_"), option.field
        assert (option.flag_name is None) == option.secret, option.field
        assert set(option.commands) <= set(COMMANDS), option.field
    # A secret is a key (the store's, the webhooks'); a URL's password has its own
    # warning (CONTRACT section 5).
    assert {option.field for option in OPTIONS if option.secret} == {"secret_key", "webhook_secret"}


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, ...], str]:
    """The real ``--help`` of every command, once."""
    found = {}
    for words in HELPS:
        done = run_cli(*words, "--help")
        assert done.returncode == 0, done.stderr
        found[words] = done.stdout
    return found


def _flags_listed(text: str) -> set[str]:
    """The flags of the help's option lines (not those its prose mentions)."""
    return set(re.findall(r"^  (--[a-z-]+)", text, re.MULTILINE))


def _squeezed(text: str) -> str:
    """Without whitespace: argparse wraps lines where it likes, hyphens included."""
    return "".join(text.split())


def _said(option: Option) -> str:
    if option.switch:
        return f"{option.help} ({option.variable_name}=off)"
    default = "required" if option.required else f"default {option.shown_default()}"
    return f"{option.help} ({option.variable_name}; {default})"


@pytest.mark.parametrize(
    "words", [words for words, command in HELPS.items() if command], ids=" ".join
)
def test_every_help_shows_its_commands_settings_from_the_table(
    helps: dict[tuple[str, ...], str], words: tuple[str, ...]
) -> None:
    text, command = helps[words], HELPS[words]
    listed = _flags_listed(text)
    for option in OPTIONS:
        if command not in option.commands:
            assert option.flag_name not in listed, f"{option.flag_name} on {words}"
            continue
        if option.secret:
            assert option.variable_name in text, f"{option.variable_name} not said on {words}"
            continue
        assert option.flag_name in listed, f"{option.flag_name} missing on {words}"
        assert _squeezed(_said(option)) in _squeezed(text), option.field
        if option.choices:
            assert f"{option.flag_name} {{{','.join(option.choices)}}}" in text


def test_help_has_no_markup(helps: dict[tuple[str, ...], str]) -> None:
    """``--help`` is read in a terminal: no reStructuredText (``literal``, :role:`x`)."""
    for words, text in helps.items():
        assert "``" not in text, words
        assert not re.search(r":[a-z]+:`", text), words


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--http-head-timeout", "inf"),
        ("--grace-period", "inf"),
        ("--grace-period", "nan"),
        ("--grpc-max-connection-age", "1e400"),
        ("--grpc-max-receive-bytes", "99999999999"),
        ("--http-max-connections", "0"),
    ],
)
def test_a_limit_out_of_range_is_a_one_line_error(flag: str, value: str, tmp_path: Path) -> None:
    """Infinity or a value past gRPC's C ints crashed the start, or left the
    last-resort exit without a deadline; every limit has a finite range."""
    data = tmp_path / "data"
    done = run_cli("serve", "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0",
                   "--no-http", flag, value)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert flag in done.stderr
    assert "must be a positive number, at most" in done.stderr
    assert "Traceback" not in done.stderr
    assert not data.exists()
