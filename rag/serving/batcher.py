"""Embedding the queries of concurrent requests together: one forward pass for all that are waiting.

A small model's forward pass on a short query is mostly fixed cost (Python dispatch of each layer,
which holds the GIL), so threads encoding one query each barely overlap, and under load requests
queue behind each other. The batcher's one thread takes every query waiting when it is free and embeds
them in one call: alone, a query is embedded at once (nothing waits for a batch to fill); under load,
batches form by themselves while the previous one runs, and throughput grows with them.

The same thread also counts each query's tokens (to tell a truncated query): a Hugging Face fast
tokenizer must not be used from two threads at once, so the model's tokenizer is used by this thread
only.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rag.embedding import Embedder

#: most queries embedded in one forward pass
MAX_BATCH = 64


@dataclass
class _Job:
    texts: Sequence[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    tokens: list[int] = field(default_factory=list)
    error: BaseException | None = None


class EncodeBatcher:
    """Embeds with ``embedder`` from one thread, batching the queries of concurrent callers."""

    def __init__(self, embedder: Embedder, max_batch: int = MAX_BATCH) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.batches = 0  # forward passes run
        self.queries = 0  # queries embedded
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="encode-batcher", daemon=True)
        self._thread.start()

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The vectors of ``texts`` (as ``Embedder.embed`` returns them) and each text's length in tokens
        (special tokens excluded: longer than ``Embedder.max_tokens`` means the model read only its start)."""
        if self._closed:  # its thread is gone: nothing would ever answer
            raise RuntimeError("this encoder was closed (its model is no longer served)")
        job = _Job(list(texts))
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.vectors is not None
        return job.vectors, job.tokens

    def close(self) -> None:
        """Finish the queued work and stop the thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, size, stop = [job], len(job.texts), False
            while size < self.max_batch:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    stop = True
                    break
                jobs.append(waiting)
                size += len(waiting.texts)
            self._embed(jobs)
            if stop:
                return

    def _embed(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            vectors = self.embedder.embed(texts)
            tokens = [len(ids) for ids in self.embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        except BaseException as exc:  # every caller gets the error; the thread goes on
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        self.batches += 1
        self.queries += len(vectors)
        start = 0
        for job in jobs:
            job.vectors = vectors[start : start + len(job.texts)]
            job.tokens = tokens[start : start + len(job.texts)]
            start += len(job.texts)
            job.done.set()
