"""The steps of an index build, as plain functions (the reindex flow orchestrates them).

A build is a new collection ``<alias>__<version>``: ``begin_build`` creates it with a manifest in state
"building"; ``index_batch`` parses, chunks, embeds and writes one batch of documents, recording every
document that fails instead of raising; ``finish_build`` marks it complete once every point is durably
written, or ``fail_build`` records why it stopped. Nothing here touches the serving alias.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from pydantic import BaseModel, Field

from rag.chunking import Chunker
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import DocumentError
from rag.models import Chunk, Counts, DocumentRef, Failure, Manifest, StageTimings, utc_now
from rag.parsing import parse_document
from rag.store import IndexStore, collection_name
from rag.versions import new_version

log = logging.getLogger(__name__)

#: failures kept in a manifest (the run summary keeps them all)
MANIFEST_FAILURES = 200


class BatchReport(BaseModel):
    """What indexing one batch did."""

    documents: int = 0
    indexed: int = 0
    chunks: int = 0
    failures: list[Failure] = Field(default_factory=list)
    timings: StageTimings = Field(default_factory=StageTimings)


class BuildProgress(BaseModel):
    """Running totals of a build, fed one ``BatchReport`` at a time."""

    counts: Counts = Field(default_factory=Counts)
    failures: list[Failure] = Field(default_factory=list)
    timings: StageTimings = Field(default_factory=StageTimings)

    def add(self, report: BatchReport) -> None:
        """Fold a batch's report into the totals."""
        self.counts.documents_indexed += report.indexed
        self.counts.documents_failed += len(report.failures)
        self.counts.chunks += report.chunks
        self.failures.extend(report.failures)
        for stage in ("parse", "chunk", "embed", "write"):
            setattr(self.timings, stage, getattr(self.timings, stage) + getattr(report.timings, stage))


def begin_build(store: IndexStore, settings: Settings, embedder: Embedder, chunker: Chunker) -> Manifest:
    """Create the empty collection of a new build of ``settings.alias``, manifest state "building"."""
    version = new_version(store, settings.alias)
    manifest = Manifest(
        alias=settings.alias,
        version=version,
        collection=collection_name(settings.alias, version),
        created_at=utc_now(),
        model=embedder.fingerprint,
        chunking=chunker.describe(),
        sources=[{"name": s.name, "kind": s.kind, "uri": s.uri} for s in settings.sources],
    )
    store.create_build(manifest)
    log.info("build %s started in collection %s", version, manifest.collection)
    return manifest


def index_batch(
    store: IndexStore,
    collection: str,
    documents: Sequence[DocumentRef],
    embedder: Embedder,
    chunker: Chunker,
    *,
    max_bytes: int,
) -> BatchReport:
    """Parse, chunk, embed and write one batch of documents into a build's collection.

    Idempotent: point ids derive from document id and chunk position, so re-running a batch rewrites
    the same points. A document that fails at any stage is reported, not raised; the others go on.
    Store errors do raise (the batch as a whole did not land).
    """
    report = BatchReport(documents=len(documents))
    chunks: list[Chunk] = []
    for doc in documents:
        try:
            with _timed(report.timings, "parse"):
                elements = parse_document(doc, max_bytes=max_bytes)
            with _timed(report.timings, "chunk"):
                chunks.extend(chunker.chunk(doc, elements))
        except DocumentError as exc:
            report.failures.append(Failure(doc_id=doc.doc_id, uri=doc.uri, stage=exc.stage, reason=exc.reason))
            log.warning("failed %s (%s): %s", doc.doc_id, exc.stage, exc.reason)

    with _timed(report.timings, "embed"):
        chunks, vectors, failures = _embed_isolating_failures(chunks, embedder, documents)
    report.failures.extend(failures)
    with _timed(report.timings, "write"):
        store.upsert_chunks(collection, chunks, vectors)
    report.chunks = len(chunks)
    report.indexed = len({chunk.doc_id for chunk in chunks})
    return report


def finish_build(store: IndexStore, manifest: Manifest, progress: BuildProgress) -> Manifest:
    """Restore indexing, wait for the collection to be green, and mark the build complete.

    Called only after every batch is written, so "complete" in a manifest means durably complete.
    """
    status = store.finish_bulk_load(manifest.collection)
    manifest.counts = progress.counts.model_copy()
    manifest.failures = progress.failures[:MANIFEST_FAILURES]
    manifest.completed_at = utc_now()
    manifest.state = "complete"
    if status != "green":
        manifest.state, manifest.error = "failed", f"collection stayed {status} after the bulk load"
    store.write_manifest(manifest)
    return manifest


def fail_build(store: IndexStore, manifest: Manifest, error: str) -> None:
    """Record that a build stopped before completing (best effort: the store may be what failed)."""
    manifest.state, manifest.error = "failed", error[:500]
    try:
        store.write_manifest(manifest)
    except Exception as exc:  # the original error matters more than this one
        log.warning("could not mark build %s failed: %s", manifest.version, exc)


def reject_build(store: IndexStore, manifest: Manifest, reason: str) -> None:
    """Mark a complete build as rejected (not fit to serve); it stays for inspection until retention."""
    manifest.state, manifest.error = "rejected", reason
    store.write_manifest(manifest)


def batched(items: Sequence[DocumentRef], size: int) -> Iterator[Sequence[DocumentRef]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _embed_isolating_failures(
    chunks: list[Chunk], embedder: Embedder, documents: Sequence[DocumentRef]
) -> tuple[list[Chunk], np.ndarray, list[Failure]]:
    """Embed all chunks at once; if that fails, per document, so one bad document costs only itself."""
    try:
        return chunks, embedder.embed([c.text for c in chunks]), []
    except Exception as exc:  # noqa: BLE001 - narrowed below, per document
        log.warning("embedding a batch failed (%s); retrying document by document", exc)
    uris = {doc.doc_id: doc.uri for doc in documents}
    kept: list[Chunk] = []
    parts: list[np.ndarray] = []
    failures: list[Failure] = []
    for doc_id in dict.fromkeys(c.doc_id for c in chunks):
        doc_chunks = [c for c in chunks if c.doc_id == doc_id]
        try:
            parts.append(embedder.embed([c.text for c in doc_chunks]))
            kept.extend(doc_chunks)
        except Exception as exc:  # noqa: BLE001 - any model error is this document's failure
            failures.append(Failure(doc_id=doc_id, uri=uris[doc_id], stage="embed", reason=str(exc)[:300]))
    dimension = embedder.fingerprint.dimension
    vectors = np.concatenate(parts) if parts else np.zeros((0, dimension), dtype=np.float32)
    return kept, vectors, failures


@contextmanager
def _timed(timings: StageTimings, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)
