"""The query log: embeddings of the queries an alias served, with their time, for drift checks, and the
writer that fills it off the request path.

``Retriever.from_settings(settings, log_queries=True)`` records each query's vector (never its text: queries can hold personal
data, and drift only needs where they land in the vector space). Vectors of different models are not
comparable, so there is one log per alias and model (``rag.store.names.query_log_table``). Entries older
than ``max_age`` (``drift.query_log_max_age``) are pruned as new ones are written (at most every
``PRUNE_EVERY``: a prune reads the whole log).

A search hands its query vectors to ``QueryLogWriter.offer`` and goes on: the writer thread appends them
to the log in the background, through a store connection of its own, so its writes (and the log's periodic
pruning) never hold up a search. A store that allows one connection per process (qdrant-client's local
mode) is shared with the searches instead. When the queue is full the new vectors are dropped and counted,
never waited for: logging feeds the drift check's query-distribution test, which needs a sample, not every
query.

The thread writes what has queued once every ``FLUSH_EVERY`` seconds, in one transaction per model, not
once per query: a durable commit per query, and the thread waking for each one, cost every search ~2 ms at
30 queries/s (the thread takes the GIL right when the answer is being sent).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import uuid
from contextlib import nullcontext
from datetime import datetime, timedelta

import numpy as np

from rag.config import StoreSettings
from rag.errors import RagopsError, StoreLockedError
from rag.models import ModelFingerprint, utc_now
from rag.store import IndexStore, Row, open_store
from rag.store.names import query_log_table

log = logging.getLogger(__name__)

#: least time between two prunes of one log
PRUNE_EVERY = timedelta(minutes=10)
#: seconds between two writes of the queued vectors
FLUSH_EVERY = 1.0


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


class QueryLogWriter:
    """Samples query vectors into a bounded queue and writes them to the query log from a thread."""

    def __init__(self, settings: StoreSettings, shared: IndexStore, shared_lock: threading.Lock, alias: str, *,
                 sample: float = 1.0, capacity: int = 1024, max_age: timedelta = timedelta(days=30)) -> None:
        """
        Args:
            settings: the store to open a connection of the writer's own to.
            shared, shared_lock: the searches' store and its lock, used when a second connection cannot open.
        """
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"query_log_sample must lie in [0, 1], not {sample}")
        self.settings, self.alias, self.sample, self.max_age = settings, alias, sample, max_age
        self._shared, self._shared_lock = shared, shared_lock
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.dropped = 0  # vectors not logged because the queue was full
        self.written = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"querylog-{alias}", daemon=True)
        self._thread.start()

    def offer(self, fingerprint: ModelFingerprint, vectors: np.ndarray) -> None:
        """Queue the sampled share of ``vectors`` (embedded with ``fingerprint``); never blocks."""
        if self.sample < 1.0:
            vectors = vectors[[random.random() < self.sample for _ in range(len(vectors))]]
        if not len(vectors):
            return
        try:
            self._queue.put_nowait((fingerprint, vectors))
        except queue.Full:
            self.dropped += len(vectors)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop."""
        self._closing.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        opened = None
        try:
            opened = open_store(self.settings, create=False)
            store, lock = opened.__enter__(), nullcontext()
        except StoreLockedError:  # one connection per process: share the searches' one
            store, lock = self._shared, self._shared_lock
        except RagopsError:
            log.exception("query log: cannot open the store; queries will not be logged")
            store = None
        try:
            self._write_until_closed(store, lock)
        finally:
            if opened is not None:
                opened.__exit__(None, None, None)

    def _write_until_closed(self, store: IndexStore | None, lock) -> None:
        logs: dict[str, QueryLog] = {}
        while True:
            closing = self._closing.wait(FLUSH_EVERY)
            by_model: dict[str, tuple[ModelFingerprint, list[np.ndarray]]] = {}
            while True:
                try:
                    fingerprint, vectors = self._queue.get_nowait()
                except queue.Empty:
                    break
                by_model.setdefault(query_log_table(self.alias, fingerprint), (fingerprint, []))[1].append(vectors)
            for fingerprint, parts in by_model.values():
                self._write(store, lock, logs, fingerprint, np.concatenate(parts))
            if closing:
                return

    def _write(self, store: IndexStore | None, lock, logs: dict[str, QueryLog], fingerprint: ModelFingerprint,
               vectors: np.ndarray) -> None:
        if store is None:
            self.dropped += len(vectors)
            return
        key = query_log_table(self.alias, fingerprint)
        if key not in logs:
            logs[key] = QueryLog(store, self.alias, fingerprint)
        try:
            with lock:
                logs[key].record(vectors, max_age=self.max_age)
            self.written += len(vectors)
        except Exception:  # a failed write loses a sample, never the service
            log.exception("query log: could not write %d query vectors", len(vectors))
