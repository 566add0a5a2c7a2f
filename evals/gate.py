"""The promotion gate: may a candidate build replace the live one?

A candidate passes when every check passes:

- **sanity**: the build completed, indexed documents, holds exactly the chunks it wrote and is green
  (``rag.index.versions.check_promotable``); and it did not lose more of the live build's documents than
  deletions at the source explain (``gate.max_document_drop``);
- **floor**: each metric in ``gate.floors`` is at least its floor;
- **max_drop**: each metric in ``gate.max_drop`` is at most that much below the live build's figure,
  both measured on the same golden set in the same run (skipped for an alias's first build).

Metrics come from ``evals.evaluate`` on the alias's golden set. Without a golden set only the sanity
checks run. LLM-judged metrics are advisory and never gate.
"""

from __future__ import annotations

import logging

from evals.evaluate import QueryEmbedders, evaluate_build
from evals.golden import GoldenSet
from evals.models import EvaluationReport
from rag.config import EvaluationSettings, GateSettings
from rag.errors import GoldenSetError, PromotionRefused
from rag.failpoints import failpoint
from rag.index.versions import check_promotable
from rag.models import EvaluationRecord, GateCheck, GateResult, Manifest, utc_now
from rag.store import IndexStore
from rag.store.names import version_of

log = logging.getLogger(__name__)

#: float noise below this is not a drop (identical builds score identically; this guards rounding only)
EPSILON = 1e-9


def sanity_checks(
    store: IndexStore, candidate: Manifest, live: Manifest | None, max_document_drop: float, deleted_from_live: int
) -> list[GateCheck]:
    """The build is sound and lost no documents that the sources did not delete.

    Args:
        live: the live build's manifest (None for the first build).
        deleted_from_live: live documents that a complete listing no longer has (explained losses).
    """
    try:
        checks = [GateCheck(kind="sanity", passed=True, message=check_promotable(store, candidate))]
    except PromotionRefused as exc:
        return [GateCheck(kind="sanity", passed=False, message=str(exc))]
    if live is not None:
        served, now = live.counts.documents_indexed, candidate.counts.documents_indexed
        unexplained = served - deleted_from_live - now
        allowed = int(max_document_drop * served)
        ok = unexplained <= allowed
        message = (
            f"documents: {now} served vs {served} live, {deleted_from_live} deleted at the source"
            + (f"; {unexplained} lost without a deletion explaining it, at most {allowed} allowed "
               "(gate.max_document_drop): check the failures and the sources' listings" if not ok else "")
        )
        checks.append(GateCheck(kind="sanity", metric="documents", value=now, baseline=served,
                                threshold=max_document_drop, passed=ok, message=message))
    return checks


def metric_checks(
    candidate: EvaluationRecord, baseline: EvaluationRecord | None, floors: dict[str, float],
    max_drop: dict[str, float],
) -> list[GateCheck]:
    """Floors on the candidate's metrics, and largest drops against the live build's."""
    checks = []
    for metric, floor in floors.items():
        value = candidate.metrics.get(metric)
        if value is None:
            checks.append(_unmeasured("floor", metric, floor))
            continue
        ok = value >= floor - EPSILON
        message = (f"{metric} {value:.5f} >= floor {floor:.5f}" if ok
                   else f"{metric} {value:.5f} is below its floor {floor:.5f} (short by {floor - value:.5f})")
        checks.append(GateCheck(kind="floor", metric=metric, value=value, threshold=floor, passed=ok, message=message))
    if baseline is None:
        return checks
    for metric, allowed in max_drop.items():
        value, before = candidate.metrics.get(metric), baseline.metrics.get(metric)
        if value is None or before is None:
            checks.append(_unmeasured("max_drop", metric, allowed))
            continue
        drop = before - value
        ok = drop <= allowed + EPSILON
        message = (
            f"{metric} {value:.5f} vs live {before:.5f}: "
            + (f"within the allowed drop {allowed:.5f}" if ok else
               f"dropped {drop:.5f} against live {baseline.version}, more than the {allowed:.5f} allowed")
        )
        checks.append(GateCheck(kind="max_drop", metric=metric, value=value, baseline=before, threshold=allowed,
                                passed=ok, message=message))
    return checks


