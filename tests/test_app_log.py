"""The command's own messages (warnings, errors) go through ``logging`` in the
chosen format, so that with ``--log-format json`` every stderr line parses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.processes import clean_env, new_store, run_cli, serve

#: What the process prints on stdout for scripts (it shares the pipe with stderr here).
STDOUT_LINES = ("bootstrap token written to ", "grpc listening on ", "http listening on ",
                "shutting down")  # fmt: skip


def _records(lines: list[str]) -> list[dict[str, object]]:
    """Every line but the stdout ones, as JSON (each must parse)."""
    return [json.loads(line) for line in lines if line and not line.startswith(STDOUT_LINES)]


def _one(records: list[dict[str, object]], words: str) -> dict[str, object]:
    found = [r for r in records if words in str(r.get("message", ""))]
    assert len(found) == 1, records
    return found[0]


async def test_a_key_file_warning_is_a_json_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    new_store(data)
    assert run_cli("token", "list", "--data-dir", str(data)).returncode == 0
    key_file = data / "secret.key"
    key_file.chmod(0o644)
    key = key_file.read_text().strip()

    listed = run_cli("token", "list", "--data-dir", str(data),
                     env=clean_env(TOKENGRPC_LOG_FORMAT="json"))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID\tSTATUS\t")  # the command's answer stays plain
    notice = _one(_records(listed.stderr.splitlines()), "readable by group or others")
    assert (notice["level"], notice["logger"]) == ("WARNING", "tokengrpc")
    assert notice["message"] == f"the key file {key_file} is readable by group or others;" \
        " chmod 600 it"  # fmt: skip
    assert key not in listed.stderr

    server = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http",
                         "--log-format", "json")  # fmt: skip
    code, output = await server.stop()
    assert code == 0, output
    records = _records([*server.lines, *output.splitlines()])
    notice = _one(records, "readable by group or others")
    assert (notice["level"], notice["logger"]) == ("WARNING", "tokengrpc")
    assert {"time", "level", "logger", "message"} <= notice.keys()


async def test_the_open_file_warning_is_a_json_line(tmp_path: Path) -> None:
    server = await serve(
        "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--no-http",
        "--log-format", "json", open_files=(256, 512),
    )  # fmt: skip
    code, output = await server.stop()
    assert code == 0, output
    warning = _one(_records([*server.lines, *output.splitlines()]), "open-file limit (512)")
    assert (warning["level"], warning["logger"]) == ("WARNING", "tokengrpc")


def test_an_error_after_start_is_a_json_line(tmp_path: Path) -> None:
    """An HTTP port already taken is found once logging is set up: an ERROR line, exit 2.
    (Not the gRPC port: grpc's C core writes its own line about that.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        served = run_cli("serve", "--data-dir", str(tmp_path), "--grpc-listen", "127.0.0.1:0",
                         "--http-listen", f"127.0.0.1:{port}", "--log-format", "json")  # fmt: skip
    assert served.returncode == 2, served.stderr
    error = _one(_records(served.stderr.splitlines()), f"could not listen on 127.0.0.1:{port}")
    assert (error["level"], error["logger"]) == ("ERROR", "tokengrpc")
    print(error)


def test_a_bad_variable_is_still_a_plain_line(tmp_path: Path) -> None:
    """Before the settings are read there is no chosen format: a plain line."""
    done = run_cli("serve", "--data-dir", str(tmp_path),
                   env=clean_env(TOKENGRPC_LOG_FORMAT="yaml"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("tokengrpc: a TOKENGRPC_ variable is not valid")


def test_a_token_command_s_refusal_goes_through_logging(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    new_store(data)
    done = run_cli("token", "revoke", "999", "--data-dir", data,
                   env=clean_env(TOKENGRPC_LOG_FORMAT="json"))  # fmt: skip
    assert done.returncode == 1
    (record,) = _records(done.stderr.splitlines())
    assert (record["level"], record["logger"]) == ("ERROR", "tokengrpc")
    assert "not found" in str(record["message"])

    plain = run_cli("token", "revoke", "999", "--data-dir", data)
    assert plain.returncode == 1
    assert " ERROR tokengrpc: " in plain.stderr
    assert "not found" in plain.stderr


def test_the_last_resort_exit_still_says_why() -> None:
    """``os._exit`` flushes nothing: the timer's line must be out before it."""
    script = (
        "import time\n"
        "from tokengrpc import logs\n"
        "from tokengrpc.commands.shutdown import exit_anyway_after\n"
        "logs.configure('json')\n"
        "exit_anyway_after(0.2)\n"
        "time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=20, check=False, env=clean_env())  # fmt: skip
    assert done.returncode == 1, done.stderr
    (record,) = _records(done.stderr.splitlines())
    assert (record["level"], record["logger"]) == ("ERROR", "tokengrpc")
    assert record["message"] == "shutdown hung; exiting"
