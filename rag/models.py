"""Typed records that travel between the steps of a build and out to users.

Connectors produce ``DocumentRef``s; parsing and chunking turn them into ``Chunk``s; the store keeps a
``Manifest`` per build; serving returns ``Hit``s; a run ends in a ``BuildSummary``. All are pydantic
models, so ``model_dump(mode="json")`` is the ``--json`` shape documented in docs/cli.md.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

#: bump when the manifest layout changes incompatibly
MANIFEST_SCHEMA = 1

# Point ids are UUIDv5 in this namespace: the same document chunk always gets the same id.
_POINT_NAMESPACE = uuid.UUID("6f1c1f0e-3c36-4d3e-9d55-2a8c7a0f5b11")

BuildState = Literal["building", "complete", "failed", "rejected"]
RunState = Literal["building", "complete", "failed", "rejected", "unchanged"]
FailureStage = Literal["fetch", "parse", "redact", "chunk", "embed"]
#: why a document failed: "error" (it cannot be read: corrupt, unsupported, too large; the reason says),
#: "memory" (past pipeline.parse_memory_mb), "crash" (the parser died on it, or runs died parsing it),
#: "timeout" (its parse used more than pipeline.parse_timeout of CPU time), "stalled" (its parse got
#: too little CPU for too long: a busy machine, a stopped or blocked parser), "sandbox" (the parsing
#: sandbox's child could not start, after a retry: it or a document before it in its batch)
FailureKind = Literal["error", "memory", "crash", "timeout", "stalled", "sandbox"]
#: failures that are not a property of the version: a later run parses it again (with a back-off)
RETRIED_FAILURES = frozenset({"timeout", "stalled", "sandbox"})


def chunk_point_id(doc_id: str, chunk_index: int) -> str:
    """Deterministic point id of a document's chunk: the same in every build."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}#{chunk_index}"))


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC (every timestamp ragops records)."""
    return datetime.now(timezone.utc)


class DocumentRef(BaseModel):
    """One document as a connector listed it: where it is and the cheap signals about it."""

    doc_id: str = Field(description="Stable id: <source name>/<path relative to the source root or prefix>.")
    source: str = Field(description="Name of the source that listed it.")
    uri: str = Field(description="Where the document lives (file:// or s3:// URI).")
    path: Path | None = Field(None, description="Local file to parse; None until fetched (S3).")
    size: int = Field(description="Bytes.")
    modified: float = Field(description="Modification time, seconds since the epoch.")
    signal: str = Field(
        description="Cheap change signal from the listing: size+mtime for files, the ETag for S3 objects."
    )


class Quarantine(BaseModel):
    """Why a document's current version is not indexed, and which version that was."""

    stage: FailureStage
    reason: str
    signal: str = Field(description="Listing signal of the failing version: it is retried once this moves.")
    since: datetime
    kind: FailureKind = Field("error", description="What kind of failure (rag.models.FailureKind).")
    attempts: int = Field(1, ge=1, description="Consecutive runs that failed on this version (timeouts, stalls).")
    retry_after: datetime | None = Field(
        None, description="A timeout or stall: the first run after this parses the version again. None: it is "
        "retried only once its signal moves.",
    )

    @model_validator(mode="before")
    @classmethod
    def _timeouts_recorded_before_kinds(cls, data: object) -> object:
        # Records written before failures had kinds said "timeout" only in the reason: they are retried
        # by the next run instead of staying out until the file changes (the defect kinds fix).
        if isinstance(data, dict) and "kind" not in data and any(
                mark in str(data.get("reason", "")) for mark in ("(pipeline.parse_timeout)", "(SIGXCPU)")):
            return {**data, "kind": "timeout", "retry_after": data.get("since")}
        return data

    @property
    def transient(self) -> bool:
        """Not a property of the version: a later run parses it again (``retry_after``); otherwise only a
        change does."""
        return self.retry_after is not None


class DocumentRecord(BaseModel):
    """A document's state in one build: its freshness record and what the build holds of it."""

    doc_id: str
    source: str
    uri: str
    signal: str = Field(description="Listing signal of the version whose chunks the build holds (or that failed).")
    content_hash: str | None = Field(None, description="SHA-256 of the parsed text; None if never parsed.")
    modified: float = Field(description="Source modification time of the listed version (epoch seconds).")
    first_seen: datetime
    last_seen: datetime = Field(description="Listing time of the last complete listing that contained it.")
    indexed_at: datetime | None = Field(None, description="When the chunks the build holds were parsed and embedded.")
    indexed_in: str | None = Field(None, description="Build version that first held these chunks.")
    chunks: int = Field(0, description="Chunks of the document in the build (0 if it never indexed).")
    quarantine: Quarantine | None = None
    redaction: str | None = Field(
        None, description="Id of the redaction policy its chunks were made under (rag.ingest.redaction); None: unredacted."
    )
    redacted: dict[str, int] = Field(
        default_factory=dict, description="Values redacted from it, by entity type (counts, never values)."
    )

    @property
    def point_ids(self) -> list[str]:
        """Ids of the document's points in the build."""
        return [chunk_point_id(self.doc_id, index) for index in range(self.chunks)]


