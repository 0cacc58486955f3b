"""The README is one session a newcomer pastes: its ``sh`` blocks, run in order by
bash against a fresh ``serve``, exit 0 and print what the README says they print.

The README writes what a command prints under it, as ``# → ...`` comment lines; a
command with none must print nothing. Whitespace is not compared, ``…`` stands
for anything (secrets, counts, trace ids, what is left out), and a time like
``2026-03-31T12:00:00.000000Z`` for any time of that shape (with a fraction of a
second or without). Blocks fenced otherwise (``text``, ``yaml``) are not part of
the session.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.processes import clean_env, serve

README = Path(__file__).resolve().parent.parent / "README.md"
EXPECT = "# → "
ANYTHING = "…"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
#: Shown in place of a secret in this test's messages: the reader saw it, the log need not.
SECRET = re.compile(r"tgr_[0-9A-Za-z]+")
#: Fences a reader takes for shell: a session block is ``sh``, anything else ``text``.
SHELL_FENCES = {"bash", "shell", "console", "zsh", "sh-session", "shell-session"}
#: The surfaces the README must show a newcomer, each in the session.
SHOWN = (
    "grpcurl ",
    "/v1/tokens",
    "/api/token",
    "/api/v1/me/tokens",
    "/_/token",
    "/oauth/introspect",
    "/oauth/revoke",
    "/healthz",
    "/metrics",
)


@dataclass(frozen=True)
class Step:
    #: README.md's line where the command starts.
    line: int
    command: str
    #: What it prints, as the README writes it; None: nothing.
    expected: str | None = None


def session(text: str) -> list[Step]:
    """The commands of the ``sh`` blocks in order, each with its ``# →`` lines."""
    steps: list[Step] = []
    fence: str | None = None  # the open block's info string, None outside blocks
    block_start = 0  # index in steps of the open block's first command
    command: list[str] = []  # lines of a command continued with a backslash
    start = 0  # its line number
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
            assert fence not in SHELL_FENCES, f"line {number}: a session block is ```sh"
            block_start = len(steps)
            continue
        if fence != "sh":
            continue
        if command:
            command.append(line)
        elif line.startswith(EXPECT):
            assert len(steps) > block_start, f"line {number}: {EXPECT!r} follows no command"
            seen = steps[-1].expected
            said = line[len(EXPECT) :]
            steps[-1] = replace(steps[-1], expected=said if seen is None else f"{seen}\n{said}")
        elif line.strip() and not line.lstrip().startswith("#"):
            command = [line]
            start = number
        if command and not line.endswith("\\"):
            steps.append(Step(start, "\n".join(command)))
            command = []
    assert fence is None, "README.md ends inside a block"
    assert not command, "README.md's last command ends with a backslash"
    return steps


def squeezed(text: str) -> str:
    return "".join(text.split())


