"""``tokengrpc scan``: where tokens sit in files, as a pre-commit hook runs it (CONTRACT 13)."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from tests.processes import clean_env, new_store, run_cli
from tokengrpc import plaintext, scanning

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scan.md"


def token(token_id: int = 42, prefix: str = "tgr_") -> str:
    return plaintext.join(token_id, plaintext.new_secret(prefix))


def scan(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("scan", *args, stdin=stdin, env=clean_env(**env))


def assert_no_secret(done: subprocess.CompletedProcess[str], *tokens: str) -> None:
    for value in tokens:
        secret = value.partition("|")[2]
        assert secret not in done.stdout + done.stderr
        assert secret[:-6] not in done.stdout + done.stderr


def test_a_token_made_by_the_service_is_found_where_it_sits(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    new_store(data)
    created = run_cli("token", "create", "--data-dir", data, "--name", "ci", "--owner", "ops")
    assert created.returncode == 0, created.stderr
    made = created.stdout.strip()
    leaky = tmp_path / "deploy.env"
    leaky.write_text(f"# deploy settings\nURL=https://example.test\nTOKEN={made}\n")

    done = scan(str(leaky))

    assert done.returncode == 1, done.stderr
    assert done.stdout == f"{leaky}:3:7\n"
    assert done.stderr == ""
    assert_no_secret(done, made)


def test_lines_and_columns_in_files_directories_and_stdin(tmp_path: Path) -> None:
    first, second, third = token(1), token(9_223_372_036_854_775_807), token(77)
    tree = tmp_path / "repo"
    (tree / "src" / "deep").mkdir(parents=True)
    (tree / "a.py").write_text(f'KEY = "{first}"  # and again: {first}\n')
    (tree / "src" / "deep" / "b.yaml").write_text(f"x: 1\n\n  token: '{second}'\n")
    (tree / "src" / "clean.txt").write_text("nothing here\n")
    # A column counts characters, not bytes: "é" and "€" are one each.
    (tree / "src" / "utf8.md").write_text(f"café € {third}\r\n")
    stdin = f"line one\n\t{third},{first}\n"

    done = scan(str(tree), "-", stdin=stdin)

    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"{tree}/a.py:1:8",
        f"{tree}/a.py:1:{8 + len(first) + 16}",
        f"{tree}/src/utf8.md:1:8",
        f"{tree}/src/deep/b.yaml:3:11",
        "-:2:2",
        f"-:2:{3 + len(third)}",
    ]
    assert_no_secret(done, first, second, third)


def test_nothing_found_is_exit_0_and_silent(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("no tokens, only 42|tgr_ and talk\n")
    done = scan(str(tmp_path), "-", stdin="")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def _bad_checksum(value: str) -> str:
    last = value[-1]
    return value[:-1] + ("A" if last != "A" else "B")


def _secret(value: str) -> str:
    return value.partition("|")[2]


#: A real token made into something that is not one (the word rule: no ASCII
#: letter, digit or underscore may touch it; docs/scan.md).
NOT_TOKENS: dict[str, Callable[[str], str]] = {
    "bad checksum": _bad_checksum,
    "other prefix": lambda t: token(42, "abc_"),
    "letter before": lambda t: "x" + t,
    "leading zero": lambda t: "0" + t,
    "underscore before": lambda t: "_" + t,
    "letter after": lambda t: t + "x",
    "digit after": lambda t: t + "7",
    "underscore after": lambda t: t + "_",
    "id 0": lambda t: "0|" + _secret(t),
    "id past int64": lambda t: "9223372036854775808|" + _secret(t),
    "20-digit id": lambda t: "10000000000000000001|" + _secret(t),
    "short secret": lambda t: t[:-1],
    "no id": _secret,
}


def test_what_is_not_a_token_is_not_reported(tmp_path: Path) -> None:
    """One line per near miss, then the real thing: only the last line is reported."""
    made = token()
    names = list(NOT_TOKENS)
    path = tmp_path / "near.txt"
    path.write_text("".join(f"value: {NOT_TOKENS[name](made)}\n" for name in names) + made)
    done = scan(str(path))
    reported = [int(line.split(":")[-2]) for line in done.stdout.splitlines()]
    assert [names[n - 1] for n in reported if n <= len(names)] == []
    assert done.stdout == f"{path}:{len(names) + 1}:1\n"
    assert done.returncode == 1


def test_word_boundaries_that_do_not_hide_a_token(tmp_path: Path) -> None:
    """Punctuation, quotes, an equals sign, a line's ends: still a token."""
    made = token(5)
    lines = [made, f"={made}", f"'{made}'", f"Bearer {made}.", f"-{made}-", f"({made})"]
    (tmp_path / "t.txt").write_text("\n".join(lines))  # the last line has no newline
    done = scan(str(tmp_path / "t.txt"))
    assert done.returncode == 1
    columns = [1, 2, 2, 8, 2, 2]
    path = tmp_path / "t.txt"
    assert done.stdout.splitlines() == [f"{path}:{n}:{c}" for n, c in enumerate(columns, 1)]


