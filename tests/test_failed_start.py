"""A failed start changes nothing (CONTRACT sections 4, 5 and 10).

Only ``serve`` and ``migrate`` make a store, and ``serve`` only once its ports
are its own; the ``token`` commands refuse a store that is not there; a start
the disk refuses is one line and a non-zero exit.
"""

from __future__ import annotations

import base64
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.postgres import PASSWORD
from tests.processes import clean_env, new_store, run_cli
from tests.test_full_disk import _fill, _small_disk


@pytest.fixture
def busy() -> Iterator[str]:
    """An address somebody else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def _one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("port", ["grpc", "http"])
def test_serve_that_cannot_bind_makes_no_store(port: str, busy: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    listens = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"} | {port: busy}
    served = run_cli("serve", "--data-dir", str(data), "--grpc-listen", listens["grpc"],
                     "--http-listen", listens["http"])  # fmt: skip
    assert served.returncode != 0
    assert "could not listen" in served.stderr
    assert not data.exists(), "no data dir, store, key or bootstrap token"


async def test_serve_that_cannot_bind_leaves_the_database_untouched(
    busy: str, database_url: str, tmp_path: Path
) -> None:
    served = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--grpc-listen", busy,
                     "--no-http", env=clean_env(TOKENGRPC_DATABASE_URL=database_url))  # fmt: skip
    assert served.returncode != 0
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    assert tables == 0, "no migration, no bootstrap token"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["token", "create", "--name", "x", "--owner", "o"],
        ["token", "create", "--name", "x", "--service"],
        ["token", "list"],
        ["token", "revoke", "1"],
        ["token", "rotate", "1"],
        ["token", "events"],
    ],
)
def test_token_commands_refuse_a_missing_store(command: list[str], tmp_path: Path) -> None:
    # In a directory of its own, as an operator in the wrong one would run it.
    for where in ([], ["--data-dir", str(tmp_path / "nonexistent")]):
        done = run_cli(*command, *where, cwd=tmp_path)
        assert done.returncode != 0
        assert done.stdout == "", "no token that no server knows"
        assert "no store in" in done.stderr
        _one_line_error(done.stderr)
    assert list(tmp_path.iterdir()) == [], "nothing made: no ./var, no --data-dir"


def test_token_commands_refuse_an_empty_data_dir(tmp_path: Path) -> None:
    """A directory that exists but holds no store is the wrong one too."""
    done = run_cli("token", "create", "--data-dir", str(tmp_path), "--name", "x", "--owner", "o")
    assert done.returncode != 0
    assert list(tmp_path.iterdir()) == []
    new_store(tmp_path)
    done = run_cli("token", "create", "--data-dir", str(tmp_path), "--name", "x", "--owner", "o")
    assert done.returncode == 0, done.stderr


async def test_token_commands_on_postgres_make_no_data_dir(
    database_url: str, tmp_path: Path
) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    env = clean_env(TOKENGRPC_SECRET_KEY=key)
    url = ["--database", database_url]
    refused = run_cli("token", "list", *url, env=env, cwd=tmp_path)
    assert refused.returncode != 0, "a database tokengrpc never set up is the wrong one"
    assert "tokengrpc migrate" in refused.stderr
    # Beside the warning that the URL's password shows in the process list.
    warning, error = refused.stderr.splitlines()
    assert "TOKENGRPC_DATABASE_URL" in warning
    assert "Traceback" not in error
    assert PASSWORD not in refused.stderr

    assert run_cli("migrate", *url, env=env, cwd=tmp_path).returncode == 0
    for command in (["token", "create", "--name", "ci", "--service"], ["token", "list"],
                    ["token", "rotate", "ci"], ["token", "events"]):  # fmt: skip
        done = run_cli(*command, *url, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    without_key = run_cli("token", "list", *url, cwd=tmp_path)
    assert without_key.returncode != 0
    assert "TOKENGRPC_SECRET_KEY" in without_key.stderr
    assert _entries(tmp_path) == [], "no ./var, with a key or without"


def test_serve_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    with _small_disk(tmp_path / "disk") as disk:
        filler = _fill(disk)
        try:
            served = run_cli("serve", "--data-dir", str(disk / "data"), "--grpc-listen",
                             "127.0.0.1:0", "--http-listen", "127.0.0.1:0")  # fmt: skip
        finally:
            filler.unlink()
    assert served.returncode != 0
    assert "disk is full" in served.stderr
    _one_line_error(served.stderr)
    assert "listening" not in served.stdout
