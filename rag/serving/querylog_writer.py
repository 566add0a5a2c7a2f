"""Query logging off the request path: a bounded queue and one writer thread.

A search hands its query vectors to ``QueryLogWriter.offer`` and goes on: the writer thread appends
them to the alias's query log (``rag.querylog``) in the background. When the queue is full the new
vectors are dropped and counted, never waited for: logging feeds the drift check's query-distribution
test, which needs a sample, not every query.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from datetime import timedelta

import numpy as np

from rag.models import ModelFingerprint
from rag.names import query_log_table
from rag.querylog import QueryLog
from rag.store import IndexStore

log = logging.getLogger(__name__)


class QueryLogWriter:
    """Samples query vectors into a bounded queue and writes them to the query log from a thread."""

    def __init__(self, store: IndexStore, store_lock: threading.Lock, alias: str, *, sample: float = 1.0,
                 capacity: int = 1024, max_age: timedelta = timedelta(days=30)) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"query_log_sample must lie in [0, 1], not {sample}")
        self.store, self.alias, self.sample, self.max_age = store, alias, sample, max_age
        self._store_lock = store_lock
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._logs: dict[str, QueryLog] = {}
        self.dropped = 0  # vectors not logged because the queue was full
        self.written = 0
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
        try:
            self._queue.put((None, None), timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            fingerprint, vectors = self._queue.get()
            if fingerprint is None:
                return
            key = query_log_table(self.alias, fingerprint)
            if key not in self._logs:
                self._logs[key] = QueryLog(self.store, self.alias, fingerprint)
            try:
                with self._store_lock:
                    self._logs[key].record(vectors, max_age=self.max_age)
                self.written += len(vectors)
            except Exception:  # a failed write loses a sample, never the service
                log.exception("query log: could not write %d query vectors", len(vectors))