class SourceState(BaseModel):
    """Freshness of one source for an alias, as of the last run that listed it."""

    name: str
    kind: str
    uri: str
    last_listing_at: datetime | None = None
    last_listing_error: str | None = Field(None, description="Why the last listing failed; None if it succeeded.")
    last_complete_listing_at: datetime | None = None
    last_sync_at: datetime | None = Field(
        None, description="Last time the live build reflected a complete listing of this source."
    )
    synced_through: datetime | None = Field(
        None,
        description="The live build reflects this source up to this time: the last complete listing when in "
        "sync, else the oldest change it misses.",
    )
    documents: int = Field(0, description="Documents of this source in the live build.")
    quarantined: int = Field(0, description="Documents of this source whose current version failed.")
    unsynced: int = Field(0, description="Changes (new, changed, deleted) the live build does not reflect.")
    oldest_unsynced_change: datetime | None = None


class Chunk(BaseModel):
    """A model-sized piece of a document, with the metadata that answers 'where is this from?'."""

    doc_id: str
    chunk_index: int = Field(ge=0, description="Position of the chunk within its document, from 0.")
    text: str
    source_uri: str
    source: str
    title: str | None = Field(None, description="Heading of the section the chunk belongs to, if any.")
    page: int | None = Field(None, description="1-based page number for paged formats (PDF, PPTX).")
    tokens: int = Field(0, description="Length in the model's tokens, special tokens excluded.")

    @property
    def point_id(self) -> str:
        """Deterministic Qdrant point id: re-running a build writes the same ids."""
        return chunk_point_id(self.doc_id, self.chunk_index)

    @property
    def text_hash(self) -> str:
        """SHA-256 of the embedded text: the embedding cache key (with the model fingerprint)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def payload(self) -> dict:
        """What is stored beside the vector in Qdrant."""
        return {**self.model_dump(exclude={"tokens"}), "text_hash": self.text_hash}


class Failure(BaseModel):
    """A document that could not be indexed, and why."""

    doc_id: str
    uri: str
    stage: FailureStage
    reason: str
    kind: FailureKind = Field("error", description="What kind of failure (timeout, stalled and sandbox are retried).")
    retry_after: datetime | None = Field(
        None, description="When a later run parses it again (a timeout or stall); None: once it changes."
    )


class ModelFingerprint(BaseModel):
    """Everything that decides which vector space an embedding lives in."""

    name: str = Field(description="Model name as configured (a packaged model name or a folder).")
    path: str = Field(description="Folder the weights were loaded from.")
    weights_sha256: str = Field(description="Hash over the model folder's files (weights, config, pooling).")
    dimension: int
    normalize: bool
    dtype: str
    max_seq_length: int
    backend: str = Field("torch", description="What ran the model: torch (sentence-transformers) or onnx.")
    quantization: str = Field("none", description="Weight quantisation: none or int8 (onnx).")
    probe_cosine: float | None = Field(
        None, description="onnx: smallest cosine to torch float32 on the fixed probe set, measured at load."
    )

    @property
    def space(self) -> str:
        """Which vector space the vectors live in: ``reference`` for torch float32 and every backend that
        agrees with it on the probe set (onnx float32, checked at each load, rag.embed.onnx), otherwise
        the variant (``bfloat16``, ``int8``), comparable only with itself."""
        if self.dtype == "float32" and self.quantization == "none":
            return "reference"
        return self.dtype if self.quantization == "none" else self.quantization

    @property
    def precision(self) -> str:
        """What the weights compute in, as people name it: ``int8`` for a quantized model (its activations
        stay float32), else the dtype (``float32``, ``bfloat16``)."""
        return self.dtype if self.quantization == "none" else self.quantization

    @property
    def label(self) -> str:
        """The model as every output shows it: name, precision and weights, e.g.
        ``all-MiniLM-L6-v2 (int8, aad501698b1a)``. Two builds of one model in different vector spaces
        (int8 and float32) must not read the same."""
        return f"{self.name} ({self.precision}, {self.weights_sha256[:12]})"

    def same_space(self, other: ModelFingerprint) -> bool:
        """True when vectors from both are comparable (paths and backends may differ)."""
        keys = ("weights_sha256", "dimension", "normalize", "space", "max_seq_length")
        return all(getattr(self, key) == getattr(other, key) for key in keys)

    def differences(self, other: ModelFingerprint) -> list[str]:
        """What tells this model from ``other``, one ``"what this != other"`` phrase per field that
        decides the vector space (weights, dimension, normalisation, dtype, quantization, sequence
        length); empty when nothing does (the path or backend alone may differ)."""
        found = []
        for key in ("weights_sha256", "dimension", "normalize", "dtype", "quantization", "max_seq_length"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                if key == "weights_sha256":
                    key, mine, theirs = "weights", mine[:12], theirs[:12]
                found.append(f"{key} {mine} != {theirs}")
        return found


class Counts(BaseModel):
    """How much a build holds, and how much of it this run had to redo."""

    documents_seen: int = Field(0, description="Documents listed (plus those kept from unlistable sources).")
    documents_indexed: int = Field(0, description="Documents with chunks in the build.")
    documents_failed: int = Field(0, description="Documents whose current version is quarantined.")
    documents_new: int = 0
    documents_changed: int = Field(
        0, description="Listed with a moved signal, or held under other redaction settings (re-parsed)."
    )
    documents_retried: int = Field(
        0, description="Unchanged documents parsed again because their last parse timed out or stalled."
    )
    documents_unchanged: int = Field(0, description="Carried over from the base build without parsing.")
    documents_touched: int = Field(
        0, description="Listed with a moved signal but parsed to the same text (a touch, an identical re-upload): "
        "their chunks and vectors were kept. Not counted as changed.",
    )
    documents_deleted: int = Field(0, description="In the base build but absent from a complete listing.")
    chunks: int = Field(0, description="Points in the build.")
    chunks_embedded: int = Field(0, description="Chunks embedded by this run (never embedded before).")
    chunks_reused: int = Field(0, description="Chunks whose vectors came from the base build or the cache.")
    documents_redacted: int = Field(0, description="Documents of the build with at least one value redacted.")
    redacted: dict[str, int] = Field(
        default_factory=dict, description="Values redacted across the build's documents, by entity type."
    )


class PromotionEvent(BaseModel):
    """One move of the alias onto this build."""

    at: datetime
    by: Literal["reindex", "rollback", "promote"]
    replaced: str | None = Field(None, description="Collection the alias pointed at before.")
    reason: str
    forced: bool = Field(False, description="Promoted with --force over a failed or missing gate.")
    pending: bool = Field(
        False,
        description="Written just before the alias move and not yet confirmed after it: true only when the "
        "run died in between. The alias tells whether it happened (rag.index.versions.settle_promotions).",
    )


class EvaluationRecord(BaseModel):
    """A build's retrieval measured on a golden set: what the manifest keeps (per-query rows are not)."""

    version: str
    golden: str = Field(description="Golden set file the queries came from.")
    golden_sha256: str = Field(description="SHA-256 of the golden set's content: equal hashes, same questions.")
    queries: int = Field(description="Golden queries scored.")
    query_model: str = Field(
        description="Model the queries were embedded with: name, precision, weights (ModelFingerprint.label)."
    )
    metrics: dict[str, float] = Field(description="Mean of each metric over the scored queries.")
    advisory: dict[str, float] = Field(
        default_factory=dict, description="LLM-judged RAGAS means (never gate); empty without an endpoint."
    )
    evaluated_at: datetime
    seconds: float = Field(0.0, description="Wall time of the evaluation.")


