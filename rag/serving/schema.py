"""What the query service reads and writes: the request and response bodies of every ``/v1`` route.

One pydantic model per body, with examples, so the OpenAPI document (``/openapi.json``, ``/docs``) is the
reference. Fields may be added, never renamed or removed within ``/v1``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rag.config import ServeSettings
from rag.index.audit import AuditEvent
from rag.models import Hit, ModelFingerprint
from rag.store import FILTER_FIELDS, Between, Condition, Match, Prefix

_STRINGS = str | list[str]
_INTS = int | list[int]


class PageRange(BaseModel):
    """An inclusive range of numbers; an open end is left out."""

    model_config = ConfigDict(extra="forbid")

    gte: int | None = Field(None, description="At least this.")
    lte: int | None = Field(None, description="At most this.")


class SearchFilter(BaseModel):
    """Conditions every hit meets, all of them (Qdrant's filter semantics). Only indexed fields can be
    filtered on: a field not listed here is refused with 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"source": "handbook", "doc_id_prefix": "handbook/guides/", "page": {"gte": 1, "lte": 3}}]})

    source: _STRINGS | None = Field(None, description="Source name, or any of several.")
    doc_id: _STRINGS | None = Field(None, description="Document id, or any of several.")
    doc_id_prefix: str | None = Field(None, min_length=1, description="Document ids starting with this "
                                      "(byte-wise, case-sensitive), e.g. a folder: `handbook/guides/`.")
    title: _STRINGS | None = Field(None, description="Section heading the chunk belongs to, or any of several.")
    page: _INTS | PageRange | None = Field(None, description="Page (paged formats), any of several, or a range.")
    chunk_index: _INTS | PageRange | None = Field(None, description="Position of the chunk in its document.")

    def conditions(self) -> list[Condition]:
        """The store's conditions for this filter."""
        conditions: list[Condition] = []
        for field in FILTER_FIELDS:
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, PageRange):
                conditions.append(Between(field, value.gte, value.lte))
            else:
                conditions.append(Match(field, tuple(value) if isinstance(value, list) else (value,)))
        if self.doc_id_prefix is not None:
            conditions.append(Prefix("doc_id", self.doc_id_prefix))
        return conditions


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, description="How many hits (at most `serve.max_k`).")
    filter: SearchFilter | None = Field(None, description="Conditions every hit meets.")
    version: str | None = Field(None, description="Answer from this kept build of the alias instead of the live "
                                "one (comparisons, canaries). 404 if the alias has no such complete build.")


class SearchRequest(_Query):
    """``POST /v1/search``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"query": "how do I undo a bad promotion?", "k": 3},
        {"query": "rollback", "k": 5, "filter": {"source": "handbook"}, "version": "20261202-150320"}]})

    query: str = Field(description="What to search for. Not empty; at most `serve.max_query_chars` characters.")


class BatchSearchRequest(_Query):
    """``POST /v1/search/batch``: several queries, all answered by the same build."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"queries": ["how do I undo a bad promotion?", "what is a golden set?"], "k": 3}]})

    queries: list[str] = Field(min_length=1, description="At most `serve.max_batch` queries, each as in /v1/search.")


class ModelInfo(BaseModel):
    """The model a build was embedded with, which also embedded the query: its weights and the vector space
    it computes in (an int8 and a float32 build of one model give different vectors)."""

    name: str
    weights_sha256: str = Field(description="Hash over the model folder (the model's identity).")
    dimension: int
    # Defaults: a client reading an older service's answers, which lacked these fields.
    dtype: str = Field("float32", description="The weights' dtype: float32 or bfloat16.")
    quantization: str = Field("none", description="Weight quantization: none or int8 (onnx).")
    backend: str = Field("torch", description="What ran the model: torch (sentence-transformers) or onnx.")
    space: str = Field("reference", description="The vector space: reference (float32, either backend), int8 or "
                       "bfloat16. Vectors of different spaces are not comparable.")

    @classmethod
    def of(cls, fingerprint: ModelFingerprint) -> ModelInfo:
        """What a response shows of a build's model fingerprint."""
        return cls(name=fingerprint.name, weights_sha256=fingerprint.weights_sha256, dimension=fingerprint.dimension,
                   dtype=fingerprint.dtype, quantization=fingerprint.quantization, backend=fingerprint.backend,
                   space=fingerprint.space)


