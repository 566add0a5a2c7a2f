"""The steps of an index build, as plain functions (the reindex flow orchestrates them).

A build is a new collection ``<alias>__<version>`` plus its document table. It is incremental: it starts
from a *base*, the live build when it was made with the same model and chunking (else the newest such
complete build, else nothing), and does only what changed:

1. ``plan_against_store`` reads the live build, picks the base and plans against its document table
   (the decisions are pure functions in rag/index/plan.py). Unchanged documents are *carried* (points
   copied, nothing parsed), and new or changed ones become *work*. Documents a complete listing lacks
   are deleted by not being carried. A source whose listing failed keeps every document as it was.
2. ``carry_documents`` copies carried documents' points and records from the base.
3. ``prepare_batch`` fetches and parses each work item. If the parsed text hashes the same as in the
   base (a touch, an identical re-upload), the old chunks are carried; otherwise it chunks. It touches
   no store, so it can run on a Dask worker. ``write_batch`` takes vectors from the embedding cache,
   embeds only the misses, and writes (``index_batches`` does both steps in this process, parsing the
   next batch while the current one embeds). A document that fails is
   *quarantined*: its previous good version stays in the build, and it is retried when its signal
   moves again, or, when its parse timed out or stalled (not a property of the document), by a
   later run after a back-off (``rag.index.plan.next_retry``).
4. ``finish_build`` marks the build complete once everything is durably written.

Nothing here touches the serving alias or writes to any collection but the new build's (and the cache).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from rag.index import audit
from rag.index.cache import EmbeddingCache
from rag.ingest.chunking import Chunker
from rag.config import FolderSource, S3Source
from rag.embed.embedder import Embedder
from rag.errors import ConfigError, DocumentError
from rag.failpoints import failpoint
from rag.index.journal import ParseJournal
from rag.models import (
    Chunk,
    Counts,
    DocumentRecord,
    DocumentRef,
    EvaluationRecord,
    Failure,
    GateResult,
    Manifest,
    ModelFingerprint,
    Quarantine,
    StageTimings,
    utc_now,
)
from rag.store.names import collection_name, docs_collection
from rag.ingest.parsing import check_size
from rag.index.plan import (
    RETRY_BACKOFF,
    BuildPlan,
    Listing,
    WorkItem,
    choose_base,
    deleted_at_source,
    next_retry,
    plan_build,
    why_full,
)
from rag.ingest.redaction import Redactor
from rag.ingest.redaction import describe as describe_redaction
from rag.runtime import stop_reason
from rag.ingest.sandbox import ParseSandbox
from rag.secrets import redact_url
from rag.store import IndexStore
from rag.index.versions import new_version

log = logging.getLogger(__name__)

#: failures kept in a manifest (the run summary and the document table keep them all)
MANIFEST_FAILURES = 200

#: fetches a listed document to a local file inside the given folder (connectors.Fetcher)
Fetch = Callable[[DocumentRef, Path], Path]
#: texts -> their vectors, shape (len(texts), dimension)
Embed = Callable[[Sequence[str]], np.ndarray]
T = TypeVar("T")


class BatchReport(BaseModel):
    """What indexing one batch did."""

    records: list[DocumentRecord] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    chunks: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    touched: int = Field(0, description="Changed documents whose parsed text was the base's: kept as they were.")
    timings: StageTimings = Field(default_factory=StageTimings)


class Throughput:
    """Work done against the plan, its rate and the time left, as a progress line at a steady cadence.

    Args:
        documents: documents the run has to parse (the plan's work).
        every: seconds between two lines (the first and the last batch always get one).
        clock: the time source (``time.monotonic``).
    """

    def __init__(self, documents: int, *, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.documents, self.every, self.clock = documents, every, clock
        self.started = self.last = clock()
        self.lines = 0

    def line(self, documents_done: int, chunks_done: int) -> str | None:
        """The progress line for this point, or None when the last one is too recent to print another."""
        now = self.clock()
        finished = documents_done >= self.documents
        if self.lines and not finished and now - self.last < self.every:
            return None
        self.last, self.lines = now, self.lines + 1
        elapsed = max(now - self.started, 1e-9)
        rate = documents_done / elapsed
        text = (f"{documents_done}/{self.documents} documents ({documents_done / max(self.documents, 1):.0%}), "
                f"{chunks_done} chunks embedded, {rate:.1f} documents/s, {chunks_done / elapsed:.1f} chunks/s")
        if finished:
            return f"{text}, done in {_duration(elapsed)}"
        left = (self.documents - documents_done) / rate if rate > 0 else None
        return f"{text}, about {_duration(left)} left" if left is not None else text


class Pulse:
    """Work done so far, counted where it happens: documents as they are prepared (on the flow's thread)
    and chunks as they are embedded (on the encoder's thread, in slices of ``EMBED_SLICE`` texts). A
    reporter reads it between batches too, so a long batch (one huge document, a slow parser) still
    shows progress. Plain ints: one writer each, and a reader that only prints them."""

    def __init__(self) -> None:
        self.documents = 0
        self.chunks = 0


#: texts embedded between two progress counts (the encoder still sorts each slice by length)
EMBED_SLICE = 512


@contextmanager
def reporting(meter: Throughput, pulse: Pulse, report: Callable[[str], None], *, tick: float = 1.0) -> Iterator[None]:
    """While the block runs, a thread reports ``meter``'s line for ``pulse`` at the meter's cadence."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(tick):
            if not pulse.documents:
                continue
            line = meter.line(min(pulse.documents, meter.documents - 1), pulse.chunks)  # the last line is the caller's
            if line is not None:
                report(line)

    watcher = threading.Thread(target=watch, name="ragops-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class BuildProgress(BaseModel):
    """Running totals of a build."""

    counts: Counts = Field(default_factory=Counts)
    failures: list[Failure] = Field(default_factory=list)
    timings: StageTimings = Field(default_factory=StageTimings)
    redacted: dict[str, dict[str, int]] = Field(default_factory=dict, description="Redaction counts per document.")

    def add(self, report: BatchReport) -> None:
        """Fold a batch's report into the totals."""
        self.counts.documents_indexed += sum(1 for r in report.records if r.chunks)
        self.counts.documents_failed += sum(1 for r in report.records if r.quarantine)
        self.counts.chunks += report.chunks
        self.counts.chunks_embedded += report.chunks_embedded
        self.counts.chunks_reused += report.chunks_reused
        # Planned as changed (the signal moved); parsing showed the same text: a touch, not a change.
        self.counts.documents_touched += report.touched
        self.counts.documents_changed -= report.touched
        for record in report.records:
            if record.redacted and record.chunks:
                self.redacted[record.doc_id] = record.redacted
                self.counts.documents_redacted += 1
                for entity, count in record.redacted.items():
                    self.counts.redacted[entity] = self.counts.redacted.get(entity, 0) + count
        self.failures.extend(report.failures)
        for stage in ("fetch", "parse", "redact", "chunk", "embed", "write", "reuse"):
            setattr(self.timings, stage, getattr(self.timings, stage) + getattr(report.timings, stage))


class StartingPoint(BaseModel):
    """Where a run stands before it builds: the live build, the base, and the plan against the base."""

    live: str | None = Field(description="The collection the alias pointed at when the run planned.")
    plan: BuildPlan
    base_manifest: Manifest | None = None
    deleted_from_live: int = Field(0, description="Live documents the listings show deleted at their source.")
    live_damage: str | None = Field(None, description="Why the live build cannot be trusted (IndexStore.damage).")
    regate: Manifest | None = Field(
        None, description="A rejected build that already is what this run would build: gated again, not rebuilt."
    )

    @property
    def nothing_changed(self) -> bool:
        """The base is complete, the listings changed nothing and the live build is sound: no build is needed."""
        return self.base_manifest is not None and not self.plan.has_changes and not self.live_damage


def plan_against_store(
    store: IndexStore, alias: str, listings: Sequence[Listing], fingerprint: ModelFingerprint, chunking: dict,
    *, full_rebuild: bool, now: datetime, redaction: Mapping[str, str | None] | None = None,
    forget: Collection[str] = (),
) -> StartingPoint:
    """Read what the store holds of the alias and plan the build (``rag.index.plan``). Reads only.

    ``redaction``: each redacting source's policy id (``rag.index.plan.plan_build``). ``forget``: sources
    whose documents this run deletes (``ragops reindex --forget-source``).

    Raises:
        ConfigError: ``forget`` names a source this run lists, or one the live build holds nothing of; or
            the run has no base to carry the documents of a live source it does not list from (a full
            build must list every source it keeps).

    A damaged build (``IndexStore.damage``, deep checks) is never the base, and a damaged live build is
    never "unchanged": the run rebuilds it, with vectors from the embedding cache.
    """
    live = store.alias_target(alias)
    live_damage = store.damage(live, deep=True) if live else None
    notes = [f"the live build {live} is damaged ({live_damage}); not trusted: this run builds a replacement, "
             "with vectors from the embedding cache"] if live_damage else []
    base = None
    if not full_rebuild:
        manifests = [store.read_manifest(c) for c in store.list_builds(alias)]
        while (base := choose_base(live, manifests, fingerprint, chunking)) is not None:
            damage = live_damage if base == live else store.damage(base, deep=True)
            if not damage:
                break
            if base != live:
                notes.append(f"build {base} is damaged ({damage}); not used as a base")
            manifests = [m for m in manifests if m is None or m.collection != base]
    base_records = store.read_records(base) if base else {}
    live_records = base_records if base == live else store.read_records(live) if live and not live_damage else {}
    _check_sources(listings, base, base_records, live_records, forget)
    plan = plan_build(listings, base, base_records, now, redaction, forget)
    if base is None:
        plan.full = why_full(store.read_manifest(live) if live and not live_damage else None, fingerprint,
                             chunking, full_rebuild=full_rebuild, live_damage=live_damage)
    plan.notes[:0] = notes
    regate = None
    if plan.has_changes and not full_rebuild:
        regate = _rejected_twin(store, alias, live, listings, fingerprint, chunking, now, redaction, forget)
        if regate is not None:
            plan.notes.append(f"nothing changed since build {regate.version}, which the gate rejected "
                              f"({regate.error}); it is gated again instead of being built again")
    return StartingPoint(
        live=live, plan=plan, base_manifest=store.read_manifest(base) if base else None,
        deleted_from_live=deleted_at_source(listings, live_records, now, forget), live_damage=live_damage,
        regate=regate,
    )


def _rejected_twin(
    store: IndexStore, alias: str, live: str | None, listings: Sequence[Listing], fingerprint: ModelFingerprint,
    chunking: dict, now: datetime, redaction: Mapping[str, str | None] | None, forget: Collection[str],
) -> Manifest | None:
    """The newest build made after the live one, if the gate rejected it and it holds exactly what this
    run would build (same vector space, chunking and parsing, no document changed since): rebuilding it
    would only make one more identical build for the gate to reject again."""
    newer = [c for c in store.list_builds(alias) if live is None or c > live]
    if not newer:
        return None
    manifest = store.read_manifest(newer[-1])
    if (manifest is None or manifest.state != "rejected" or manifest.chunking != chunking
            or not manifest.model.same_space(fingerprint) or store.damage(manifest.collection)):
        return None
    records = store.read_records(manifest.collection)
    again = plan_build(listings, manifest.collection, records, now, redaction, forget)
    return None if again.has_changes else manifest


def _check_sources(listings: Sequence[Listing], base: str | None, base_records: dict[str, DocumentRecord],
                   live_records: dict[str, DocumentRecord], forget: Collection[str]) -> None:
    """Refuse a ``forget`` that would do something else than the user meant, and a run that would drop
    a live source it does not list because it has nothing to carry its documents from."""
    listed = {listing.source for listing in listings}
    held = sorted({r.source for r in live_records.values()} | {r.source for r in base_records.values()})
    for name in forget:
        if name in listed:
            raise ConfigError(f"--forget-source {name}: {name!r} is one of this run's sources; to delete its "
                              "documents, remove it from the sources (or from --source) and forget it")
        if name not in held:
            raise ConfigError(f"--forget-source {name}: the alias holds no documents of a source {name!r}"
                              + (f" (its sources: {', '.join(held)})" if held else " (it holds none)"))
    missing = sorted({r.source for r in live_records.values()} - listed - set(forget)
                     - {r.source for r in base_records.values()})
    if missing:
        why = "a full build" if base is None else f"its base {base} lacks them"
        raise ConfigError(
            f"the live build holds documents of {', '.join(map(repr, missing))}, which this run does not list, and "
            f"this run cannot keep them ({why}): add the source(s) to this run, or delete their documents with "
            + " ".join(f"--forget-source {name}" for name in missing))


def begin_build(
    store: IndexStore, alias: str, sources: Sequence[FolderSource | S3Source], fingerprint: ModelFingerprint,
    chunking: dict, base: str | None = None, redactors: Mapping[str, Redactor] | None = None,
) -> Manifest:
    """Create the empty collection (and document table) of a new build, manifest state "building".

    Each source's entry names its redaction (entities, mode, policy id), so the audit trail's policy
    hash of the build covers it.
    """
    redaction = describe_redaction(redactors or {})
    store.require_space()
    version = new_version(store, alias)
    manifest = Manifest(
        alias=alias,
        version=version,
        collection=collection_name(alias, version),
        created_at=utc_now(),
        model=fingerprint,
        chunking=chunking,
        sources=[{"name": s.name, "kind": s.kind, "uri": s.uri, "redact": redaction.get(s.name)} for s in sources],
        base=base,
    )
    store.create_build(manifest)
    log.info("build %s started in %s (base: %s)", version, manifest.collection, base or "none")
    return manifest


def carry_documents(store: IndexStore, base: str, collection: str, records: Sequence[DocumentRecord]) -> BatchReport:
    """Copy documents' points and records from the base build unchanged. Idempotent."""
    report = BatchReport(records=list(records))
    store.require_space()
    with _timed(report.timings, "reuse"):
        ids = [point_id for record in records for point_id in record.point_ids]
        copied = store.copy_points(base, collection, ids)
        if copied != len(ids):
            raise RuntimeError(f"base build {base} lacks {len(ids) - copied} of the points its table lists")
        store.write_records(collection, records)
    report.chunks = report.chunks_reused = copied
    return report


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
                with _timed(batch.timings, "fetch"):
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
    with _timed(batch.timings, "parse"):
        elements = sandbox.parse(local, max_bytes=max_bytes)
    redaction = {"redaction": redactor.policy if redactor else None, "redacted": {}}
    if redactor is not None:
        with _timed(batch.timings, "redact"):
            elements, found = redactor.redact(elements)
        redaction["redacted"] = dict(sorted(found.items()))
    content_hash = hash_text(element.text for element in elements)
    if previous and previous.chunks and previous.content_hash == content_hash:
        # Only the listing signal (or a redaction policy that changes nothing here) moved: same chunks, same vectors.
        batch.keep.append(previous.model_copy(update=_seen(ref, now) | redaction | {"quarantine": None}))
        batch.touched += item.status == "changed"  # a retried version was not counted as changed
        return
    with _timed(batch.timings, "chunk"):
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
    with _timed(report.timings, "embed"):
        vectors, failed = _vectors_for(fresh, embed, cache, report)
    for doc_id, reason in failed.items():
        fresh.pop(doc_id)
        item = next(i for i in batch.items if i.ref.doc_id == doc_id)
        _quarantine(batch, item.ref, item.previous, "embed", reason, now)

    chunks = [chunk for _, doc_chunks in fresh.values() for chunk in doc_chunks]
    store.require_space()
    with _timed(report.timings, "write"):
        store.upsert_chunks(manifest.collection, chunks, np.stack([vectors[c.text_hash] for c in chunks])
                            if chunks else np.zeros((0, manifest.model.dimension), dtype=np.float32))
    kept_with_points = [r for r in batch.keep if r.chunks]
    with _timed(report.timings, "reuse"):
        if kept_with_points and manifest.base:
            ids = [point_id for r in kept_with_points for point_id in r.point_ids]
            store.copy_points(manifest.base, manifest.collection, ids)
    failpoint("write")
    report.records = [record for record, _ in fresh.values()] + batch.keep
    report.failures = list(batch.failures)
    with _timed(report.timings, "write"):
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
        with _timed(batch.timings, "embed"):
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


def finish_build(store: IndexStore, manifest: Manifest, progress: BuildProgress) -> Manifest:
    """Restore indexing, wait for the collection to be green, and mark the build complete.

    Called only after every batch is written, so "complete" in a manifest means durably complete.
    """
    failpoint("finish")
    status = store.finish_bulk_load(manifest.collection)
    store.sync(manifest.collection)  # durably written before it is recorded as complete
    store.sync(docs_collection(manifest.collection))
    manifest.counts = progress.counts.model_copy()
    manifest.failures = progress.failures[:MANIFEST_FAILURES]
    manifest.completed_at = utc_now()
    manifest.state = "complete"
    if status != "green":
        manifest.state, manifest.error = "failed", f"collection stayed {status} after the bulk load"
    store.write_manifest(manifest)
    _audit_build(store, manifest)
    return manifest


def _audit_build(store: IndexStore, manifest: Manifest) -> None:
    """The build's entry in the audit trail: what it was made from and under which policy."""
    # Not the model's install path: the same weights installed elsewhere are the same policy.
    policy = manifest.model_dump(mode="json", include={"sources", "model", "chunking"}, exclude={"model": {"path"}})
    audit.record(store, manifest.alias, "build", build=manifest.collection,
                 why=manifest.error or f"build {manifest.state}",
                 details={"state": manifest.state, "base": manifest.base, "policy_sha256": audit.policy_hash(policy),
                          "policy": policy, "counts": manifest.counts.model_dump(mode="json")})


@contextmanager
def failing_on_error(store: IndexStore, manifest: Manifest) -> Iterator[None]:
    """Mark the build failed if the ``with`` block raises anything (an interrupt included), then re-raise."""
    try:
        yield
    except BaseException as exc:
        fail_build(store, manifest, stop_reason(exc))  # "stopped by Ctrl-C (SIGINT)", not "KeyboardInterrupt: "
        raise


def fail_build(store: IndexStore, manifest: Manifest, error: str) -> None:
    """Record that a build stopped before completing (best effort: the store may be what failed)."""
    # The manifest outlives the run and `ragops status` shows it: an error quoting a URL is redacted.
    manifest.state, manifest.error = "failed", redact_url(error)[:500]
    try:
        store.write_manifest(manifest)
    except Exception as exc:  # the original error matters more than this one
        log.warning("could not mark build %s failed: %s", manifest.version, exc)
        return
    _audit_build(store, manifest)


def record_verdict(
    store: IndexStore, manifest: Manifest, gate: GateResult, evaluation: EvaluationRecord | None
) -> Manifest:
    """Write the gate's verdict and the evaluation into the build's manifest; a failed gate rejects it,
    and a rejected build that passes when gated again (its golden set or gate fixed) is complete again.

    Only ever called on a candidate, never on the live build.
    """
    manifest.gate, manifest.evaluation = gate, evaluation
    if not gate.passed and manifest.state == "complete":
        manifest.state, manifest.error = "rejected", gate.reason
    elif gate.passed and manifest.state == "rejected":
        manifest.state, manifest.error = "complete", None
    store.write_manifest(manifest)
    if evaluation is not None:
        audit.record(store, manifest.alias, "evaluation", build=manifest.collection, why="gate evaluation",
                     details={"metrics": evaluation.metrics, "queries": evaluation.queries})
    audit.record(store, manifest.alias, "gate", build=manifest.collection, why=gate.reason,
                 details={"passed": gate.passed, "live": gate.live, "checks": [c.model_dump(mode="json")
                                                                              for c in gate.checks]})
    return manifest


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


@contextmanager
def _timed(timings: StageTimings, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)
