"""``tokengrpc scan PATH...``: where tokens sit in files, as ``path:line:column``.

Exit status as grep's: 0 nothing found, 1 found, 2 a path could not be read
(even if something was found: the scan was not complete). docs/scan.md
explains the rules.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator

from tokengrpc.config import Settings
from tokengrpc.scanning import Finding, Scanner

log = logging.getLogger("tokengrpc")

STDIN = "-"

#: Told of a path that could not be read, and why.
_Fail = Callable[[str, OSError], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files and directories (searched recursively); - is standard input",
    )
    parser.add_argument(
        "--prefix",
        metavar="PREFIX",
        help="the prefix of the secrets to find (default TOKENGRPC_TOKEN_PREFIX, else tgr_)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    prefix: str = args.prefix if args.prefix is not None else settings.token_prefix
    try:
        scanner = Scanner(prefix)
    except ValueError as error:
        log.error("--prefix: %s", error)
        return 2
    run = _Run(scanner)
    for path in args.paths:
        run.path(path)
    sys.stdout.buffer.flush()
    if run.failed:
        return 2
    return 1 if run.found else 0


class _Run:
    """One command's scan: what it found and whether any path failed."""

    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner
        self.found = False
        self.failed = False

    def path(self, path: str) -> None:
        if path == STDIN:
            self._report(STDIN, self._scanner.scan(sys.stdin.buffer.read))
            return
        try:
            # Named paths are followed when links: the user chose them.
            is_directory = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as error:
            self._fail(path, error)
            return
        for file in _walk(path, self._fail) if is_directory else (path,):
            self._file(file)

    def _file(self, path: str) -> None:
        try:
            with open(path, "rb") as stream:
                self._report(path, self._scanner.scan(stream.read))
        except OSError as error:
            self._fail(path, error)

    def _report(self, path: str, findings: Iterator[Finding]) -> None:
        name = os.fsencode(path)  # bytes: a file name need not be UTF-8
        for finding in findings:
            self.found = True
            sys.stdout.buffer.write(b"%s:%d:%d\n" % (name, finding.line, finding.column))

    def _fail(self, path: str, error: OSError) -> None:
        self.failed = True
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        log.error("%s: %s", shown, error.strerror or "cannot be read")


def _walk(top: str, fail: _Fail) -> Iterator[str]:
    """The regular files under ``top``: a directory's files in name order, then
    its subdirectories' in name order.

    Links met inside are not followed (so a loop cannot make it go round, and
    nothing outside the tree is read), nor are pipes, sockets or devices
    opened (reading one could wait forever).
    """
    pending = [top]  # directories, the next one last
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            fail(directory, error)
            continue
        below: list[str] = []
        for entry in entries:
            try:
                is_directory = entry.is_dir(follow_symlinks=False)
                is_file = not is_directory and entry.is_file(follow_symlinks=False)
            except OSError as error:  # its type could not be read
                fail(entry.path, error)
                continue
            if is_directory:
                below.append(entry.path)
            elif is_file:
                yield entry.path
        pending.extend(reversed(below))
