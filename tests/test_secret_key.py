"""The secret key cannot be lost or swapped silently: the store knows its fingerprint."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from pathlib import Path

import grpc

from tests.helpers import bearer
from tests.processes import clean_env, new_store, run_cli, serve
from tokengrpc.v1 import tokens_pb2 as pb
from tokengrpc.v1 import tokens_pb2_grpc


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


async def _store_with_a_service_token(data: Path) -> tuple[str, int]:
    """Serve once, create a service token (a sealed value), stop; return its plaintext and id."""
    server = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http")
    admin = (data / "bootstrap-token").read_text().strip()
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        created = await stub.CreateToken(
            pb.CreateTokenRequest(name="ci", service_token=True), metadata=bearer(admin)
        )
    code, _ = await server.stop()
    assert code == 0
    return created.plaintext, created.token.id


def _refused(data: Path, env: dict[str, str] | None = None) -> str:
    """Start ``serve`` and a token command; both must refuse; return serve's stderr."""
    env = env or clean_env()
    served = run_cli("serve", "--data-dir", str(data), "--grpc-listen", "127.0.0.1:0",
                     "--no-http", env=env)  # fmt: skip
    assert served.returncode != 0, served.stdout
    assert "listening" not in served.stdout
    listed = run_cli("token", "list", "--data-dir", str(data), env=env)
    assert listed.returncode != 0
    assert "TOKENGRPC_SECRET_KEY" in listed.stderr
    return served.stderr


async def _value_still_readable(data: Path, token_id: int, plaintext: str) -> None:
    server = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http")
    admin = (data / "bootstrap-token").read_text().strip()
    async with grpc.aio.insecure_channel(server.address("grpc")) as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        value = await stub.GetTokenValue(
            pb.GetTokenValueRequest(id=token_id), metadata=bearer(admin)
        )
    assert value.value == plaintext
    assert (await server.stop())[0] == 0


def _fingerprint_rows(data: Path) -> list[bytes]:
    with sqlite3.connect(data / "tokens.db") as db:
        return [bytes(row[0]) for row in db.execute("SELECT fingerprint FROM secret_key")]


async def test_a_removed_key_file_refuses_to_start_and_keeps_the_values(tmp_path: Path) -> None:
    data = tmp_path / "data"
    plaintext, token_id = await _store_with_a_service_token(data)
    key_file = data / "secret.key"
    original = key_file.read_text()
    (fingerprint,) = _fingerprint_rows(data)
    assert base64.b64decode(original) not in fingerprint, "the store never holds the key"

    key_file.unlink()
    stderr = _refused(data)
    assert "TOKENGRPC_SECRET_KEY" in stderr
    assert str(key_file) in stderr
    assert "missing" in stderr
    assert not key_file.exists(), "no new key was made"
    assert original.strip() not in stderr

    key_file.write_text(original)
    key_file.chmod(0o600)
    await _value_still_readable(data, token_id, plaintext)


async def test_a_swapped_key_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    plaintext, token_id = await _store_with_a_service_token(data)
    key_file = data / "secret.key"
    original = key_file.read_text()

    other = _new_key()
    stderr = _refused(data, clean_env(TOKENGRPC_SECRET_KEY=other))
    assert "not the one this store's values were sealed with" in stderr
    assert "TOKENGRPC_SECRET_KEY" in stderr
    assert other not in stderr

    key_file.write_text(other + "\n")
    stderr = _refused(data)
    assert str(key_file) in stderr
    assert other not in stderr

    # The original key, from the variable this time, is accepted.
    key_file.unlink()
    env = clean_env(TOKENGRPC_SECRET_KEY=original.strip())
    listed = run_cli("token", "list", "--data-dir", str(data), "--service", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "\tci\t" in listed.stdout
    key_file.write_text(original)
    key_file.chmod(0o600)
    await _value_still_readable(data, token_id, plaintext)


async def test_a_store_without_a_fingerprint_is_checked_against_its_sealed_values(
    tmp_path: Path,
) -> None:
    """A store written before fingerprints were kept: the sealed values decide."""
    data = tmp_path / "data"
    plaintext, token_id = await _store_with_a_service_token(data)
    with sqlite3.connect(data / "tokens.db") as db:
        db.execute("DELETE FROM secret_key")
    stderr = _refused(data, clean_env(TOKENGRPC_SECRET_KEY=_new_key()))
    assert "not the one" in stderr
    assert _fingerprint_rows(data) == [], "a wrong key's fingerprint is never recorded"
    await _value_still_readable(data, token_id, plaintext)
    assert len(_fingerprint_rows(data)) == 1


def test_a_first_start_makes_the_key_and_a_restart_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    new_store(data)
    first = run_cli("token", "create", "--data-dir", str(data), "--name", "a", "--service")
    assert first.returncode == 0, first.stderr
    key = (data / "secret.key").read_text()
    assert len(_fingerprint_rows(data)) == 1
    again = run_cli("token", "create", "--data-dir", str(data), "--name", "b", "--service")
    assert again.returncode == 0, again.stderr
    assert (data / "secret.key").read_text() == key
    assert "warning" not in again.stderr.lower()


def test_an_empty_store_with_a_missing_key_file_makes_one(tmp_path: Path) -> None:
    """Only a store that depends on a key refuses; a fresh one still starts."""
    data = tmp_path / "data"
    new_store(data)
    assert run_cli("token", "list", "--data-dir", str(data)).returncode == 0
    (data / "secret.key").unlink()
    with sqlite3.connect(data / "tokens.db") as db:
        db.execute("DELETE FROM secret_key")
    assert run_cli("token", "list", "--data-dir", str(data)).returncode == 0
    assert (data / "secret.key").exists()


async def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    data = tmp_path / "data"
    new_store(data)
    assert run_cli("token", "list", "--data-dir", str(data)).returncode == 0
    key_file = data / "secret.key"
    key_file.chmod(0o644)
    listed = run_cli("token", "list", "--data-dir", str(data))
    assert listed.returncode == 0
    assert f"the key file {key_file} is readable by group or others" in listed.stderr
    assert key_file.read_text().strip() not in listed.stderr

    server = await serve("--data-dir", str(data), "--grpc-listen", "127.0.0.1:0", "--no-http")
    assert any("readable by group or others" in line for line in server.lines)
    assert (await server.stop())[0] == 0
