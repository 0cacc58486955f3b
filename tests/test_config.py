"""The settings table is the one source: the README's table says what it holds."""

from __future__ import annotations

import re
from pathlib import Path

from tokengrpc.config import OPTIONS

README = Path(__file__).parent.parent / "README.md"


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
        if option.variable_name is None:
            continue
        assert option.variable_name in rows, f"{option.variable_name} is not in the README"
        if option.flag_name is not None:
            assert f"`{option.flag_name}`" in rows[option.variable_name], option.flag_name


def test_the_readme_table_lists_nothing_else() -> None:
    known = {option.variable_name for option in OPTIONS}
    assert set(_rows()) <= known
