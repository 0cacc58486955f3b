"""Raw HTTP/2 frames, for tests that must behave as no real client would:
a connection that says hello and then nothing, a call that never sends its
message. Short strings only, no Huffman coding, no header compression state."""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING = 0, 1, 4, 6
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind: int, flags: int, payload: bytes, stream: int = 0) -> bytes:
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return header + payload


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name (lengths under 127)."""
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def call_headers(path: bytes) -> bytes:
    """The header block of a gRPC call to ``path`` (``/package.Service/Method``)."""
    return b"".join(
        literal(name, value)
        for name, value in (
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        )
    )