def test_an_unreadable_path_is_exit_2_with_a_message_and_the_rest_is_scanned(
    tmp_path: Path,
) -> None:
    made = token()
    found = tmp_path / "found.txt"
    found.write_text(made)
    missing = tmp_path / "missing.txt"

    done = scan(str(missing), str(found))

    assert done.returncode == 2
    assert done.stdout == f"{found}:1:1\n"
    assert f"{missing}: No such file or directory" in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "NotFoundError" not in done.stderr
    assert_no_secret(done, made)


#: ``python -c`` this ARGS...: run ``python -m tokengrpc ARGS...`` without the
#: capabilities that let root read any file, so ``chmod 000`` holds for root too
#: (dropped from the bounding set, they are gone after exec).
_WITHOUT_OVERRIDE = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl")
os.execv(sys.executable, [sys.executable, "-m", "tokengrpc", *sys.argv[1:]])
"""


def test_unreadable_directories_and_files_links_and_pipes_inside_a_tree(tmp_path: Path) -> None:
    made = token()
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "inside.txt").write_text(made)
    (tree / "secret.txt").write_text(made)
    (tree / "sealed.txt").write_text(made)
    (tree / "z.txt").write_text(made)
    (tree / "loop").symlink_to(tree)  # followed, it would go round forever
    (tree / "self").symlink_to(tree / "self")  # a link to itself
    (tree / "out").symlink_to(tmp_path)  # outside is not read through a link
    os.mkfifo(tree / "pipe")  # opened, it would wait for a writer forever
    (tree / "locked").chmod(0)
    (tree / "sealed.txt").chmod(0)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT_OVERRIDE, "scan", str(tree)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
    finally:
        (tree / "locked").chmod(0o700)
        (tree / "sealed.txt").chmod(0o600)

    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [f"{tree}/secret.txt:1:1", f"{tree}/z.txt:1:1"]
    errors = done.stderr.splitlines()
    assert len(errors) == 2, done.stderr
    assert errors[0].endswith(f"{tree}/sealed.txt: Permission denied")
    assert errors[1].endswith(f"{tree}/locked: Permission denied")


def test_a_named_link_is_followed_and_a_named_loop_is_an_error(tmp_path: Path) -> None:
    made = token()
    (tmp_path / "real.txt").write_text(made)
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    done = scan(str(tmp_path / "link.txt"), str(tmp_path / "loop"))
    assert done.returncode == 2
    assert done.stdout == f"{tmp_path / 'link.txt'}:1:1\n"
    assert f"{tmp_path / 'loop'}: Too many levels of symbolic links" in done.stderr


def test_binary_files_are_skipped(tmp_path: Path) -> None:
    made = token()
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + made.encode())
    late = tmp_path / "late-nul.txt"  # a NUL past git's first 8000 bytes: text
    late.write_bytes(b"a" * scanning.BINARY_SNIFF + b"\0\n" + made.encode())
    done = scan(str(tmp_path), "-", stdin=f"\0{made}")
    assert done.returncode == 1
    assert done.stdout == f"{late}:2:1\n"


def test_prefix_flag_and_the_configured_prefix(tmp_path: Path) -> None:
    ours, theirs = token(3, "tgr_"), token(4, "acme-")
    path = tmp_path / "both.txt"
    path.write_text(f"{ours}\n{theirs}\n")

    assert scan(str(path)).stdout == f"{path}:1:1\n"
    assert scan("--prefix", "acme-", str(path)).stdout == f"{path}:2:1\n"
    configured = scan(str(path), TOKENGRPC_TOKEN_PREFIX="acme-")
    assert configured.stdout == f"{path}:2:1\n"
    flagged = scan("--prefix", "tgr_", str(path), TOKENGRPC_TOKEN_PREFIX="acme-")
    assert flagged.stdout == f"{path}:1:1\n"

    refused = scan("--prefix", "a|b", str(path))
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "--prefix: the prefix must be" in refused.stderr
    assert "a|b" not in refused.stderr


def test_a_token_across_the_chunk_boundary_is_found_once(tmp_path: Path) -> None:
    made = token(123)
    path = tmp_path / "big.txt"
    offset = scanning.CHUNK_SIZE - 30  # the first read ends inside the secret
    before = ("x" * 99 + "\n") * (offset // 100) + "y" * (offset % 100 - 1) + " "
    path.write_text(before + made + "\n" + made)
    done = scan(str(path))
    assert done.returncode == 1
    lines = offset // 100 + 1
    column = offset % 100 + 1
    assert done.stdout.splitlines() == [f"{path}:{lines}:{column}", f"{path}:{lines + 1}:1"]


def test_chunked_reads_find_what_one_read_finds() -> None:
    """Whatever the chunk size (down to one byte), the same findings as one read."""
    rng = random.Random(20)
    pieces = [token(rng.randrange(1, 10**6)), token(plaintext.MAX_ID), "0", "1", "|", "tgr_"]
    pieces += ["é", "\n", " ", "x", "_"]
    pieces.append(_bad_checksum(token(8)))
    found = 0
    for _ in range(30):
        # Past the binary sniff, which reads at least its 8000 bytes at once.
        padding = "\n" * rng.randrange(scanning.BINARY_SNIFF, scanning.BINARY_SNIFF + 100)
        text = (padding + "".join(rng.choice(pieces) for _ in range(60))).encode()
        whole = _findings(text, len(text) + 1)
        found += len(whole)
        for size in (1, 2, 7, 64, 65, 97, 200, 8001):
            assert _findings(text, size) == whole, (size, text)
    assert found >= 10  # the texts held tokens to find


def _findings(text: bytes, chunk_size: int) -> list[scanning.Finding]:
    return list(scanning.Scanner("tgr_", chunk_size=chunk_size).scan(io.BytesIO(text).read))


def test_a_megabyte_of_near_misses_is_scanned_in_linear_time(tmp_path: Path) -> None:
    """Bounded repetition only: no input makes the expression backtrack for long."""
    near = [
        "1|tgr_" * 180_000,
        "7" * 1_000_000,
        ("12|tgr_" + "a" * 45 + " ") * 20_000,
        "1|tgr_" + "b" * 1_000_000,
        ("9|tgr_" + "c" * 46 + " ") * 20_000,  # the shape, a wrong checksum each
    ]
    for number, text in enumerate(near):
        (tmp_path / f"{number}.txt").write_text(text)
    done = run_cli("scan", str(tmp_path))  # a generous bound: the subprocess's own timeout
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_docs_publish_the_expression_and_the_checksum_rule() -> None:
    text = DOCS.read_text()
    assert scanning.expression("tgr_") in text.splitlines()
    body = "tgr_" + "a" * 40
    assert f"`{body}`" in text
    assert f"`{plaintext.checksum(body)}`" in text
    hook = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert hook is not None
    for line in ("repo: local", "entry: tokengrpc scan", "language: system"):
        assert line in hook.group(1)


def test_the_published_gitleaks_rule_finds_the_same_shapes() -> None:
    """Go's syntax here is Python's too: the rule finds a token, not one inside a word."""
    rules = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert rules is not None
    (rule,) = tomllib.loads(rules.group(1))["rules"]
    gitleaks = re.compile(rule["regex"])
    made = token(12)
    for text in (made, f"TOKEN={made}\n", f"'{made}'"):
        found = gitleaks.search(text)
        assert found is not None
        assert found.group(rule["secretGroup"]) == made
    for name in ("letter before", "leading zero", "underscore after", "20-digit id", "no id"):
        assert gitleaks.search(NOT_TOKENS[name](made)) is None, name
