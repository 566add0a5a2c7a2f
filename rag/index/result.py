"""A reindex run's result: its counts, what it decided about its candidate, its summary, its refusal.

Pure functions (no store, no Prefect): the reindex flow calls them in order, and tests/index/test_result.py
checks each decision on hand-made inputs.

- ``planned_counts``: the document counts a plan implies, before anything is built;
- ``nothing_changed``: the outcome of a run whose listings changed nothing (no build is made);
- ``asks_approval``: whether a person must approve a candidate the gate passed;
- ``gated``: the outcome of a built candidate, once the gate (and any approver) has spoken;
- ``regated``: the same for a rejected build gated again instead of being built again;
- ``summarize``: the run summary, ``ragops reindex --json``'s shape;
- ``refusal``: the expected failure a finished run ends with (a rejected candidate, a freshness
  breach), or None. It carries the summary, so the operator still sees what the run did.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel

from rag.errors import GateFailed, PromotionRefused, RagopsError
from rag.index.freshness import SourceFreshness, breach
from rag.index.plan import BuildPlan
from rag.models import (
    BuildSummary,
    Counts,
    EvaluationRecord,
    Failure,
    GateResult,
    Manifest,
    RunState,
    SourceState,
    StageTimings,
)


class Outcome(BaseModel):
    """What a run decided about the alias: the build it ends with, and whether the alias moves to it."""

    manifest: Manifest
    state: RunState
    counts: Counts
    promoted: bool
    reason: str
    gate: GateResult | None = None
    evaluation: EvaluationRecord | None = None

    @property
    def built(self) -> bool:
        """The run made a build (so the store changed, whatever became of the build)."""
        return self.state != "unchanged"


def planned_counts(plan: BuildPlan) -> Counts:
    """The document counts of a plan; the build adds what it indexed, failed and chunked."""
    return Counts(
        documents_seen=plan.listed + plan.kept, documents_new=plan.new, documents_changed=plan.changed,
        documents_retried=plan.retried, documents_unchanged=plan.unchanged, documents_deleted=len(plan.deleted),
    )


def regated(outcome: Outcome) -> Outcome:
    """The outcome of gating an existing build again (no build made): its contents, none of them redone."""
    c = outcome.counts
    counts = c.model_copy(update={
        "documents_new": 0, "documents_changed": 0, "documents_touched": 0, "documents_retried": 0,
        "documents_deleted": 0,
        "documents_unchanged": c.documents_seen, "chunks_embedded": 0, "chunks_reused": 0,
    })
    return outcome.model_copy(update={"counts": counts})


def nothing_changed(plan: BuildPlan, base: Manifest) -> Outcome:
    """No build: the base (the live build, or a compatible complete one) already is what it would be."""
    counts = planned_counts(plan).model_copy(update={
        "documents_indexed": base.counts.documents_indexed, "documents_failed": base.counts.documents_failed,
        "chunks": base.counts.chunks,
    })
    return Outcome(manifest=base, state="unchanged", counts=counts, promoted=False,
                   reason=f"no changes since build {base.version}")


def gated(candidate: Manifest, gate: GateResult, evaluation: EvaluationRecord | None, *, requested: bool) -> Outcome:
    """A built candidate with its verdict: the alias moves to it when the gate passed and promotion was asked."""
    if not gate.passed:
        promoted, reason = False, gate.reason
    elif not requested:
        promoted, reason = False, f"not requested (--no-promote); {gate.reason}"
    else:
        promoted, reason = True, gate.reason
    return Outcome(manifest=candidate, state=candidate.state, counts=candidate.counts, promoted=promoted,
                   reason=reason, gate=gate, evaluation=evaluation)


def asks_approval(gate: GateResult, *, requested: bool, required: bool) -> bool:
    """A person must approve before the alias moves: the gate passed, promotion was asked, and
    ``gate.require_approval`` is set."""
    return gate.passed and requested and required


def summarize(
    alias: str, plan: BuildPlan, outcome: Outcome, *, timings: StageTimings, failures: Sequence[Failure],
    previous: str | None, deleted: Sequence[str], sources: Sequence[SourceState],
    redacted: dict[str, dict[str, int]] | None = None,
) -> BuildSummary:
    """The run summary (``ragops reindex --json``; docs/cli.md). ``previous``: the live build at the start."""
    m = outcome.manifest
    live = m.collection if outcome.promoted else previous
    return BuildSummary(
        alias=alias, version=m.version, collection=m.collection, state=outcome.state, base=plan.base,
        full_build=plan.full if outcome.built else None,
        counts=outcome.counts, failures=list(failures), timings=timings, promoted=outcome.promoted,
        reason=outcome.reason, live=live, previous=previous, deleted=list(deleted), sources=list(sources),
        notes=plan.notes, gate=outcome.gate, evaluation=outcome.evaluation, redacted=redacted or {},
    )


def headline(summary: BuildSummary) -> str:
    """One line for logs and the artifact description."""
    c = summary.counts
    if summary.state == "unchanged":
        return f"{summary.alias}: {summary.reason}; {c.documents_unchanged} documents unchanged"
    verdict = "promoted" if summary.promoted else "not promoted"
    return (
        f"{summary.alias} {summary.version}: {c.documents_new} new, {c.documents_changed} changed, "
        + (f"{c.documents_touched} touched, " if c.documents_touched else "")
        + (f"{c.documents_retried} retried, " if c.documents_retried else "")
        + f"{c.documents_unchanged} unchanged, {c.documents_deleted} deleted, {c.documents_failed} failed; "
        f"{c.chunks} chunks ({c.chunks_embedded} embedded) in {summary.timings.total:.1f}s; {verdict}: {summary.reason}"
        + (f"; {sum(c.redacted.values())} values redacted in {c.documents_redacted} documents" if c.redacted else "")
    )


def refusal(summary: BuildSummary, assessed: Sequence[SourceFreshness], *, requested: bool) -> RagopsError | None:
    """The expected failure this finished run ends with, or None.

    A candidate refused promotion (when promotion was asked) comes first: ``PromotionRefused`` when
    the build itself is unsound (its first check, ``check_promotable``), ``GateFailed`` when it was
    sound but did not clear the bar (documents lost, metrics, approval). Then a source over its
    ``max_staleness``. Either carries the summary in ``details["summary"]``.
    """
    details = {"summary": summary.model_dump(mode="json")}
    if requested and summary.state == "rejected":
        sound = summary.gate is not None and bool(summary.gate.checks) and summary.gate.checks[0].passed
        error = GateFailed if sound else PromotionRefused
        return error(f"build {summary.version} was not promoted: {summary.reason}", details=details)
    return breach(assessed, details)
