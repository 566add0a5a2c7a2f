"""The embedding cache: vectors keyed by model fingerprint + chunk text hash, kept in the store.

Why a cache and not only "copy from the previous build": copying covers unchanged documents, but a
renamed document, a reverted edit, the unchanged chunks of an edited document, and every chunk a killed
run had already embedded, all have vectors that no earlier *complete* build holds. The cache holds
them: a build writes new vectors here before writing its own points, so no finished embedding is ever
computed twice for the same model. It is one table per alias and model (``rag.store.names.cache_table``),
looked up by text hash.

Retention prunes entries that no remaining build of the alias uses, and drops the caches of models no
remaining build uses.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from rag.errors import StoreError
from rag.models import ModelFingerprint
from rag.store import IndexStore, Row
from rag.store.names import cache_table, cache_tables_of

log = logging.getLogger(__name__)


class EmbeddingCache:
    """Vectors of chunk texts already embedded with one model, for one alias."""

    def __init__(self, store: IndexStore, alias: str, fingerprint: ModelFingerprint) -> None:
        self.store = store
        self.table = cache_table(alias, fingerprint)
        self.dimension = fingerprint.dimension

    def get(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the given text hashes (missing ones are absent from the result)."""
        found = self.store.get_rows(self.table, list(text_hashes), vectors=True)
        return {key: point.vector for key, point in found.items() if point.vector is not None}

    def put(self, text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors durably before any build records them as done."""
        rows = [Row(h, {"text_hash": h}, v) for h, v in zip(text_hashes, vectors)]
        self.store.put_rows(self.table, rows, dimension=self.dimension)


def prune_caches(store: IndexStore, alias: str) -> int:
    """Delete cache entries (and whole per-model caches) that no remaining build of ``alias`` uses.

    Returns:
        How many cached vectors were deleted.
    """
    in_use: dict[str, set[str] | None] = {}  # None: a build of that model could not be read, keep it all
    for build in store.list_builds(alias):
        manifest = store.read_manifest(build)
        if manifest is None:
            continue
        table = cache_table(alias, manifest.model)
        try:
            hashes = store.text_hashes(build)
        except StoreError as exc:  # a damaged build: what it uses is unknown, so nothing of its model goes
            log.warning("embedding cache: not pruning %s: build %s cannot be read (%s)", table, build, exc)
            in_use[table] = None
            continue
        if in_use.get(table, set()) is not None:
            in_use.setdefault(table, set()).update(hashes)
    deleted = 0
    for table in store.tables(cache_tables_of(alias)):
        if table not in in_use:
            deleted += store.drop_table(table)
            continue
        if in_use[table] is None:
            continue
        stale = [h for p in store.scan_rows(table, fields=["text_hash"])
                 if (h := p.payload.get("text_hash", "")) not in in_use[table]]
        store.delete_rows(table, stale)
        deleted += len(stale)
    if deleted:
        log.info("embedding cache: pruned %d vectors no build of %s uses", deleted, alias)
    return deleted