class GateCheck(BaseModel):
    """One rule of the gate, with its figure and verdict."""

    kind: Literal["sanity", "floor", "max_drop", "approval"]
    metric: str | None = None
    value: float | None = Field(None, description="The candidate's figure.")
    threshold: float | None = Field(None, description="The floor, or the largest allowed drop.")
    baseline: float | None = Field(None, description="The live build's figure (max_drop checks).")
    passed: bool
    message: str


class GateResult(BaseModel):
    """The verdict on a candidate build: every check, and what it was compared against."""

    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    live: str | None = Field(None, description="Live build the candidate was compared with (None: first build).")
    baseline: EvaluationRecord | None = Field(None, description="The live build's evaluation in the same run.")
    golden: bool = Field(False, description="The candidate was scored on a golden set (its figures are in the "
                         "manifest's evaluation), whether or not a metric rule applied to them.")
    decided_at: datetime

    @property
    def failures(self) -> list[GateCheck]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]

    @property
    def reason(self) -> str:
        """One line: why the candidate passed or failed."""
        failed = self.failures
        if failed:
            return "gate failed: " + "; ".join(check.message for check in failed)
        measured = [c for c in self.checks if c.kind in ("floor", "max_drop")]
        if measured:
            why = f"{len(measured)} on metrics"
        elif not self.golden:
            why = "sanity only: no golden set"
        elif self.live is None:  # an alias's first build has no live build to compare with
            why = ("none on metrics: the golden set was scored, but a first build meets gate.floors only, and none "
                   "are set")
        else:
            why = "none on metrics: the golden set was scored, but gate.floors and gate.max_drop are empty"
        return f"gate passed ({len(self.checks)} checks, {why})" + "".join(
            f"; {c.message}" for c in self.checks if c.kind == "approval")


