"""A batch of a build's work: new or changed documents fetched, parsed, redacted, chunked, embedded, written.

``prepare_batch`` fetches and parses each work item (rag/index/plan.py's ``WorkItem``) in the parse
sandbox (rag/ingest/sandbox.py), journaled (rag/index/journal.py) and redacted per source
(rag/ingest/redaction.py). If the parsed text hashes the same as in the base (a touch, an identical
re-upload), the old chunks are carried; otherwise it chunks. It touches no store, so it can run on a
Dask worker. ``write_batch`` takes vectors from the embedding cache, embeds only the misses, and
writes (``index_batches`` does both steps in this process, parsing the next batch while the current
one embeds; flows/fanout.py spreads them on Dask).

A document that fails is *quarantined*: its previous good version stays in the build, and it is
retried when its signal moves again, or, when its parse timed out or stalled (not a property of the
document), by a later run after a back-off (``rag.index.plan.next_retry``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from rag.embed.embedder import Embedder
from rag.errors import DocumentError
from rag.failpoints import failpoint
from rag.index.cache import EmbeddingCache
from rag.index.journal import ParseJournal
from rag.index.plan import RETRY_BACKOFF, WorkItem, next_retry
from rag.index.progress import BatchReport, Pulse, timed
from rag.ingest.chunking import Chunker
from rag.ingest.parsing import check_size
from rag.ingest.redaction import Redactor
from rag.ingest.sandbox import ParseSandbox
from rag.models import Chunk, DocumentRecord, DocumentRef, Failure, Manifest, Quarantine, StageTimings, utc_now
from rag.store import IndexStore

log = logging.getLogger(__name__)

#: fetches a listed document to a local file inside the given folder (connectors.Fetcher)
Fetch = Callable[[DocumentRef, Path], Path]
#: texts -> their vectors, shape (len(texts), dimension)
Embed = Callable[[Sequence[str]], np.ndarray]
T = TypeVar("T")
#: texts embedded between two progress counts (the encoder still sorts each slice by length)
EMBED_SLICE = 512


class PreparedBatch(BaseModel):
    """A batch fetched, parsed and chunked, with no store touched: what is left is embedding and writing.

    ``prepare_batch`` makes it wherever tasks run (a Dask worker, say); ``write_batch`` finishes it in
    the process that holds the store.
    """

    items: list[WorkItem]
    fresh: list[tuple[DocumentRecord, list[Chunk]]] = Field(
        default_factory=list, description="New or changed documents with their chunks, to embed and write."
    )
    keep: list[DocumentRecord] = Field(
        default_factory=list, description="Base versions carried as they are (unchanged text, or a failure)."
    )
    failures: list[Failure] = Field(default_factory=list)
    touched: int = Field(0, description="Documents in ``keep`` because their text is the base's (not failures).")
    timings: StageTimings = Field(default_factory=StageTimings)

    def texts(self) -> dict[str, str]:
        """Every chunk text of the batch, by text hash (identical texts once)."""
        return {chunk.text_hash: chunk.text for _, chunks in self.fresh for chunk in chunks}


def prepare_batch(
    items: Sequence[WorkItem], chunker: Chunker, fetch: Fetch, *, version: str, max_bytes: int, now: datetime,
    sandbox: ParseSandbox, journal: ParseJournal | None = None, max_attempts: int = 2,
    redactors: Mapping[str, Redactor] | None = None, retry_backoff: timedelta = RETRY_BACKOFF,
    pulse: Pulse | None = None,
) -> PreparedBatch:
    """Fetch, parse and chunk new or changed documents. Touches no store without a journal, so it can
    run anywhere.

    A document that fails is quarantined in the result, never raised; if the base held a good version
    of it, that version is kept. A document whose parsed text hashes as in the base (a touch, an
    identical re-upload) keeps its chunks and vectors.

    Args:
        sandbox: parses each document, and cuts it into sections, in a child process within time and
            memory bounds; a document it cannot start a child for fails (kind "sandbox"), and so does
            the rest of the batch, untried (a later run parses them again, as after a timeout).
        journal: records each document while it is parsed and chunked (rag/index/journal.py); a version
            that ``max_attempts`` runs died on is quarantined instead of parsed again.
        redactors: by source name, for sources that redact (rag/ingest/redaction.py): their documents' text
            is redacted right after parsing, so nothing after (hashes, chunks, vectors) sees the original.
        retry_backoff: how long a document whose parse timed out or stalled (or found no sandbox) waits
            for a later run (``pipeline.parse_retry_backoff``; ``rag.index.plan.next_retry``).
        pulse: counts each document prepared (progress inside a batch).
    """
    batch = PreparedBatch(items=list(items))
    unavailable: DocumentError | None = None  # the sandbox could not start: the rest of the batch is not tried
    with tempfile.TemporaryDirectory(prefix="ragops-fetch-") as folder:
        for item in items:
            if pulse is not None:
                pulse.documents += 1
            ref, previous = item.ref, item.previous
            redactor = (redactors or {}).get(ref.source)
            try:
                if unavailable is not None:
                    raise DocumentError("parse", unavailable.reason, failure="sandbox")
                with timed(batch.timings, "fetch"):
                    check_size(ref, max_bytes)
                    local = ref.model_copy(update={"path": fetch(ref, Path(folder))})
                with _journaled(journal, local, max_attempts):
                    _prepare_document(batch, item, local, chunker, sandbox, redactor, version=version,
                                      max_bytes=max_bytes, now=now)
            except DocumentError as exc:
                if exc.failure == "sandbox":
                    unavailable = exc
                reason = redactor.redact_text(exc.reason) if redactor else exc.reason
                _quarantine(batch, ref, previous, exc.stage, reason, now, kind=exc.failure, backoff=retry_backoff)
    return batch


def _prepare_document(
    batch: PreparedBatch, item: WorkItem, local: DocumentRef, chunker: Chunker, sandbox: ParseSandbox,
    redactor: Redactor | None, *, version: str, max_bytes: int, now: datetime,
) -> None:
    """Parse, redact and chunk one fetched document into ``batch`` (fresh, or kept when its text is the
    base's). The sandbox parses it and cuts it into sections within its bounds; this process fits the
    sections to the model's tokens (rag/ingest/chunking.py).

    Raises:
        DocumentError: it failed (the reason says where and why).
    """
    ref, previous = item.ref, item.previous
    with timed(batch.timings, "parse"):
        elements = sandbox.parse(local, max_bytes=max_bytes)
    redaction = {"redaction": redactor.policy if redactor else None, "redacted": {}}
    if redactor is not None:
        with timed(batch.timings, "redact"):
            elements, found = redactor.redact(elements)
        redaction["redacted"] = dict(sorted(found.items()))
    content_hash = hash_text(element.text for element in elements)
    if previous and previous.chunks and previous.content_hash == content_hash:
        # Only the listing signal (or a redaction policy that changes nothing here) moved: same chunks, same vectors.
        batch.keep.append(previous.model_copy(update=_seen(ref, now) | redaction | {"quarantine": None}))
        batch.touched += item.status == "changed"  # a retried version was not counted as changed
        return
    with timed(batch.timings, "chunk"):
        sections = sandbox.sections(elements, chunker.section_options)
        failpoint("chunk")
        chunks = chunker.fit(ref, sections)
    record = DocumentRecord(
        doc_id=ref.doc_id, source=ref.source, uri=ref.uri, signal=ref.signal, content_hash=content_hash,
        modified=ref.modified, first_seen=previous.first_seen if previous else now, last_seen=now,
        indexed_at=now, indexed_in=version, chunks=len(chunks), **redaction,
    )
    batch.fresh.append((record, chunks))


@contextmanager
def _journaled(journal: ParseJournal | None, ref: DocumentRef, max_attempts: int) -> Iterator[None]:
    """The document journaled while the block parses and chunks it (rag/index/journal.py): a run that dies
    meanwhile leaves its entry. A version that ``max_attempts`` runs died on is quarantined instead.

    Raises:
        DocumentError: that many runs died on this version (kind "crash").
    """
    if journal is None:
        yield
        return
    deaths = journal.begin(ref)
    failpoint("parse")
    try:
        if deaths >= max_attempts:
            raise DocumentError(
                "parse", f"{deaths} runs died while parsing or chunking this version (pipeline.max_parse_attempts: "
                f"{max_attempts}); not parsed again until the file changes", failure="crash",
            )
        yield
    except DocumentError:
        journal.end(ref)
        raise
    journal.end(ref)


def write_batch(
    store: IndexStore, manifest: Manifest, batch: PreparedBatch, embed: Embed, cache: EmbeddingCache, now: datetime
) -> BatchReport:
    """Embed what the cache lacks, then write a prepared batch's chunks, carried points and records.

    Idempotent: point ids derive from document id and chunk position, and vectors come from the cache
    once embedded. A document whose embedding fails is quarantined. Store errors do raise (the batch
    did not land).

    Args:
        embed: texts -> vectors (the model's ``Embedder.embed``, or vectors computed elsewhere).
    """
    report = BatchReport(timings=batch.timings.model_copy(), touched=batch.touched)
    fresh = {record.doc_id: (record, chunks) for record, chunks in batch.fresh}
    with timed(report.timings, "embed"):
        vectors, failed = _vectors_for(fresh, embed, cache, report)
    for doc_id, reason in failed.items():
        fresh.pop(doc_id)
        item = next(i for i in batch.items if i.ref.doc_id == doc_id)
        _quarantine(batch, item.ref, item.previous, "embed", reason, now)

    chunks = [chunk for _, doc_chunks in fresh.values() for chunk in doc_chunks]
    store.require_space()
    with timed(report.timings, "write"):
        store.upsert_chunks(manifest.collection, chunks, np.stack([vectors[c.text_hash] for c in chunks])
                            if chunks else np.zeros((0, manifest.model.dimension), dtype=np.float32))
    kept_with_points = [r for r in batch.keep if r.chunks]
    with timed(report.timings, "reuse"):
        if kept_with_points and manifest.base:
            ids = [point_id for r in kept_with_points for point_id in r.point_ids]
            store.copy_points(manifest.base, manifest.collection, ids)
    failpoint("write")
    report.records = [record for record, _ in fresh.values()] + batch.keep
    report.failures = list(batch.failures)
    with timed(report.timings, "write"):
        store.write_records(manifest.collection, report.records)
    reused = sum(r.chunks for r in kept_with_points)
    report.chunks = len(chunks) + reused
    report.chunks_reused += reused
    return report


def uncached_texts(batch: PreparedBatch, cache: EmbeddingCache) -> dict[str, str]:
    """The batch's chunk texts that the embedding cache lacks, by text hash: what must be embedded."""
    wanted = batch.texts()
    cached = cache.get(list(wanted))
    return {text_hash: text for text_hash, text in wanted.items() if text_hash not in cached}


def embedded_elsewhere(texts: dict[str, str], embedding) -> dict[str, np.ndarray]:
    """Vectors by text from a future embedding ``texts`` (a thread's, a Dask task's); empty when it
    failed or there was none, so that ``write_batch`` embeds them itself, document by document."""
    if embedding is None:
        return {}
    try:
        return dict(zip(texts.values(), embedding.result()))
    except Exception as exc:  # embedded again by write_batch
        log.warning("embedding a batch elsewhere failed (%s); embedding it here, document by document", exc)
        return {}


def precomputed(vectors: dict[str, np.ndarray], embedder: Embedder) -> Embed:
    """An embed function that answers from ``vectors`` (by text) and embeds anything else with ``embedder``."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in vectors]
        if missing:
            vectors.update(zip(missing, embedder.embed(missing)))
        return np.stack([vectors[text] for text in texts]) if texts else embedder.embed([])

    return embed


def index_batches(
    store: IndexStore,
    manifest: Manifest,
    batches: Sequence[Sequence[WorkItem]],
    embedder: Embedder,
    chunker: Chunker,
    cache: EmbeddingCache,
    fetch: Fetch,
    *,
    max_bytes: int,
    sandbox: ParseSandbox,
    journal: ParseJournal | None = None,
    max_attempts: int = 2,
    prepare: Callable[..., PreparedBatch] | None = None,
    write: Callable[..., BatchReport] | None = None,
    redactors: Mapping[str, Redactor] | None = None,
    retry_backoff: timedelta = RETRY_BACKOFF,
    pulse: Pulse | None = None,
) -> Iterator[BatchReport]:
    """``prepare_batch`` then ``write_batch`` for each batch, with the next batch parsed while the current
    one embeds.

    Parsing runs in the sandbox's child process and the encoder releases the GIL, so the two overlap on
    separate cores. One thread embeds, and only the texts the cache lacks; everything that touches the
    store (journal, cache, writes) stays on the calling thread, in order. A batch is written only after
    the next one is prepared: a kill loses at most two batches of work, and nothing is recorded as
    written before it is. Yields each batch's report in order.

    Args:
        prepare, write: ``prepare_batch`` and ``write_batch`` (the default), or wrappers of them with
            the same signature (the flow passes its Prefect tasks, which retry transient errors).
        redactors, retry_backoff: as ``prepare_batch`` takes them.
        pulse: counts documents prepared and chunks embedded as they are (``Pulse``).
    """
    prepare, write = prepare or prepare_batch, write or write_batch
    pulse = pulse or Pulse()

    def embed(batch: PreparedBatch, texts: list[str]) -> np.ndarray:
        # On the encoder thread. The batch's embed time is the encoder's own (it overlaps the next batch's
        # preparation), not the wait for it; the calling thread touches this batch again only after.
        with timed(batch.timings, "embed"):
            parts = []
            for start in range(0, len(texts), EMBED_SLICE):
                parts.append(embedder.embed(texts[start : start + EMBED_SLICE]))
                pulse.chunks += len(parts[-1])
            return np.concatenate(parts)

    def written(batch: PreparedBatch, texts: dict[str, str], embedding: Future | None) -> BatchReport:
        vectors = embedded_elsewhere(texts, embedding)
        return write(store, manifest, batch, precomputed(vectors, embedder), cache, utc_now())

    if batches:  # their imports run while the first documents parse in the sandbox's child
        needed = {item.ref.source for items in batches for item in items}
        warm = [chunker, *(r for name, r in (redactors or {}).items() if name in needed)]
        threading.Thread(target=_warm_up, args=(warm,), name="ragops-warm-up", daemon=True).start()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragops-embed") as encoder:
        pending: tuple[PreparedBatch, dict[str, str], Future | None] | None = None
        for items in batches:
            batch = prepare(items, chunker, fetch, version=manifest.version, max_bytes=max_bytes, now=utc_now(),
                            sandbox=sandbox, journal=journal, max_attempts=max_attempts, redactors=redactors,
                            retry_backoff=retry_backoff, pulse=pulse)
            texts = uncached_texts(batch, cache)
            embedding = encoder.submit(embed, batch, list(texts.values())) if texts else None
            if pending is not None:
                yield written(*pending)
            pending = (batch, texts, embedding)
        if pending is not None:
            yield written(*pending)



def hash_text(texts) -> str:
    """SHA-256 of a document's parsed text: what its chunks and vectors depend on, nothing volatile."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n\x00\n")
    return digest.hexdigest()


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _seen(ref: DocumentRef, now: datetime) -> dict:
    return {"signal": ref.signal, "modified": ref.modified, "uri": ref.uri, "last_seen": now}


def _quarantine(
    batch: PreparedBatch, ref: DocumentRef, previous: DocumentRecord | None, stage: str, reason: str, now: datetime,
    *, kind: str = "error", backoff: timedelta = RETRY_BACKOFF,
) -> None:
    """Record a failed version; keep the base's good version of the document if there is one. A timeout
    or a stall is recorded with the time after which a run parses the version again."""
    attempts, retry_after = next_retry(previous, ref, kind, now, backoff)
    batch.failures.append(Failure(doc_id=ref.doc_id, uri=ref.uri, reason=reason, retry_after=retry_after,
                                  stage=stage,  # type: ignore[arg-type]  # a str, validated against its Literal
                                  kind=kind))  # type: ignore[arg-type]  # likewise
    log.warning("quarantined %s (%s): %s%s", ref.doc_id, stage, reason,
                f"; retried by the first run after {retry_after:%Y-%m-%d %H:%M:%S} UTC" if retry_after else "")
    quarantine = Quarantine(reason=reason, signal=ref.signal, since=now, attempts=attempts, retry_after=retry_after,
                            stage=stage, kind=kind)  # type: ignore[arg-type]  # as above
    if previous and previous.chunks:
        batch.keep.append(previous.model_copy(update={"quarantine": quarantine, "last_seen": now}))
    else:
        batch.keep.append(
            DocumentRecord(
                doc_id=ref.doc_id, source=ref.source, uri=ref.uri, signal=ref.signal, modified=ref.modified,
                first_seen=previous.first_seen if previous else now, last_seen=now, quarantine=quarantine,
            )
        )


def _vectors_for(
    fresh: dict[str, tuple[DocumentRecord, list[Chunk]]],
    embed: Embed,
    cache: EmbeddingCache,
    report: BatchReport,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Vectors by text hash: from the cache, else embedded (and cached before anything records them).

    Returns the vectors and, per document whose embedding failed, the reason. Each chunk written counts
    once, as reused (its vector came from the cache) or embedded (this run computed it; identical chunk
    texts are sent to the model once, and every chunk of that text counts), so the two add up to the
    chunks written.
    """
    wanted = {chunk.text_hash: chunk.text for _, chunks in fresh.values() for chunk in chunks}
    vectors = cache.get(list(wanted))
    cached = set(vectors)
    missing = [h for h in wanted if h not in vectors]
    failed: dict[str, str] = {}
    if missing:
        try:
            embedded = embed([wanted[h] for h in missing])
        except Exception as exc:  # narrowed below, document by document
            log.warning("embedding a batch failed (%s); retrying document by document", exc)
            embedded = None
        if embedded is not None:
            failpoint("embed")  # vectors computed, not yet cached nor written
            cache.put(missing, embedded)
            vectors.update(zip(missing, embedded))
        else:
            for doc_id, (_, chunks) in fresh.items():
                todo = [c.text_hash for c in chunks if c.text_hash not in vectors]
                try:
                    doc_vectors = embed([wanted[h] for h in todo])
                except Exception as exc:  # this document's failure
                    failed[doc_id] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                cache.put(todo, doc_vectors)
                vectors.update(zip(todo, doc_vectors))
    written = [c.text_hash for doc_id, (_, chunks) in fresh.items() if doc_id not in failed for c in chunks]
    report.chunks_reused += sum(1 for h in written if h in cached)
    report.chunks_embedded += sum(1 for h in written if h not in cached)
    return vectors, failed


def _warm_up(parts: Sequence[Chunker | Redactor]) -> None:
    for part in parts:
        try:
            part.warm_up()
        except Exception as exc:  # the first real document meets the same problem and reports it
            log.debug("warming up %s failed: %s", type(part).__name__, exc)

