"""Dependencies point one way: the gateway speaks only the RPCs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


#: What the gateway may use of the service's package: the generated stubs, and
#: the standard-library-only reading of addresses (one rule on both surfaces).
GATEWAY_MAY_IMPORT = ("tokengrpc.v1", "tokengrpc.addresses")


def test_gateway_imports_only_the_generated_stubs_and_addresses_from_tokengrpc() -> None:
    for path in (ROOT / "gateway").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("tokengrpc"):
                assert name.startswith(GATEWAY_MAY_IMPORT), f"{path.name} imports {name}"


def test_addresses_need_nothing_but_the_standard_library() -> None:
    allowed = {"__future__", "functools", "ipaddress", "collections.abc"}
    assert _imports(ROOT / "tokengrpc" / "addresses.py") <= allowed


#: The composition root: the commands start the gateway; nothing else in the service may.
COMMANDS = ROOT / "tokengrpc" / "commands"


def test_the_service_never_imports_the_gateway() -> None:
    for path in (ROOT / "tokengrpc").rglob("*.py"):
        if path.is_relative_to(COMMANDS):
            continue
        assert not any(n.startswith("gateway") for n in _imports(path)), path.name


def test_only_the_entry_point_imports_the_commands() -> None:
    for path in (ROOT / "tokengrpc").rglob("*.py"):
        if path.is_relative_to(COMMANDS) or path.name == "cli.py":
            continue
        assert not any(n.startswith("tokengrpc.commands") for n in _imports(path)), path.name
