"""Progress inside a batch: documents counted as they are prepared and chunks as they are embedded, and
a reporter thread that prints them while the batch runs (a 47 MB document once ran ~20 minutes silent)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from connectors import Fetcher, list_documents
from rag.index import batches, build
from rag.index.batches import index_batches
from rag.index.cache import EmbeddingCache
from rag.index.plan import WorkItem
from rag.index.progress import Pulse, Throughput, reporting
from rag.ingest.chunking import Chunker
from rag.ingest.sandbox import ParseSandbox
from rag.store import open_store

pytestmark = pytest.mark.slow


def test_documents_and_chunks_are_counted_inside_one_batch(settings, embedder, monkeypatch) -> None:
    monkeypatch.setattr(batches, "EMBED_SLICE", 2)  # several slices in this small batch
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    pulse = Pulse()
    fetcher = Fetcher(settings.sources)
    seen_at_fetch: list[int] = []

    def fetch(ref, folder: Path) -> Path:
        seen_at_fetch.append(pulse.documents)  # what a reporter would print while this document is worked on
        return fetcher(ref, folder)

    with open_store(settings.store) as store:
        manifest = build.begin_build(store, settings.alias, settings.sources, embedder.fingerprint, chunker.describe())
        work = [WorkItem(ref=ref) for ref in list_documents(settings.sources[0]).refs]
        cache = EmbeddingCache(store, settings.alias, embedder.fingerprint)
        reports = list(index_batches(store, manifest, [work], embedder, chunker, cache, fetch, max_bytes=10**7,
                                     sandbox=ParseSandbox(settings.pipeline), pulse=pulse))

    assert seen_at_fetch == list(range(1, len(work) + 1))  # one more at each document of the one batch
    (report,) = reports
    assert pulse.documents == len(work) == 6
    assert pulse.chunks == report.chunks_embedded == report.chunks > 2


def test_the_reporter_prints_while_the_work_goes_on() -> None:
    meter = Throughput(10, every=0)
    pulse = Pulse()
    lines: list[str] = []
    printed = threading.Event()

    def report(line: str) -> None:
        lines.append(line)
        printed.set()

    with reporting(meter, pulse, report, tick=0.01):
        pulse.documents, pulse.chunks = 3, 40  # the work, mid-batch: nothing returned to the caller yet
        assert printed.wait(60)  # generous: the reporter runs on its own thread
    assert lines[0].startswith("3/10 documents (30%), 40 chunks embedded")
    assert all(not line.endswith("done in 0s") for line in lines)  # the final line is the caller's
