"""Fan parsing and embedding out over a Dask cluster (prefect-dask); the flow's process keeps the store.

Selected by ``pipeline.task_runner: dask``. Batches are prepared (fetched, parsed, chunked) on the
cluster's workers, and each batch's cache misses are embedded there too, with the model loaded once
per worker process. The flow's process looks up the embedding cache and writes every batch in order,
as the local path does, so a distributed build is the same build (tests/flows/test_fanout.py).

Workers need ragops and the model installed and, for folder sources, the same files at the same paths
(S3 sources are fetched by the workers themselves). Each batch is parsed in a sandbox child process of
its worker (rag/ingest/sandbox.py), started per batch. Up to twice ``pipeline.workers`` batches are in
flight at once, which bounds memory.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import connectors
from flows.steps import embed_in_worker, prepare_batch, write_batch
from rag.config import PipelineSettings, Settings
from rag.embed.embedder import Embedder
from rag.index.batches import batched, embedded_elsewhere, precomputed, uncached_texts
from rag.index.cache import EmbeddingCache
from rag.index.plan import WorkItem
from rag.index.progress import BatchReport
from rag.ingest.chunking import Chunker
from rag.ingest.redaction import Redactor
from rag.ingest.sandbox import ParseSandbox
from rag.models import Manifest, utc_now
from rag.store import IndexStore


def dask_runner(pipeline: PipelineSettings):
    """prefect-dask's task runner: the configured cluster, or a local one of ``pipeline.workers`` processes."""
    from prefect_dask import DaskTaskRunner

    if pipeline.dask_address:
        return DaskTaskRunner(address=pipeline.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": pipeline.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def index_on_dask(
    store: IndexStore, settings: Settings, manifest: Manifest, batches: Sequence[Sequence[WorkItem]],
    embedder: Embedder, chunker: Chunker, cache: EmbeddingCache, sandbox: ParseSandbox,
    redactors: Mapping[str, Redactor] | None = None,
) -> Iterator[BatchReport]:
    """Index the batches with preparation and embedding on the cluster; yields each batch's report in order."""
    fetch = connectors.Fetcher(settings.sources)  # a fresh one: it travels to the workers
    max_bytes = int(settings.pipeline.max_file_mb * 1_000_000)
    with dask_runner(settings.pipeline) as runner:
        for group in batched(list(batches), 2 * settings.pipeline.workers):
            prepared = [
                runner.submit(prepare_batch, parameters={"items": list(items), "chunker": chunker, "fetch": fetch,
                                                         "version": manifest.version, "max_bytes": max_bytes,
                                                         "now": utc_now(), "sandbox": sandbox,
                                                         "redactors": redactors,
                                                         "retry_backoff": settings.pipeline.parse_retry_backoff})
                for items in group
            ]
            pending = []
            for future in prepared:
                batch = future.result()
                texts = uncached_texts(batch, cache)
                embedding = runner.submit(embed_in_worker, parameters={
                    "settings": settings.embedding, "texts": list(texts.values()), "expected": embedder.fingerprint,
                }) if texts else None
                pending.append((batch, texts, embedding))
            for batch, texts, embedding in pending:
                vectors = embedded_elsewhere(texts, embedding)
                yield write_batch(store, manifest, batch, precomputed(vectors, embedder), cache, utc_now())
