"""Finding plaintexts in text before it leaks: one compiled expression over bounded chunks.

A finding is a string shaped like ``<id>|<prefix><46 base62>`` standing as a
word of its own (no ASCII letter, digit or ``_`` right before the id or right
after the checksum) whose checksum holds by ``plaintext.parse``, the very
check the service makes. Only where it was is reported, never what it was.
docs/scan.md publishes the expression and the checksum rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tokengrpc import plaintext

#: What may not touch a token on either side: it would be part of a longer word.
_WORD = "0-9A-Za-z_"
#: git's rule for "binary": a NUL byte among the first 8000 bytes (``buffer_is_binary``).
BINARY_SNIFF = 8000
#: Bytes read at a time: memory stays bounded however long a file or a line is.
CHUNK_SIZE = 1 << 20
#: UTF-8 continuation bytes: every other byte starts a character.
_CONTINUATION = bytes(range(0x80, 0xC0))


def expression(prefix: str) -> str:
    """The regular expression of a token with ``prefix``, as docs/scan.md shows it.

    Every part has a bounded length, so a match attempt at one position looks at
    most at ``longest(prefix) + 2`` bytes: scanning is linear in the input,
    whatever it holds.
    """
    secret = plaintext.RANDOM_LENGTH + plaintext.CHECKSUM_LENGTH
    return (
        rf"(?<![{_WORD}])[1-9][0-9]{{0,18}}\|{re.escape(prefix)}"
        rf"[0-9A-Za-z]{{{secret}}}(?![{_WORD}])"
    )


def longest(prefix: str) -> int:
    """The length of the longest token with ``prefix`` (19 digits of id)."""
    return 19 + 1 + len(prefix) + plaintext.RANDOM_LENGTH + plaintext.CHECKSUM_LENGTH


@dataclass(frozen=True, slots=True)
class Finding:
    #: Counted from 1; lines end at ``\n``.
    line: int
    #: Of the id's first character, counted from 1, in UTF-8 characters (a byte
    #: that is not UTF-8 counts as one character).
    column: int


class _Position:
    """Line and column of the next byte, moved forward over the bytes scanned."""

    def __init__(self) -> None:
        self.line = 1
        self.column = 1

    def advance(self, data: bytes) -> None:
        newline = data.rfind(b"\n")
        if newline < 0:
            self.column += _characters(data)
        else:
            self.line += data.count(b"\n")
            self.column = 1 + _characters(data[newline + 1 :])


def _characters(data: bytes) -> int:
    """UTF-8 characters in ``data``, counted by their first bytes (so a character
    split between two reads is counted once)."""
    return len(data.translate(None, _CONTINUATION))


class Scanner:
    """Finds the tokens of one prefix in a stream of bytes."""

    def __init__(self, prefix: str, chunk_size: int = CHUNK_SIZE) -> None:
        if not plaintext.valid_prefix(prefix):
            raise ValueError("the prefix must be 1 to 32 printable ASCII characters, no | or space")
        self._pattern = re.compile(expression(prefix).encode("ascii"))
        #: A match starting more than this many bytes before the end of what was
        #: read lies in it whole, and so does the byte after it (the lookahead's).
        self._keep = longest(prefix)
        self._chunk_size = max(chunk_size, 1)

    def scan(self, read: Callable[[int], bytes]) -> Iterator[Finding]:
        """The tokens in what ``read`` returns until it returns nothing; none if
        the stream is binary (a NUL byte among its first ``BINARY_SNIFF``)."""
        first = read(self._chunk_size)
        while first and len(first) < BINARY_SNIFF and (more := read(self._chunk_size)):
            first += more  # a pipe may hand over less than the sniff needs
        if b"\0" in first[:BINARY_SNIFF]:
            return
        yield from self._matches(first, read)

    def _matches(self, first: bytes, read: Callable[[int], bytes]) -> Iterator[Finding]:
        position = _Position()
        buffer = first
        start = 0  # where the next search begins in buffer
        at_end = not first
        while True:
            # Matches starting before ``limit`` are decided by what the buffer holds;
            # later ones wait for the next chunk (a token split across two reads).
            limit = len(buffer) if at_end else len(buffer) - self._keep
            counted = 0  # position stands at this index of buffer
            for match in self._pattern.finditer(buffer, start):
                if match.start() >= limit:
                    break
                start = match.end()
                # The checksum holds (the regular expression cannot say so); a token
                # overlapping a rejected match cannot exist: each ``|`` has one id.
                if plaintext.parse(match.group().decode("ascii")) is None:
                    continue
                position.advance(buffer[counted : match.start()])
                counted = match.start()
                yield Finding(position.line, position.column)
            if at_end:
                return
            resume = max(start, limit, 0)
            # Keep one byte before the resume point: the lookbehind reads it.
            cut = max(resume - 1, 0)
            position.advance(buffer[counted:cut])
            chunk = read(self._chunk_size)
            at_end = not chunk
            buffer = buffer[cut:] + chunk
            start = resume - cut
