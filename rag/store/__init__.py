"""The store room: where builds, their manifests, aliases and tables live, behind one interface.

- ``base``: ``IndexStore``, the interface every backend implements (it knows no backend), and the
  shapes it reads and writes (``Point``, ``Row``, filter conditions);
- ``edge``: the embedded default on Qdrant Edge; ``catalog``: its SQLite catalog of manifests, aliases
  and tables;
- ``qdrant``: a Qdrant server or cluster (or qdrant-client's local mode);
- ``names``: how collections and tables are named; ``locks``: one run per alias; ``migrate``: moving a
  store from one backend to another.

``open_store`` picks the backend from the settings and imports it only then, so ``import rag.store``
stays light (``ragops --help`` loads no engine). A new backend is a module here implementing
``IndexStore`` (importing ``rag.store.base``, never this package) plus a branch in ``open_store``; nothing
else imports a backend's module. ``locks`` and ``migrate`` open stores with ``open_store``, so they are
imported by their own names (``rag.store.locks.AliasLock``, ``rag.store.migrate.migrate_store``), not
re-exported here: that would make a circle.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rag.config import StoreSettings
from rag.store.base import (
    FILTER_FIELDS,
    Between,
    Condition,
    IndexStore,
    Match,
    Point,
    Prefix,
    Row,
    is_local_mode,
    migration_folders,
    refuse_unfinished_migration,
    require_store,
)

__all__ = [
    "FILTER_FIELDS", "Between", "Condition", "IndexStore", "Match", "Point", "Prefix", "Row",
    "is_local_mode", "migration_folders", "open_store", "refuse_unfinished_migration", "require_store",
]


@contextmanager
def open_store(settings: StoreSettings, *, create: bool = True, migrating: bool = False) -> Iterator[IndexStore]:
    """Open the store for the length of a ``with`` block, and always close it.

    Args:
        create: make an embedded store that does not exist yet. Commands that only read pass False,
            so a mistyped ``--store`` is an error rather than a new empty store.
        migrating: the caller is ``ragops migrate`` (rag/store/migrate.py) opening the store it carries
            over, which it must reach while that migration is unfinished; every other caller is refused then.

    Raises:
        ConfigError: ``create`` is False and there is no store at the folder; or a ``ragops migrate``
            of the folder is unfinished (``refuse_unfinished_migration``).
        StoreLockedError: an embedded local-mode store is open in another process.
        StoreError: the server cannot be reached or refuses the credentials; the folder cannot be used.
    """
    if not create:
        require_store(settings)
    elif not migrating:
        refuse_unfinished_migration(settings)
    if settings.engine in ("auto", "edge") and not settings.is_remote:
        from rag.store.edge import EdgeStore

        store: IndexStore = EdgeStore(settings)
    else:
        from rag.store.qdrant import QdrantStore

        store = QdrantStore(settings)
    try:
        yield store
    finally:
        store.close()
