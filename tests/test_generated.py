"""``make check-generated``: the committed stubs are exactly what the proto generates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = Path("tokengrpc") / "v1"


def _check(tree: Path) -> subprocess.CompletedProcess[str]:
    # STAMP= : the copy's environment is this one, set up already.
    return subprocess.run(
        ["make", "-s", "check-generated", "STAMP="],
        cwd=tree, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_stale_or_left_behind_generated_file_fails_the_check(tmp_path: Path) -> None:
    tree = tmp_path / "clone"
    tree.mkdir()
    shutil.copy(ROOT / "Makefile", tree)
    shutil.copytree(ROOT / "proto", tree / "proto")
    shutil.copytree(
        ROOT / GENERATED, tree / GENERATED, ignore=shutil.ignore_patterns("__pycache__")
    )
    (tree / ".venv").symlink_to(sys.prefix)
    clean = _check(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "up to date" in clean.stdout

    left_behind = tree / GENERATED / "old_pb2.py"
    left_behind.write_text("# from a proto file since removed\n")
    extra = _check(tree)
    assert extra.returncode != 0
    assert "Only in tokengrpc/v1: old_pb2.py" in extra.stdout
    assert "make generate" in extra.stdout

    left_behind.unlink()
    with (tree / GENERATED / "tokens_pb2.pyi").open("a") as stub:
        stub.write("# edited by hand\n")
    stale = _check(tree)
    assert stale.returncode != 0
    assert "tokens_pb2.pyi" in stale.stdout
