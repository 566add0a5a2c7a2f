"""What every ``ragops`` command prints with ``--json``: one pydantic model per command, in one place.

docs/cli.md shows these shapes and tests/cli/test_contracts.py keeps the two in step. The nested parts are
the domain models the code already produces (a hit, a build's manifest, a gate's verdict, a source's
freshness record...), so a field added to one of those reaches the output and this contract at once.

Each command builds its response model and prints ``model_dump(mode="json")``. The flows (reindex,
evaluate, drift-check) return plain dicts, because Prefect stores them; the command validates them into
these models. ``RESPONSES`` maps each command's name to its model.

The shapes are stable (docs/cli.md): fields may be added, but none renamed or removed without a major
version. A field in ``omit_when_none`` (``error`` of a report, ``summary`` of an error) is left out of
the object when it is None rather than printed as null, as the output has always done.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, SerializerFunctionWrapHandler, model_serializer

from evals.models import DriftReport, QueryResult
from rag.config import Settings
from rag.errors import RagopsError
from rag.index.audit import AuditEvent
from rag.index.plan import PlannedDocument
from rag.models import (
    BuildState,
    BuildSummary,
    Counts,
    DocumentRecord,
    EvaluationRecord,
    GateResult,
    Hit,
    SourceState,
    VersionInfo,
)
from rag.store.locks import LockHolder
from rag.store.migrate import Migration


class OmitWhenNone(BaseModel):
    """A model whose ``omit_when_none`` fields are left out of its dump when None (not printed as null)."""

    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self.omit_when_none:
            if name in data and data[name] is None:
                del data[name]
        return data


# --- errors (every command) ---------------------------------------------------------------------------

def _error_kinds(cls: type[RagopsError]) -> set[str]:
    return {sub.kind for sub in cls.__subclasses__()} | {k for sub in cls.__subclasses__() for k in _error_kinds(sub)}


#: every ``error.kind`` a command can print: each expected failure (rag.errors; a ``document`` error is
#: recorded in the run, never printed), ``usage``, a command line click rejected, and ``internal``, a bug
ERROR_KINDS: frozenset[str] = frozenset(_error_kinds(RagopsError) - {"document"} | {"usage", "internal"})


class ErrorBody(OmitWhenNone):
    """What went wrong: the ``error`` object of a failed command (and of a breached or drifted report)."""

    model_config = ConfigDict(extra="allow")  # an error's ``details`` ride along as further fields
    omit_when_none: ClassVar[frozenset[str]] = frozenset({"summary"})

    kind: str = Field(description="Machine-readable kind: one of ERROR_KINDS (docs/cli.md, Errors).")
    message: str = Field(description="What was wrong and what to do; secrets redacted.")
    exit_code: int = Field(description="The command's exit code.")
    summary: BuildSummary | None = Field(
        None, description="A reindex that finished but was refused (or breached freshness): what it did."
    )


class ErrorResponse(BaseModel):
    """Any command that failed: exactly this object on stdout under ``--json``."""

    error: ErrorBody


# --- index: reindex, status, rollback, unlock, promote ------------------------------------------------

#: ``ragops reindex``: the run summary, as the reindex flow returns it
ReindexResponse = BuildSummary


class ReindexPlanResponse(BaseModel):
    """``ragops reindex --dry-run``: what a reindex would do now, and why; nothing is built or locked."""

    alias: str
    live: str | None = Field(description="Collection the alias points at.")
    base: str | None = Field(description="Build whose unchanged documents would be carried.")
    full_build: str | None = Field(description="Why there would be no base (every document parsed); None: a base.")
    would_build: bool = Field(description="False when nothing changed (no build) or a rejected build is re-gated.")
    regate: str | None = Field(
        description="A rejected build that already is what this run would build: it would be gated again instead."
    )
    counts: Counts = Field(description="Planned document counts (chunk counts are known only after parsing).")
    documents: list[PlannedDocument] = Field(description="Each document that would be parsed or deleted, and why.")
    notes: list[str]


class StatusResponse(BaseModel):
    """``ragops status``: where the alias points and every build of it, newest first."""

    alias: str
    store: str = Field(description="The store's location, password redacted.")
    live: str | None = Field(description="Collection the alias points at; None before the first promotion.")
    versions: list[VersionInfo]
    quarantined: list[DocumentRecord] = Field(description="Live build's documents whose current version failed.")


class AuditResponse(BaseModel):
    """``ragops audit``: the alias's audit trail, oldest first."""

    alias: str
    since: str | None = Field(description="Only events at or after this time (ISO 8601), as asked; None: all.")
    events: list[AuditEvent]


class RollbackResponse(BaseModel):
    """``ragops rollback``: the alias's move back (``from`` and ``to`` are collections)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    alias: str
    from_: str = Field(alias="from", description="Collection the alias pointed at before.")
    to: str = Field(description="Collection it points at now.")
    from_version: str
    to_version: str


class UnlockResponse(BaseModel):
    """``ragops unlock``: the alias's lock kind, and the holder freed (None: nobody held it)."""

    alias: str
    kind: Literal["file", "lease"]
    freed: LockHolder | None


