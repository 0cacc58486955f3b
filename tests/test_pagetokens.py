"""The page-token codec alone: a position comes back only to the listing that issued it."""

from __future__ import annotations

import pytest

from tokengrpc import plaintext
from tokengrpc.pagetokens import (
    decode_name_page_token,
    decode_page_token,
    encode_name_page_token,
    encode_page_token,
)

KEY = bytes(range(32))


def test_a_position_comes_back_to_its_own_listing() -> None:
    token = encode_page_token(KEY, 41, "alice", False)
    assert len(token) == 32
    assert decode_page_token(KEY, token, "alice", False) == 41


@pytest.mark.parametrize(
    ("key", "owner", "include_revoked"),
    [(bytes(32), "alice", False), (KEY, "bob", False), (KEY, "alice", True)],
    ids=["another key", "another owner", "with revoked"],
)
def test_another_listing_or_key_refuses_it(key: bytes, owner: str, include_revoked: bool) -> None:
    token = encode_page_token(KEY, 41, "alice", False)
    assert decode_page_token(key, token, owner, include_revoked) is None


def test_anything_else_is_none() -> None:
    token = encode_page_token(KEY, 41, "alice", False)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for text in ("", token[:-1], token + "A", "=" * 32, "é" * 32, flipped):
        assert decode_page_token(KEY, text, "alice", False) is None, text


def test_a_signed_position_past_the_largest_id_is_refused() -> None:
    token = encode_page_token(KEY, plaintext.MAX_ID + 1, "alice", False)
    assert decode_page_token(KEY, token, "alice", False) is None
    last = encode_page_token(KEY, plaintext.MAX_ID, "alice", False)
    assert decode_page_token(KEY, last, "alice", False) == plaintext.MAX_ID


@pytest.mark.parametrize("name", ["a", "tök ☃ \U0001f511", "n" * 255, "\U0001f511" * 255])
def test_a_name_position_comes_back_whole_to_its_own_listing(name: str) -> None:
    token = encode_name_page_token(KEY, 41, name, "", False)
    assert decode_name_page_token(KEY, token, "", False) == (name, 41)
    for key, owner, include_revoked in ((bytes(32), "", False), (KEY, "x", False), (KEY, "", True)):
        assert decode_name_page_token(key, token, owner, include_revoked) is None


def test_a_name_position_is_not_an_id_position_nor_a_tampered_one() -> None:
    token = encode_name_page_token(KEY, 41, "svc", "", False)
    assert decode_page_token(KEY, token, "", False) is None
    assert decode_name_page_token(KEY, encode_page_token(KEY, 41, "", False), "", False) is None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for text in ("", "A", token[:-1], token + "A", token + "AAAA", "é" * 40, flipped, "A" * 2000):
        assert decode_name_page_token(KEY, text, "", False) is None, text
