"""Each worker's metrics as a file, so that any process can answer a scrape for all.

With ``serve --workers N`` the processes share nothing but a directory: each
writes its whole snapshot (plain JSON numbers) to a file of its own, and a
scrape adds the others' files to its own live numbers. Whole snapshots, not
differences, so a copy that failed is made good by the next one; the file of
a process that has stopped stays, so its requests stay counted.

Only the standard library: no part of prometheus-client's internals (its
multiprocess mode cannot take a histogram's buckets except one observation at
a time).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Set (by the parent, before any worker starts), every process shares its
#: numbers through this directory; internal plumbing, not a setting.
SHARED_DIR_VARIABLE = "_TOKENGRPC_METRICS_DIR"
_SUFFIX = ".json"

Snapshot = dict[str, Any]


def shared_directory() -> Path | None:
    """The directory this process shares its metrics through, if any."""
    directory = os.environ.get(SHARED_DIR_VARIABLE)
    return Path(directory) if directory else None


class SnapshotFiles:
    """This process's file in the shared directory, and the other processes' files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The pid and a random part: a later process given a reused pid must
        # not overwrite the file, and so the counts, of one that has stopped.
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        self._written: Snapshot | None = None

    def write(self, snapshot: Snapshot) -> None:
        """Replace this process's file whole (a reader never sees half of one)."""
        if snapshot == self._written:
            return
        temporary = self.directory / f".{self.name}.tmp"
        temporary.write_text(json.dumps(snapshot, separators=(",", ":")))
        os.replace(temporary, self.directory / self.name)
        self._written = snapshot

    def others(self) -> Iterator[Snapshot]:
        """Every other process's last snapshot; one that cannot be read is left out."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith(_SUFFIX) or entry.name == self.name:
                continue
            try:
                snapshot = json.loads(Path(entry.path).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(snapshot, dict):
                yield snapshot
