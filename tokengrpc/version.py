"""The installed package's version, for ``--version``, the build-info metric and traces."""

from __future__ import annotations

import importlib.metadata


def version() -> str:
    try:
        return importlib.metadata.version("tokengrpc")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown"
