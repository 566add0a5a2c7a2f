"""Typed records that travel between the steps of a build and out to users.

Connectors produce ``DocumentRef``s; parsing and chunking turn them into ``Chunk``s; the store keeps a
``Manifest`` per build; serving returns ``Hit``s; a run ends in a ``BuildSummary``. All are pydantic
models, so ``model_dump(mode="json")`` is the ``--json`` shape documented in docs/cli.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

#: bump when the manifest layout changes incompatibly
MANIFEST_SCHEMA = 1

# Point ids are UUIDv5 in this namespace: the same document chunk always gets the same id.
_POINT_NAMESPACE = uuid.UUID("6f1c1f0e-3c36-4d3e-9d55-2a8c7a0f5b11")

BuildState = Literal["building", "complete", "failed", "rejected"]
FailureStage = Literal["fetch", "parse", "chunk", "embed"]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC (every timestamp ragops records)."""
    return datetime.now(timezone.utc)


class DocumentRef(BaseModel):
    """One document as a connector listed it: where it is and the cheap signals about it."""

    doc_id: str = Field(description="Stable id: <source name>/<path relative to the source root>.")
    source: str = Field(description="Name of the source that listed it.")
    uri: str = Field(description="Where the document lives (file:// or s3:// URI).")
    path: Path = Field(description="Local file to parse.")
    size: int = Field(description="Bytes.")
    modified: float = Field(description="Modification time, seconds since the epoch.")


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
        return str(uuid.uuid5(_POINT_NAMESPACE, f"{self.doc_id}#{self.chunk_index}"))

    def payload(self) -> dict:
        """What is stored beside the vector in Qdrant."""
        return self.model_dump(exclude={"tokens"})


class Failure(BaseModel):
    """A document that could not be indexed, and why."""

    doc_id: str
    uri: str
    stage: FailureStage
    reason: str


class ModelFingerprint(BaseModel):
    """Everything that decides which vector space an embedding lives in."""

    name: str = Field(description="Model name as configured (a packaged model name or a folder).")
    path: str = Field(description="Folder the weights were loaded from.")
    weights_sha256: str = Field(description="Hash over the model folder's files (weights, config, pooling).")
    dimension: int
    normalize: bool
    dtype: str
    max_seq_length: int

    def same_space(self, other: ModelFingerprint) -> bool:
        """True when vectors from both are comparable (paths may differ between machines)."""
        keys = ("weights_sha256", "dimension", "normalize", "dtype", "max_seq_length")
        return all(getattr(self, key) == getattr(other, key) for key in keys)


class Counts(BaseModel):
    """How much a build holds."""

    documents_seen: int = 0
    documents_indexed: int = 0
    documents_failed: int = 0
    chunks: int = 0


class PromotionEvent(BaseModel):
    """One move of the alias onto this build."""

    at: datetime
    by: Literal["reindex", "rollback", "promote"]
    replaced: str | None = Field(None, description="Collection the alias pointed at before.")
    reason: str


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
    counts: Counts = Field(default_factory=Counts)
    failures: list[Failure] = Field(default_factory=list, description="Failed documents (first 200).")
    promotions: list[PromotionEvent] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the build failed or was rejected.")

    @property
    def replaced(self) -> str | None:
        """The collection that was live before this build was last promoted."""
        return self.promotions[-1].replaced if self.promotions else None


class VersionInfo(BaseModel):
    """A build as ``ragops status`` shows it."""

    version: str
    collection: str
    live: bool
    points: int
    status: str
    manifest: Manifest | None = Field(None, description="None when the collection has no readable manifest.")


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
    parse: float = 0.0
    chunk: float = 0.0
    embed: float = 0.0
    write: float = 0.0
    promote: float = 0.0
    total: float = 0.0


class BuildSummary(BaseModel):
    """What a reindex run did: the shape of ``ragops reindex --json``."""

    alias: str
    version: str
    collection: str
    state: BuildState
    counts: Counts
    failures: list[Failure]
    timings: StageTimings
    promoted: bool
    reason: str = Field(description="Why the build was or was not promoted.")
    live: str | None = Field(description="Collection the alias points at after the run.")
    previous: str | None = Field(description="Collection the alias pointed at when the run started.")
    deleted: list[str] = Field(default_factory=list, description="Old builds removed by retention.")
