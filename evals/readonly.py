"""The read-only runs of an alias, evaluation and drift check, as plain functions on an open store.

The ``evaluate`` and ``drift-check`` flows run them (with their steps as Prefect tasks, their artifacts
and the drift event), and so does the ``ragops`` command in its own process when no Prefect API is
configured or running for this Prefect home (ragops/cli/readonly.py): a read-only run needs no
ephemeral API that nothing shows. Either way each run is recorded in the alias's audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from evals.drift import check_drift
from evals.evaluate import QueryEmbedders, evaluate_build
from evals.gate import compare_with_live, decide
from evals.golden import GoldenSet
from evals.models import DriftReport, EvaluationReport
from rag.config import Settings
from rag.embed.embedder import Embedder
from rag.index import audit
from rag.index.versions import build_to_read
from rag.models import GateResult
from rag.store import IndexStore
from rag.store.names import version_of


@dataclass(frozen=True)
class Scored:
    """One build scored on the golden set, with the gate's rules applied against the live build when asked."""

    alias: str
    collection: str
    live: str | None
    report: EvaluationReport
    gate: GateResult | None

    @property
    def verdict(self) -> str:
        """"would pass the gate", "would fail: <why>", or "" when not compared."""
        if self.gate is None:
            return ""
        return "would pass the gate" if self.gate.passed else "would fail: " + self.gate.reason

    def as_json(self) -> dict:
        """What ``ragops eval`` prints (``EvalResponse``, documented in docs/cli.md)."""
        return {
            "alias": self.alias,
            "version": version_of(self.collection),
            "collection": self.collection,
            "live": self.collection == self.live,
            "evaluation": self.report.record.model_dump(mode="json"),
            "per_query": [row.model_dump(mode="json") for row in self.report.per_query],
            "missing": self.report.missing,
            "gate": self.gate.model_dump(mode="json") if self.gate else None,
        }


def score_build(store: IndexStore, settings: Settings, golden: GoldenSet, embedders: QueryEmbedders,
                version: str | None, *, compare: bool, evaluate: Callable = evaluate_build) -> Scored:
    """Score ``version`` (else the live build) on the golden set; with ``compare``, also the live build,
    and apply the gate's metric rules. Records the evaluation in the audit trail.

    Args:
        evaluate: ``evals.evaluate.evaluate_build`` or a step that runs it (the flow's task).

    Raises:
        VersionError: no such build, or the alias has no live build.
    """
    live = store.alias_target(settings.alias)
    collection = build_to_read(store, settings.alias, version)
    manifest = store.read_manifest(collection)
    report = evaluate(store, collection, golden, settings.evaluation, embedders.for_build(manifest), strict=False)
    gate = None
    if compare and live is not None and live != collection:
        checks, baseline = compare_with_live(store, report, live, settings.gate, settings.evaluation, golden,
                                             embedders)
        gate = decide(checks, live, baseline.record, golden=True)
    scored = Scored(settings.alias, collection, live, report, gate)
    why = "ragops eval" + ("" if gate is None else f": {'would pass' if gate.passed else 'would fail'} the gate")
    audit.record(store, settings.alias, "evaluation", build=collection, why=why,
                 details={"metrics": report.record.metrics, "queries": report.record.queries,
                          "golden_sha256": report.record.golden_sha256})
    return scored


def check_live_build(store: IndexStore, settings: Settings, golden: GoldenSet | None, embedder: Embedder, *,
                     check: Callable = check_drift) -> DriftReport:
    """Every drift check on the live build (``evals.drift.check_drift``), recorded in the audit trail.

    Args:
        check: ``check_drift`` or a step that runs it (the flow's task).
    """
    report = check(store, settings, golden, embedder)
    audit.record(store, settings.alias, "drift", build=store.alias_target(settings.alias), why=report.headline,
                 details={"drifted": report.drifted, "checks": [c.model_dump(mode="json") for c in report.checks]})
    return report