class PromoteResponse(BaseModel):
    """``ragops promote``: the promotion event recorded in the build's manifest."""

    alias: str
    version: str
    collection: str
    replaced: str | None = Field(description="Collection the alias pointed at before (where rollback goes).")
    forced: bool
    reason: str
    state: BuildState
    gated_now: bool = Field(description="True when this command gave the build its gate verdict.")
    gate: GateResult | None = Field(description="The verdict the promotion relied on (None: forced, never gated).")


# --- search -------------------------------------------------------------------------------------------

class QueryResponse(BaseModel):
    """``ragops query``: the hits of one query, all from one build."""

    alias: str
    query: str
    version: str | None = Field(description="The build that answered; None when it holds nothing.")
    hits: list[Hit]


# --- quality: freshness, eval, drift, bench -----------------------------------------------------------

class SourceFreshnessRow(SourceState):
    """A source's recorded freshness state, with its staleness now and its limit."""

    staleness_seconds: float | None
    max_staleness_seconds: float | None
    breach: bool
    message: str


class DocumentRow(DocumentRecord):
    """A document record of the live build (``freshness --documents``), with where it is served."""

    build: str = Field(description="The live build that holds it.")
    modified_at: str = Field(description="``modified`` as ISO 8601 (UTC).")


class FreshnessResponse(OmitWhenNone):
    """``ragops freshness``: each source's lag behind the live index; ``error`` only on a breach (exit 5)."""

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"error"})

    alias: str
    live: str | None
    sources: list[SourceFreshnessRow]
    documents: list[DocumentRow] | None = Field(description="Every document record (--documents), else None.")
    error: ErrorBody | None = None


class EvalResponse(BaseModel):
    """``ragops eval``: a build's golden-set scores, every per-query row, and the gate's rules if compared."""

    alias: str
    version: str
    collection: str
    live: bool = Field(description="Whether the scored build is the live one.")
    evaluation: EvaluationRecord
    per_query: list[QueryResult]
    missing: list[str] = Field(description="Relevant documents the build does not serve (scored as misses).")
    gate: GateResult | None = Field(description="Against the live build; None when live or --no-compare.")


class DriftResponse(DriftReport, OmitWhenNone):
    """``ragops drift``: the drift report (``evals.models.DriftReport``); ``error`` only on drift (exit 6)."""

    omit_when_none: ClassVar[frozenset[str]] = frozenset({"error"})

    error: ErrorBody | None = None


class BenchSeconds(BaseModel):
    """Wall time of a benchmark run, per phase."""

    index: float
    evaluate: float
    total: float


class BenchBackend(BaseModel):
    """One encoder backend's run of ``ragops bench beir``."""

    backend: str = Field(description="torch, onnx or onnx-int8.")
    model: str = Field(description="Query model: name, precision and weights hash prefix.")
    space: str = Field(description="Its vector space: reference (float32, either backend), int8 or bfloat16.")
    metrics: dict[str, float]
    seconds: BenchSeconds


class BenchResponse(BaseModel):
    """``ragops bench beir``: a BEIR dataset's retrieval metrics through the same pipeline.

    ``model``, ``metrics`` and ``seconds`` are the first backend's; ``backends`` holds every one asked for.
    """

    dataset: str
    split: str
    documents: int
    queries: int
    model: str = Field(description="Query model: name, precision and weights hash prefix.")
    metrics: dict[str, float]
    seconds: BenchSeconds
    store: str | None = Field(description="The kept store (--keep), else None (it was deleted).")
    backends: list[BenchBackend] = Field(default_factory=list, description="Each --backend's run, in order.")


# --- config -------------------------------------------------------------------------------------------

class ConfigResponse(RootModel[dict[str, Any]]):
    """``ragops config``: the effective settings, ``rag.config.Settings``' JSON dump with secrets masked.

    Free-form here: a masked value (``"**********"``, ``user:***@host``) is no longer a valid setting,
    so the object is not validated back into ``Settings``; its keys are ``Settings``' fields.
    """

    #: the model whose JSON dump this is
    shape_of: ClassVar[type[BaseModel]] = Settings


class MigrateResponse(Migration):
    """``ragops migrate``: what was carried over from the local-mode store (kept at ``backup``)."""


class NewKeyResponse(BaseModel):
    """``ragops serve --new-key ID``: a fresh API key, shown once, and the entry that admits it."""

    id: str
    key: str = Field(description="The key itself: give it to the client; it is not stored anywhere.")
    sha256: str = Field(description="What `serve.api_keys[].sha256` holds.")
    aliases: list[str]


#: each command's ``--json`` success object, by the command's name as typed after ``ragops``
#: (``serve`` prints one only with ``--new-key``; serving itself writes logs)
RESPONSES: dict[str, type[BaseModel]] = {
    "reindex": ReindexResponse,
    "query": QueryResponse,
    "status": StatusResponse,
    "audit": AuditResponse,
    "freshness": FreshnessResponse,
    "rollback": RollbackResponse,
    "unlock": UnlockResponse,
    "promote": PromoteResponse,
    "migrate": MigrateResponse,
    "eval": EvalResponse,
    "drift": DriftResponse,
    "bench beir": BenchResponse,
    "config": ConfigResponse,
    "serve": NewKeyResponse,
}

#: commands whose stdout is not ragops' JSON (``mcp`` speaks the MCP protocol on it): no ``--json``
WITHOUT_JSON: frozenset[str] = frozenset({"mcp"})
