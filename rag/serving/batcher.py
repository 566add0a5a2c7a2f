"""Embedding the queries of concurrent requests together: one forward pass for all that are waiting.

A small model's forward pass on a short query is mostly fixed cost, so under load requests would queue
behind each other one pass at a time. Here the callers take turns leading: the first caller to arrive
when nobody leads embeds its own query at once, on its own thread (no hand-over to another thread,
which cost ~1 ms a query); callers arriving meanwhile wait, and the leader's next pass takes every one
of them together. Once its own query is done, the leader hands the lead to the oldest caller still
waiting, so nobody answers other people's queries after its own.

Whoever leads also counts each query's tokens (to tell a truncated query): a Hugging Face fast
tokenizer must not be used from two threads at once, and only one thread leads at a time.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rag.embed.embedder import Embedder

#: most queries embedded in one forward pass
MAX_BATCH = 64


@dataclass
class _Job:
    texts: Sequence[str]
    wake: threading.Event = field(default_factory=threading.Event)  # set when done, or when made the leader
    finished: bool = False
    vectors: np.ndarray | None = None
    tokens: list[int] = field(default_factory=list)
    error: BaseException | None = None


class EncodeBatcher:
    """Embeds with ``embedder``, batching the queries of concurrent callers (see the module's docstring).

    ``lanes`` forward passes may run at once, each on its leader's thread: with one intra-op thread per
    pass, a query that arrives while another is being embedded starts at once on a free core instead
    of waiting for that pass to end.
    """

    def __init__(self, embedder: Embedder, max_batch: int = MAX_BATCH, lanes: int = 1) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.lanes = max(1, lanes)
        self.batches = 0  # forward passes run
        self.queries = 0  # queries embedded
        self._lock = threading.Lock()
        self._counting = threading.Lock()  # one tokenizer, and it must not be used from two threads at once
        self._pending: deque[_Job] = deque()
        self._leading = 0  # passes running or about to
        self._closed = False

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The vectors of ``texts`` (as ``Embedder.embed`` returns them) and each text's length in tokens
        (special tokens excluded: longer than ``Embedder.max_tokens`` means the model read only its start)."""
        if self._closed:  # its model is no longer served
            raise RuntimeError("this encoder was closed (its model is no longer served)")
        job = _Job(list(texts))
        with self._lock:
            leading = self._leading < self.lanes
            if leading:
                self._leading += 1
            else:
                self._pending.append(job)
        if not leading:
            job.wake.wait()
        if not job.finished:  # a lane is free for it
            self._lead(job)
        if job.error is not None:
            raise job.error
        assert job.vectors is not None
        return job.vectors, job.tokens

    def close(self) -> None:
        """Refuse new work (what is being embedded finishes)."""
        self._closed = True

    def _lead(self, own: _Job) -> None:
        with self._lock:
            jobs, size = [own], len(own.texts)
            while self._pending and size + len(self._pending[0].texts) <= self.max_batch:
                jobs.append(self._pending.popleft())
                size += len(jobs[-1].texts)
        self._embed(jobs)
        with self._lock:  # hand the lane to the oldest caller still waiting, or free it
            successor = self._pending.popleft() if self._pending else None
            if successor is None:
                self._leading -= 1
        if successor is not None:
            successor.wake.set()  # not finished: it leads now

    def _embed(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            vectors = self.embedder.embed(texts)
            with self._counting:
                tokens = [len(ids) for ids in self.embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        except BaseException as exc:  # every caller gets the error; the next leader goes on
            vectors, tokens = None, []
            for job in jobs:
                job.error = exc
        else:
            self.batches += 1
            self.queries += len(vectors)
        start = 0
        for job in jobs:
            if vectors is not None:
                job.vectors = vectors[start : start + len(job.texts)]
                job.tokens = tokens[start : start + len(job.texts)]
                start += len(job.texts)
            job.finished = True
            job.wake.set()