class Manifest(BaseModel):
    """A build's record, stored in its Qdrant collection's metadata (the source of truth)."""

    schema_version: int = MANIFEST_SCHEMA
    alias: str
    version: str
    collection: str
    state: BuildState = "building"
    created_at: datetime
    completed_at: datetime | None = None
    model: ModelFingerprint
    chunking: dict
    sources: list[dict]
    base: str | None = Field(None, description="Build whose documents and vectors this one reused.")
    counts: Counts = Field(default_factory=Counts)
    failures: list[Failure] = Field(default_factory=list, description="Failed documents (first 200).")
    promotions: list[PromotionEvent] = Field(default_factory=list)
    evaluation: EvaluationRecord | None = Field(None, description="Retrieval on the golden set, if one is set.")
    gate: GateResult | None = Field(None, description="The gate's verdict when the build was made.")
    error: str | None = Field(None, description="Why the build failed or was rejected.")

    @property
    def replaced(self) -> str | None:
        """The collection that was live before this build was last promoted (confirmed events only).

        A pending event is ignored: this manifest alone cannot tell whether its alias move happened.
        ``rag.index.versions.settle_promotions`` resolves pending events against the alias first (rollback and
        retention read the settled manifest).
        """
        confirmed = [event for event in self.promotions if not event.pending]
        return confirmed[-1].replaced if confirmed else None


class VersionInfo(BaseModel):
    """A build as ``ragops status`` shows it."""

    version: str
    collection: str
    live: bool
    points: int
    status: str
    manifest: Manifest | None = Field(None, description="None when the collection has no readable manifest.")
    damage: str | None = Field(
        None, description="Why the build cannot be trusted (unreadable manifest, files changed since it was sealed, "
        "points missing); None when it looks as it was written."
    )


class Hit(BaseModel):
    """One search result."""

    score: float
    doc_id: str
    source_uri: str
    chunk_index: int
    title: str | None
    page: int | None
    text: str
    version: str = Field(description="The build that answered.")


class StageTimings(BaseModel):
    """Seconds spent per stage of a build, summed over batches."""

    list: float = 0.0
    fetch: float = 0.0
    parse: float = 0.0
    redact: float = 0.0
    chunk: float = 0.0
    embed: float = 0.0
    write: float = 0.0
    reuse: float = 0.0
    promote: float = 0.0
    total: float = 0.0


class BuildSummary(BaseModel):
    """What a reindex run did: the shape of ``ragops reindex --json``."""

    alias: str
    version: str = Field(description="The new build, or the live one when nothing changed.")
    collection: str
    state: RunState = Field(description="'unchanged' when nothing changed and no build was made.")
    base: str | None = Field(None, description="Build whose unchanged documents were reused.")
    full_build: str | None = Field(
        None, description="Why the build had no base and parsed every document (None: it had one, or no build)."
    )
    counts: Counts
    failures: list[Failure]
    sources: list[SourceState] = Field(default_factory=list, description="Freshness of each source after the run.")
    notes: list[str] = Field(default_factory=list, description="Things the run wants you to know (failed listings).")
    redacted: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per document of the build with values redacted: how many of each entity type (never values).",
    )
    timings: StageTimings
    promoted: bool
    reason: str = Field(description="Why the build was or was not promoted.")
    live: str | None = Field(description="Collection the alias points at after the run.")
    previous: str | None = Field(description="Collection the alias pointed at when the run started.")
    deleted: list[str] = Field(default_factory=list, description="Old builds removed by retention.")
    gate: GateResult | None = Field(None, description="The gate's verdict on the new build (None: no build).")
    evaluation: EvaluationRecord | None = Field(None, description="The new build's golden-set metrics, if any.")
