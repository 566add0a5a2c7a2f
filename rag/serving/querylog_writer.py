"""Query logging off the request path: a bounded queue and one writer thread.

A search hands its query vectors to ``QueryLogWriter.offer`` and goes on: the writer thread appends
them to the alias's query log (``rag.serving.querylog``) in the background, through a store connection of its
own, so its writes (and the log's periodic pruning) never hold up a search. A store that allows one
connection per process (qdrant-client's local mode) is shared with the searches instead. When the queue is full the new
vectors are dropped and counted, never waited for: logging feeds the drift check's query-distribution
test, which needs a sample, not every query.

The thread writes what has queued once every ``FLUSH_EVERY`` seconds, in one transaction per model,
not once per query: a durable commit per query, and the thread waking for each one, cost every search
~2 ms at 30 queries/s (the thread takes the GIL right when the answer is being sent).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from contextlib import nullcontext
from datetime import timedelta

import numpy as np

from rag.config import StoreSettings
from rag.errors import RagopsError, StoreLockedError
from rag.models import ModelFingerprint
from rag.store.names import query_log_table
from rag.serving.querylog import QueryLog
from rag.store import IndexStore, open_store

log = logging.getLogger(__name__)

#: seconds between two writes of the queued vectors
FLUSH_EVERY = 1.0


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
