"""The query log: embeddings of the queries an alias served, with their time, for drift checks.

``rag.serving.Retriever(log_queries=True)`` records each query's vector (never its text: queries can
hold personal data, and drift only needs where they land in the vector space). Vectors of different
models are not comparable, so there is one log per alias and model:
``_ragops_queries__<alias>__<model key>`` (the embedding cache's key). Entries older than
``max_age`` are pruned when new ones are written.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import numpy as np
from qdrant_client import models

from rag.cache import fingerprint_key
from rag.models import ModelFingerprint, utc_now
from rag.store import SEPARATOR, IndexStore, store_errors

log = logging.getLogger(__name__)

QUERY_LOG_PREFIX = "_ragops_queries__"


def query_log_collection(alias: str, fingerprint: ModelFingerprint) -> str:
    """Name of the alias's query log for one model."""
    return f"{QUERY_LOG_PREFIX}{alias}{SEPARATOR}{fingerprint_key(fingerprint)}"


class QueryLog:
    """Query embeddings of one alias and model, timestamped."""

    def __init__(self, store: IndexStore, alias: str, fingerprint: ModelFingerprint) -> None:
        self.store = store
        self.collection = query_log_collection(alias, fingerprint)
        self.dimension = fingerprint.dimension

    def record(self, vectors: np.ndarray, at: datetime | None = None, *, max_age: timedelta | None = None) -> None:
        """Append query vectors (one point each) and prune entries older than ``max_age``."""
        if not len(vectors):
            return
        self.store.ensure_vector_collection(self.collection, self.dimension)
        stamp = (at or utc_now()).timestamp()
        points = [models.PointStruct(id=str(uuid.uuid4()), vector=v.tolist(), payload={"at": stamp}) for v in vectors]
        with store_errors(f"writing {len(points)} queries to {self.collection}"):
            self.store.client.upload_points(self.collection, points, wait=True)
            if max_age is not None:
                cutoff = (at or utc_now()) - max_age
                self.store.client.delete(self.collection, self._between(None, cutoff), wait=True)

    def read(self, since: datetime | None = None, until: datetime | None = None, limit: int = 10_000) -> np.ndarray:
        """Vectors logged in ``[since, until)``, newest first, at most ``limit``; shape (n, dimension)."""
        if not self.store.exists(self.collection):
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows: list[tuple[float, list[float]]] = []
        offset = None
        while True:
            with store_errors(f"reading {self.collection}"):
                page, offset = self.store.client.scroll(
                    self.collection, scroll_filter=self._between(since, until), limit=1024, offset=offset,
                    with_payload=True, with_vectors=True,
                )
            rows += [((p.payload or {}).get("at", 0.0), p.vector) for p in page]
            if offset is None:
                break
        rows.sort(key=lambda row: row[0], reverse=True)
        vectors = [vector for _, vector in rows[:limit]]
        return np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)

    @staticmethod
    def _between(since: datetime | None, until: datetime | None) -> models.Filter:
        window = models.Range(gte=since.timestamp() if since else None, lt=until.timestamp() if until else None)
        return models.Filter(must=[models.FieldCondition(key="at", range=window)])
