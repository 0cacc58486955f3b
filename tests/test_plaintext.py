from __future__ import annotations

from collections import Counter

import pytest

from tokengrpc import plaintext


def test_new_secret_has_prefix_random_and_checksum() -> None:
    secret = plaintext.new_secret("tgr_")
    assert secret.startswith("tgr_")
    assert len(secret) == 4 + plaintext.RANDOM_LENGTH + plaintext.CHECKSUM_LENGTH
    assert set(secret[4:]) <= set(plaintext.BASE62)
    assert secret[-6:] == plaintext.checksum(secret[:-6])


@pytest.mark.parametrize(
    ("body", "expected"),
    # Pinned: tokens already handed out carry checksums computed this way.
    [("", "000000"), ("tgr_" + "a" * 40, "2SqeqC"),
     ("tgr_0123456789abcdefghijklmnopqrstuvwxyzABCD", "0D8Qvc")],
)  # fmt: skip
def test_checksums_stay_what_they_were(body: str, expected: str) -> None:
    assert plaintext.checksum(body) == expected


def test_secrets_do_not_repeat() -> None:
    assert len({plaintext.new_secret("tgr_") for _ in range(200)}) == 200


def test_secret_characters_are_spread_evenly() -> None:
    """Every base62 character turns up about equally often (no modulo bias)."""
    counts = Counter("".join(plaintext.new_secret("")[:40] for _ in range(10_000)))
    expected = 10_000 * 40 / 62
    assert set(counts) == set(plaintext.BASE62)
    assert all(abs(count - expected) < expected / 10 for count in counts.values())


def test_parse_round_trip() -> None:
    secret = plaintext.new_secret("tgr_")
    parsed = plaintext.parse(plaintext.join(42, secret))
    assert parsed is not None
    assert parsed.id == 42
    assert parsed.secret_hash == plaintext.hash_secret(secret)
    assert plaintext.secret_matches(parsed, plaintext.hash_secret(secret))
    assert not plaintext.secret_matches(parsed, plaintext.hash_secret(secret + "x"))


def test_a_changed_prefix_still_parses() -> None:
    secret = plaintext.new_secret("old_")
    assert plaintext.parse(plaintext.join(1, secret)) is not None


def _flip(secret: str, index: int) -> str:
    swapped = "a" if secret[index] != "a" else "b"
    return secret[:index] + swapped + secret[index + 1 :]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "|",
        "1|",
        "abc",
        "0|" + "x" * 50,
        "-1|" + "x" * 50,
        "1 |tgr_",
        "99999999999999999999|tgr_" + "a" * 46,
        "\uff11|tgr_" + "a" * 46,  # a full-width digit one is not an ASCII id
        "1|tgr_short",
        "1|" + "x" * 5000,
    ],
)
def test_malformed_plaintexts_are_rejected(text: str) -> None:
    assert plaintext.parse(text) is None


@pytest.mark.parametrize("index", [0, 5, 20, -1, -6])
def test_any_changed_character_breaks_the_checksum(index: int) -> None:
    secret = plaintext.new_secret("tgr_")
    assert plaintext.parse(plaintext.join(7, _flip(secret, index))) is None


def test_prefix_validation() -> None:
    assert plaintext.valid_prefix("tgr_")
    assert not plaintext.valid_prefix("")
    assert not plaintext.valid_prefix("a|b")
    assert not plaintext.valid_prefix("x" * 40)
