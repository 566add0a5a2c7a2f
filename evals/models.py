"""Typed results of an evaluation: per-query rows and the report that carries them.

What a build's manifest keeps of an evaluation (``EvaluationRecord``) and the gate's verdict
(``GateResult``, ``GateCheck``) live in ``rag.models``, beside the manifest they belong to.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from rag.models import EvaluationRecord


class QueryResult(BaseModel):
    """One golden query: what it should find, what it found, and its scores."""

    query_id: str
    query: str
    relevant: dict[str, int] = Field(description="Judged documents (doc id -> grade) as resolved in the build.")
    retrieved: list[str] = Field(description="Top 10 documents, best first (a document ranks by its best chunk).")
    metrics: dict[str, float | None] = Field(description="Every metric for this query; None when not applicable.")


class EvaluationReport(BaseModel):
    """A whole evaluation of one build: the summary a manifest keeps, plus every per-query row."""

    collection: str
    record: EvaluationRecord
    per_query: list[QueryResult]
    missing: list[str] = Field(
        default_factory=list, description="Relevant documents the build does not serve (scored as misses)."
    )
