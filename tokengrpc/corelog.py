"""gRPC core's own log lines, made ours: parsed, leveled, and failed TLS handshakes counted.

grpc's C core writes its lines (``I1202 07:55:44.188422  27049
ssl_transport_security.cc:2563] Handshake failed ...``) straight to file
descriptor 2, past Python's :mod:`logging`, so they broke ``--log-format
json``; there is no hook to hand them to Python. ``serve`` and ``gateway``
therefore put a pipe on descriptor 2 (:func:`capture`), and:

- Python's own writes (``sys.stderr``, so every logging handler, and a
  traceback) go to the real stderr, as before;
- a thread reads the pipe: a gRPC core line becomes a record of the
  ``grpc`` logger at its level (``I`` is DEBUG: quiet by default); a failed
  TLS handshake is not logged at all but counted
  (``tokengrpc_tls_handshake_failures_total``), since anyone who can reach
  the port can cause thousands; any other line passes through as it is;
- workers are started with the real stderr (:func:`real_stderr`) and
  capture their own descriptor 2.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import BinaryIO, TextIO

log = logging.getLogger("grpc")

#: ``<level><MMDD> <time> <thread> <file>:<line>] <message>`` (absl's format).
_CORE_LINE = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ +([\w./+-]+:\d+)\] ?(.*)")
_LEVELS = {b"I": logging.DEBUG, b"W": logging.WARNING, b"E": logging.ERROR, b"F": logging.CRITICAL}
_HANDSHAKE_FAILED = b"Handshake failed"

_failed_handshakes = 0
#: The real stderr's descriptor once :func:`capture` has run (for the workers).
_real: int | None = None


def failed_handshakes() -> int:
    """TLS handshakes that failed in this process since it started."""
    return _failed_handshakes


def real_stderr() -> int | None:
    """The descriptor of the real stderr, or None when descriptor 2 still is it:
    what a worker process is given as its stderr (it captures its own)."""
    return _real


def relay_line(line: bytes, passthrough: BinaryIO) -> None:
    """One line from descriptor 2: logged, counted, or passed on as it came."""
    global _failed_handshakes
    match = _CORE_LINE.fullmatch(line.rstrip(b"\r\n"))
    if match is None:
        passthrough.write(line)
        passthrough.flush()
        return
    level, where, message = match.groups()
    if message.startswith(_HANDSHAKE_FAILED):
        _failed_handshakes += 1
        return
    log.log(_LEVELS[level], "%s: %s", where.decode(), message.decode("utf-8", "replace"))


def _relay(pipe: BinaryIO, passthrough: BinaryIO) -> None:
    with pipe:
        for line in pipe:
            try:
                relay_line(line, passthrough)
            except Exception:  # noqa: S112 (the relay must outlive any one line)
                continue


def capture() -> None:
    """From now on, descriptor 2 is ours to read; Python keeps writing to the real stderr."""
    global _real
    try:
        real = os.dup(2)
    except OSError:  # no stderr at all (closed by whoever started us): nothing to keep clean
        return
    _real = real
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    old: TextIO = sys.stderr
    sys.stderr = open(  # noqa: SIM115 (the process's stderr, open until exit)
        real, "w", buffering=1, encoding=old.encoding, errors=old.errors, closefd=False
    )
    passthrough = open(real, "wb", buffering=0, closefd=False)  # noqa: SIM115
    pipe = open(read_end, "rb")  # noqa: SIM115 (the relay closes it)
    thread = threading.Thread(
        target=_relay, args=(pipe, passthrough), name="grpc-core-log", daemon=True
    )
    thread.start()

    def restore() -> None:
        # Our end of the pipe closes: the relay reads what is left, then EOF.
        sys.stderr.flush()
        os.dup2(real, 2)
        thread.join(timeout=1.0)

    atexit.register(restore)
