"""Typed results of an evaluation: per-query rows and the report that carries them.

What a build's manifest keeps of an evaluation (``EvaluationRecord``) and the gate's verdict
(``GateResult``, ``GateCheck``) live in ``rag.models``, beside the manifest they belong to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

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


class DriftCheck(BaseModel):
    """One drift check on the live build, with its figure and threshold."""

    name: str = Field(description="golden:<metric>, model, compatibility or queries.")
    status: Literal["ok", "drift", "skipped"]
    value: float | None = Field(None, description="The figure measured now.")
    baseline: float | None = Field(None, description="What it was when the live build was evaluated (golden).")
    threshold: float | None = Field(None, description="Tolerance, minimum cosine, or significance level.")
    message: str


class DriftReport(BaseModel):
    """Every drift check on an alias's live build at one time."""

    alias: str
    live: str
    version: str
    checked_at: datetime
    checks: list[DriftCheck]
    drifted: bool = Field(description="True when any check found drift.")

    @property
    def headline(self) -> str:
        """One line: drift or not, and which checks."""
        drifted = [c.name for c in self.checks if c.status == "drift"]
        skipped = [c.name for c in self.checks if c.status == "skipped"]
        verdict = f"DRIFT in {', '.join(drifted)}" if drifted else "no drift"
        return f"{self.alias} {self.version}: {verdict}" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
