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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth (a lazy import is one too)."""
    name = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = name.split(".")[: (None if path.name == "__init__.py" else -1)]
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([module] if module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return (found & known) - {name}


def test_no_module_imports_one_that_imports_it_back() -> None:
    """A circle (bench's run.py and its sections had one) makes import order matter
    and hides which module is the shared piece: that piece gets a module of its own."""
    paths = [
        path
        for package in ("tokengrpc", "gateway", "bench")
        for path in (ROOT / package).rglob("*.py")
        if "v1" not in path.relative_to(ROOT).parts
    ]
    known = {_module_name(path) for path in paths}
    graph = {_module_name(path): _project_imports(path, known) for path in paths}
    for start in sorted(graph):
        seen: set[str] = set()
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        while stack:
            module, trail = stack.pop()
            for imported in graph[module]:
                assert imported != start, " -> ".join((*trail, imported))
                if imported not in seen:
                    seen.add(imported)
                    stack.append((imported, (*trail, imported)))
