"""The SQLite engine and what only it needs: migrations in ``PRAGMA user_version``,
the counter file that announces changes to the processes on one data dir.

``open.py`` starts it; ``engine.py`` is its SQL, over ``connections.py`` and
the shared ``tokengrpc/store/group_commit.py``; ``errors.py`` says what
SQLite's failures mean.
"""

from tokengrpc.store.sqlite.connections import DB_FILE
from tokengrpc.store.sqlite.engine import SqliteEngine
from tokengrpc.store.sqlite.errors import StoreUnusable
from tokengrpc.store.sqlite.generation import Generation
from tokengrpc.store.sqlite.open import GENERATION_FILE, migrate_sqlite, open_sqlite

__all__ = [
    "DB_FILE",
    "GENERATION_FILE",
    "Generation",
    "SqliteEngine",
    "StoreUnusable",
    "migrate_sqlite",
    "open_sqlite",
]