def compare_with_live(
    store: IndexStore, report: EvaluationReport, live_collection: str, rules: GateSettings,
    evaluation: EvaluationSettings, golden: GoldenSet, embedders: QueryEmbedders,
) -> tuple[list[GateCheck], EvaluationReport]:
    """Score the live build on the same golden set and apply the floors and largest drops to ``report``.

    Returns:
        (the metric checks, the live build's evaluation).
    """
    # Not strict: a golden set may already name documents only the other build has.
    baseline = evaluate_build(store, live_collection, golden, evaluation,
                              embedders.for_build(store.read_manifest(live_collection)), strict=False)
    checks = metric_checks(report.record, baseline.record, rules.floors, rules.max_drop)
    return checks, baseline


def gate_candidate(
    store: IndexStore,
    candidate: Manifest,
    live_collection: str | None,
    rules: GateSettings,
    evaluation: EvaluationSettings,
    golden: GoldenSet | None,
    embedders: QueryEmbedders,
    *,
    deleted_from_live: int = 0,
) -> tuple[GateResult, EvaluationReport | None, EvaluationReport | None]:
    """Evaluate the candidate (and the live build, on the same golden set) and decide. Reads only.

    Returns:
        (the verdict, the candidate's evaluation, the live build's evaluation); evaluations are None
        when there is no golden set or the sanity checks failed first.
    """
    live = store.read_manifest(live_collection) if live_collection else None
    checks = sanity_checks(store, candidate, live, rules.max_document_drop, deleted_from_live)
    report = baseline = None
    if golden is not None and all(check.passed for check in checks):
        try:
            report = evaluate_build(store, candidate.collection, golden, evaluation,
                                    embedders.for_build(candidate))
        except GoldenSetError as exc:
            checks.append(GateCheck(kind="sanity", metric="golden", passed=False, message=str(exc)))
        if report is not None and live_collection not in (None, candidate.collection):
            metric_results, baseline = compare_with_live(store, report, live_collection, rules, evaluation, golden,
                                                         embedders)
            checks += metric_results
        elif report is not None:  # the alias's first build: floors only
            checks += metric_checks(report.record, None, rules.floors, rules.max_drop)
    failpoint("evaluate")  # evaluated, no verdict recorded yet
    result = decide(checks, live_collection, baseline.record if baseline else None, golden=report is not None)
    log.info("gate for %s: %s", version_of(candidate.collection), result.reason)
    return result, report, baseline


def decide(checks: list[GateCheck], live: str | None, baseline: EvaluationRecord | None, *,
           golden: bool = False) -> GateResult:
    """The verdict: passed when every check passed. ``golden``: the candidate was scored on a golden set."""
    return GateResult(passed=all(check.passed for check in checks), checks=list(checks), live=live,
                      baseline=baseline, golden=golden, decided_at=utc_now())


def with_approval(gate: GateResult, approved: bool, why: str) -> GateResult:
    """A new verdict: the gate's, with a person's answer as one more check (a refusal fails it)."""
    checks = [*gate.checks, GateCheck(kind="approval", passed=approved, message=why)]
    return gate.model_copy(update={"checks": checks, "passed": gate.passed and approved, "decided_at": utc_now()})


def _unmeasured(kind: str, metric: str, threshold: float) -> GateCheck:
    hint = (" (the golden set has no reference_contexts)" if metric.startswith("nonllm_")
            else f" (add {metric.split('@')[-1]} to evaluation.k_values)" if "@" in metric else "")
    return GateCheck(kind=kind,  # type: ignore[arg-type]  # a str, validated against its Literal
                     metric=metric, threshold=threshold, passed=False,
                     message=f"{metric} was not measured{hint}")
