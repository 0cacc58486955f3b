"""Housekeeping of a long-running process: its descriptor limit and its garbage collector.

Both serving commands (``serve`` and ``gateway``) do these once, at start.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import resource

log = logging.getLogger("tokengrpc")


def open_files_for(connections: int) -> None:
    """Raise the soft limit on open files to the hard one, and warn if even that is short.

    The connection limits are meant to run out before the descriptors do: a
    process out of descriptors cannot accept anyone, nor open its store.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < connections + 64:
        log.warning(
            "the open-file limit (%d) is below the connection limits (%d) plus the store's"
            " files; lower the limits or raise it",
            soft,
            connections,
        )


def freeze_startup_objects() -> None:
    """Keep what exists once serving (modules, descriptors, servers) out of full collections.

    It lives as long as the process, and under load a full collection walked
    it all every few seconds: pauses seen in p99 (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
