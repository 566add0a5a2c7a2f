"""The query log: embeddings of the queries an alias served, with their time, for drift checks.

``rag.serving.Retriever(log_queries=True)`` records each query's vector (never its text: queries can
hold personal data, and drift only needs where they land in the vector space). Vectors of different
models are not comparable, so there is one log per alias and model (``rag.store.names.query_log_table``).
Entries older than ``max_age`` are pruned as new ones are written (at most every ``PRUNE_EVERY``: a
prune reads the whole log).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import numpy as np

from rag.models import ModelFingerprint, utc_now
from rag.store.names import query_log_table
from rag.store import IndexStore, Row

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(minutes=10)


class QueryLog:
    """Query embeddings of one alias and model, timestamped."""

    def __init__(self, store: IndexStore, alias: str, fingerprint: ModelFingerprint) -> None:
        self.store = store
        self.table = query_log_table(alias, fingerprint)
        self.dimension = fingerprint.dimension
        self._pruned_at: datetime | None = None

    def record(self, vectors: np.ndarray, at: datetime | None = None, *, max_age: timedelta | None = None) -> None:
        """Append query vectors (one row each) and prune entries older than ``max_age``."""
        if not len(vectors):
            return
        now = at or utc_now()
        rows = []
        for vector in vectors:
            key = str(uuid.uuid4())
            rows.append(Row(key, {"id": key, "at": now.timestamp()}, vector))
        self.store.put_rows(self.table, rows, dimension=self.dimension)
        if max_age is not None and (self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY):
            self._pruned_at = now
            cutoff = (now - max_age).timestamp()
            old = [p.payload["id"] for p in self.store.scan_rows(self.table)
                   if p.payload.get("at", 0.0) < cutoff and "id" in p.payload]
            self.store.delete_rows(self.table, old)

    def read(self, since: datetime | None = None, until: datetime | None = None, limit: int = 10_000) -> np.ndarray:
        """Vectors logged in ``[since, until)``, newest first, at most ``limit``; shape (n, dimension)."""
        low = since.timestamp() if since else float("-inf")
        high = until.timestamp() if until else float("inf")
        rows = [(p.payload.get("at", 0.0), p.vector) for p in self.store.scan_rows(self.table, vectors=True)
                if low <= p.payload.get("at", 0.0) < high and p.vector is not None]
        rows.sort(key=lambda row: row[0], reverse=True)
        vectors = [vector for _, vector in rows[:limit]]
        return np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