class SearchResponse(BaseModel):
    """Hits of one query, best first, and the one build (and model) that answered."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "alias": "docs", "version": "20261202-150320", "model": {"name": "all-MiniLM-L6-v2",
        "weights_sha256": "aad50169…", "dimension": 384, "dtype": "float32", "quantization": "int8",
        "backend": "onnx", "space": "int8"}, "query": "how do I undo a bad promotion?",
        "truncated": False, "hits": [{"score": 0.61, "doc_id": "handbook/operations.pdf", "source_uri":
        "file:///srv/handbook/operations.pdf", "chunk_index": 4, "title": "Rollback", "page": 2,
        "text": "ragops rollback moves the alias back…", "version": "20261202-150320"}]}]})

    alias: str
    version: str = Field(description="The build that answered (every hit names it too).")
    model: ModelInfo
    query: str
    truncated: bool = Field(description="The query was longer than the model reads (its max_seq_length "
                            "tokens): only its beginning was embedded.")
    hits: list[Hit]


class QueryHits(BaseModel):
    """One query of a batch, and its hits."""

    query: str
    truncated: bool
    hits: list[Hit]


class BatchSearchResponse(BaseModel):
    """Every query of a batch, in order, answered by the same build."""

    alias: str
    version: str
    model: ModelInfo
    results: list[QueryHits]


class VersionResponse(BaseModel):
    """``GET /v1/version``: what answers now."""

    alias: str
    version: str
    collection: str
    model: ModelInfo
    created_at: datetime
    promoted_at: datetime | None = Field(description="When the alias last moved onto this build.")
    promoted_by: str | None = Field(description="reindex, rollback or promote.")
    documents: int
    chunks: int
    sources: list[str]
    gate_passed: bool | None = Field(description="The gate's verdict when the build was made (None: no gate ran).")
    metrics: dict[str, float] = Field(description="Retrieval on the golden set when the build was made.")


class SourceStatistics(BaseModel):
    """One source of the alias, from the ledger the last reindex wrote."""

    name: str
    kind: str
    uri: str
    documents: int = Field(description="Documents of this source in the live build.")
    quarantined: int = Field(description="Documents whose current version failed to index.")
    last_complete_listing_at: datetime | None
    last_indexed_at: datetime | None = Field(description="Last time the live build reflected a complete listing.")
    staleness_seconds: float | None = Field(description="How far the live build may lag behind the source.")
    max_staleness_seconds: float | None
    breach: bool


class StatisticsResponse(BaseModel):
    """``GET /v1/statistics``: every configured source of the alias."""

    alias: str
    version: str
    sources: list[SourceStatistics]


class AuditTrailResponse(BaseModel):
    """The alias's audit trail (rag/index/audit.py), oldest first: what ``ragops audit --json`` prints."""

    alias: str
    since: str | None = Field(None, description="Only events at or after this time, as asked.")
    events: list[AuditEvent]


class ErrorDetail(BaseModel):
    kind: str = Field(description="invalid_request, unauthorized, forbidden, unknown_version, not_ready, "
                      "store, internal; too_large, timeout, busy (the service's limits: docs/serving.md).")
    message: str = Field(description="What was wrong and what to do.")


class ErrorResponse(BaseModel):
    """Every error, whatever the route: one shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"kind": "invalid_request", "message": "query: must not be empty"}}]})

    error: ErrorDetail


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    version: str | None = None
    reason: str | None = Field(None, description="Why not ready yet.")


def query_problem(text: str, serve: ServeSettings) -> str | None:
    """What is wrong with a query under the service's limits (None: nothing). The HTTP routes and the
    MCP tool refuse the same queries with the same words."""
    if not text.strip():
        return "must not be empty"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry a lone surrogate (\ud800); no tokenizer reads one
        return "holds a lone surrogate (\\ud800-\\udfff escape), which is not text: send UTF-8"
    if len(text) > serve.max_query_chars:
        return f"{len(text)} characters, over the limit of {serve.max_query_chars} (serve.max_query_chars)"
    return None


def k_problem(k: int, serve: ServeSettings) -> str | None:
    """What is wrong with ``k`` under the service's limits (None: nothing)."""
    if not 1 <= k <= serve.max_k:
        return f"{k} is outside 1..{serve.max_k} (serve.max_k)"
    return None
