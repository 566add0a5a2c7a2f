"""The embedding cache: vectors keyed by model fingerprint + chunk text hash, kept in Qdrant.

Why a cache and not only "copy from the previous build": copying covers unchanged documents, but a
renamed document, a reverted edit, the unchanged chunks of an edited document, and every chunk a killed
run had already embedded, all have vectors that no earlier *complete* build holds. The cache holds
them: a build writes new vectors here before writing its own points, so no finished embedding is ever
computed twice for the same model. It is one collection per alias and model
(``_ragops_cache__<alias>__<fingerprint key>``), and lookups are by point id, which is O(1) even in
embedded mode.

Retention prunes entries that no remaining build of the alias uses, and drops the caches of models no
remaining build uses.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import numpy as np
from qdrant_client import models

from rag.models import ModelFingerprint
from rag.store import CACHE_PREFIX, SEPARATOR, IndexStore, record_id, store_errors

log = logging.getLogger(__name__)


def fingerprint_key(fingerprint: ModelFingerprint) -> str:
    """Short key of everything that decides the vector space (not the install path)."""
    parts = [fingerprint.weights_sha256, fingerprint.dtype, str(fingerprint.normalize),
             str(fingerprint.max_seq_length), str(fingerprint.dimension)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_collection(alias: str, fingerprint: ModelFingerprint) -> str:
    """Name of the alias's cache for one model."""
    return f"{CACHE_PREFIX}{alias}{SEPARATOR}{fingerprint_key(fingerprint)}"


class EmbeddingCache:
    """Vectors of chunk texts already embedded with one model, for one alias."""

    def __init__(self, store: IndexStore, alias: str, fingerprint: ModelFingerprint) -> None:
        self.store = store
        self.collection = cache_collection(alias, fingerprint)
        self.dimension = fingerprint.dimension
        store.ensure_vector_collection(self.collection, self.dimension, on_disk=True)

    def get(self, text_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the given text hashes (missing ones are absent from the result)."""
        if not text_hashes:
            return {}
        ids = {record_id(h): h for h in text_hashes}
        with store_errors(f"reading the embedding cache {self.collection}"):
            found = self.store.client.retrieve(self.collection, list(ids), with_vectors=True, with_payload=False)
        return {ids[str(p.id)]: np.asarray(p.vector, dtype=np.float32) for p in found}

    def put(self, text_hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors durably (``wait=True``) before any build records them as done."""
        if not len(text_hashes):
            return
        points = [
            models.PointStruct(id=record_id(h), vector=v.tolist(), payload={"text_hash": h})
            for h, v in zip(text_hashes, vectors)
        ]
        with store_errors(f"writing {len(points)} vectors to the embedding cache"):
            self.store.client.upload_points(self.collection, points, batch_size=256, wait=True)


def prune_caches(store: IndexStore, alias: str) -> int:
    """Delete cache entries (and whole per-model caches) that no remaining build of ``alias`` uses.

    Returns:
        How many cached vectors were deleted.
    """
    in_use: dict[str, set[str]] = {}
    for build in store.list_builds(alias):
        manifest = store.read_manifest(build)
        if manifest is None:
            continue
        name = cache_collection(alias, manifest.model)
        in_use.setdefault(name, set()).update(record_id(h) for h in store.text_hashes(build))
    deleted = 0
    prefix = f"{CACHE_PREFIX}{alias}{SEPARATOR}"
    for name in store.collection_names():
        if not name.startswith(prefix):
            continue
        if name not in in_use:
            with store_errors(f"deleting the unused embedding cache {name}"):
                deleted += store.client.count(name, exact=True).count
                store.client.delete_collection(name)
            continue
        stale = [point_id for point_id in store.point_ids(name) if point_id not in in_use[name]]
        for start in range(0, len(stale), 1024):
            with store_errors(f"pruning the embedding cache {name}"):
                store.client.delete(name, points_selector=models.PointIdsList(points=stale[start : start + 1024]))
        deleted += len(stale)
    if deleted:
        log.info("embedding cache: pruned %d vectors no build of %s uses", deleted, alias)
    return deleted