def matches(expected: str, printed: str) -> bool:
    """Whether ``printed`` is what ``expected`` says, as the module docstring reads it."""
    parts = []
    for piece in re.split(f"({ANYTHING}|{TIME})", squeezed(expected)):
        if piece == ANYTHING:
            parts.append(".*?")
        elif re.fullmatch(TIME, piece):  # a fraction has as many digits as it needs
            fraction = r"\.\d+" if "." in piece else ""
            parts.append(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d{fraction}Z")
        else:
            parts.append(re.escape(piece))
    return re.fullmatch("".join(parts), squeezed(printed), re.DOTALL) is not None


def script(steps: list[Step], out: Path) -> str:
    """One bash script: each step in the session's shell (so its variables stay),
    its output and exit status kept apart. ``set -u`` stops at an unset variable."""
    lines = ["set -u -o pipefail"]
    for index, step in enumerate(steps):
        output, status = (shlex.quote(str(out / f"{index}.{kind}")) for kind in ("out", "rc"))
        lines.append(f"{{ {step.command}\n}} >{output} 2>&1 </dev/null; echo $? >{status}")
    return "\n".join(lines) + "\n"


def hidden(text: str) -> str:
    return SECRET.sub("tgr_…", text.strip()) or "(nothing)"


def problem(step: Step, index: int, out: Path, shell: str) -> str | None:
    """What is wrong with one step's answer, secrets hidden; None when it is right.
    ``shell``: what bash itself said (a syntax error, an unset variable)."""
    output_file, status_file = out / f"{index}.out", out / f"{index}.rc"
    printed = output_file.read_text() if output_file.exists() else ""
    shown = hidden(printed)
    where = f"README.md line {step.line}:\n{step.command}\n"
    if not status_file.exists():
        return f"{where}the session stopped here, printing:\n{shown}\nbash said:\n{hidden(shell)}"
    status = int(status_file.read_text())
    if status != 0:
        return f"{where}exited {status}, printing:\n{shown}"
    if step.expected is None:
        if printed.strip():
            return f"{where}printed, where the README shows nothing:\n{shown}"
    elif not matches(step.expected, printed):
        return f"{where}printed:\n{shown}\nwhere the README shows:\n{step.expected}"
    return None


def test_the_session_shows_every_surface() -> None:
    text = README.read_text()
    assert "make serve" in text
    assert "make test" in text
    commands = "\n".join(step.command for step in session(text))
    assert [surface for surface in SHOWN if surface not in commands] == []


def test_expectations_read_as_documented() -> None:
    steps = session('```sh\nA=1 \\\n  B=2\n# → {…, "t": "2026-03-31T12:00:00Z"}\n```\n')
    assert steps == [Step(2, "A=1 \\\n  B=2", '{…, "t": "2026-03-31T12:00:00Z"}')]
    expected = '{…, "t": "2026-03-31T12:00:00Z"}'
    assert matches(expected, '{\n  "a": 1,\n  "t": "2031-12-01T00:59:59Z"\n}')
    assert not matches(expected, '{"a": 1, "t": "2031-12-01T00:59:59.5Z"}')
    assert not matches(expected, '{"a": 1, "t": "2031-12-01T00:59:59Z"} and more')
    assert matches('"t": "2026-03-31T12:00:00.000000Z"', '"t": "2031-12-01T00:59:59.123Z"')
    assert session("```text\nmake serve\n```\n") == []


def fresh_clone(folder: Path) -> tuple[Path, str]:
    """A clone as ``make serve`` leaves it (this one's files, linked, and its
    ``.venv``; ``serve`` makes ``var/``), and a ``PATH`` without the ``.venv``,
    which the README must add itself."""
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "grpcurl").exists(), "grpcurl comes with the dev dependencies"
    clone = folder / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(venv)
    for entry in README.parent.iterdir():
        if entry.name not in {".venv", ".git", "var"}:
            (clone / entry.name).symlink_to(entry)
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if Path(entry).resolve() != (venv / "bin").resolve()
    )
    return clone, path


async def test_the_readme_runs_top_to_bottom(tmp_path: Path) -> None:
    """After ``make serve`` (here on free ports), a reader has the clone, ``var/``
    and the addresses it printed: the test sets nothing else."""
    steps = session(README.read_text())
    clone, path = fresh_clone(tmp_path)
    out = tmp_path / "steps"
    out.mkdir()
    session_file = tmp_path / "session.sh"
    session_file.write_text(script(steps, out))
    server = await serve(
        "--data-dir",
        str(clone / "var"),
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        until="http",
    )
    env = clean_env(PATH=path, GRPC=server.address("grpc"), HTTP=server.address("http"))
    try:
        bash = await asyncio.create_subprocess_exec(
            "bash",
            str(session_file),
            cwd=clone,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            said, _ = await asyncio.wait_for(bash.communicate(), timeout=120)
        except TimeoutError:
            os.killpg(bash.pid, signal.SIGKILL)  # bash and the command it waits for
            await bash.wait()
            raise
    finally:
        status, _ = await server.stop()
    assert status == 0
    for index, step in enumerate(steps):
        if (wrong := problem(step, index, out, said.decode())) is not None:
            pytest.fail(wrong, pytrace=False)
