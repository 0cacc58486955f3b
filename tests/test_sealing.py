"""Sealed values and the secret key they are sealed with."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokengrpc.sealing import Sealer, SecretKeyError, create_key, decode_key, find_key


def test_sealing_binds_values_to_their_row(tmp_path: Path) -> None:
    key = create_key(tmp_path)
    found = find_key(tmp_path, None)
    assert found is not None
    assert found.key == key, "the key file is reused"
    assert create_key(tmp_path) == key, "a racing process gets the key written first"
    sealer = Sealer(key)
    sealed = sealer.seal("tgr_secret", b"row-1")
    assert b"tgr_secret" not in sealed
    assert sealer.open(sealed, b"row-1") == "tgr_secret"
    assert sealer.open(sealed, b"row-2") is None
    assert Sealer(bytes(32)).open(sealed, b"row-1") is None


def test_secret_key_from_the_environment() -> None:
    assert decode_key("00" * 32) == bytes(32)
    assert decode_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") == bytes(32)
    with pytest.raises(SecretKeyError):
        decode_key("too short")
