"""The gate's pure rules: metric floors and largest drops, the verdict, and a person's approval.

No store, no model: hand-made evaluation records (the store-bound sanity checks are in tests/evals/test_gate.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

from evals.gate import EPSILON, decide, metric_checks, with_approval
from rag.models import EvaluationRecord, GateCheck, GateResult

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def _record(version: str, **metrics: float) -> EvaluationRecord:
    return EvaluationRecord(version=version, golden="g.yaml", golden_sha256="0", queries=3, query_model="m",
                            metrics={k.replace("_at_", "@"): v for k, v in metrics.items()}, evaluated_at=NOW)


def _check(passed: bool, kind: str = "sanity", message: str | None = None) -> GateCheck:
    return GateCheck(kind=kind, passed=passed, message=message or f"{kind} {'ok' if passed else 'bad'}")


# --- floors -------------------------------------------------------------------------------------------


def test_a_metric_at_its_floor_passes_within_float_noise() -> None:
    (exact,) = metric_checks(_record("c", ndcg_at_10=0.6), None, {"ndcg@10": 0.6}, {})
    (noise,) = metric_checks(_record("c", ndcg_at_10=0.6 - EPSILON / 2), None, {"ndcg@10": 0.6}, {})
    assert exact.passed and noise.passed
    assert exact.message == "ndcg@10 0.60000 >= floor 0.60000"
    assert (exact.kind, exact.metric, exact.value, exact.threshold, exact.baseline) == ("floor", "ndcg@10", 0.6, 0.6,
                                                                                         None)


def test_a_metric_below_its_floor_fails_with_the_shortfall() -> None:
    (check,) = metric_checks(_record("c", recall_at_10=0.7995), None, {"recall@10": 0.8}, {})
    assert not check.passed
    assert check.message == "recall@10 0.79950 is below its floor 0.80000 (short by 0.00050)"
    (barely,) = metric_checks(_record("c", recall_at_10=0.8 - 1e-6), None, {"recall@10": 0.8}, {})
    assert not barely.passed  # more than float noise below is below


def test_every_floor_is_checked_in_order() -> None:
    checks = metric_checks(_record("c", ndcg_at_10=0.9, recall_at_10=0.1, mrr_at_10=0.5), None,
                           {"recall@10": 0.5, "ndcg@10": 0.5, "mrr@10": 0.5}, {})
    assert [(c.metric, c.passed) for c in checks] == [("recall@10", False), ("ndcg@10", True), ("mrr@10", True)]


# --- largest drops ------------------------------------------------------------------------------------


def test_a_drop_of_exactly_the_allowance_passes_despite_float_rounding() -> None:
    live, candidate = _record("old", ndcg_at_10=0.8), _record("new", ndcg_at_10=0.78)
    assert 0.8 - 0.78 > 0.02  # the subtraction is not exact: EPSILON is what lets this pass
    (check,) = metric_checks(candidate, live, {}, {"ndcg@10": 0.02})
    assert check.passed and check.message == "ndcg@10 0.78000 vs live 0.80000: within the allowed drop 0.02000"
    assert (check.kind, check.value, check.baseline, check.threshold) == ("max_drop", 0.78, 0.8, 0.02)


def test_a_drop_beyond_the_allowance_fails_naming_the_live_build() -> None:
    (check,) = metric_checks(_record("new", ndcg_at_10=0.7), _record("20260101-000000", ndcg_at_10=0.8), {},
                             {"ndcg@10": 0.05})
    assert not check.passed
    assert check.message == ("ndcg@10 0.70000 vs live 0.80000: dropped 0.10000 against live 20260101-000000, "
                             "more than the 0.05000 allowed")


def test_no_drop_checks_without_a_baseline() -> None:
    checks = metric_checks(_record("new", ndcg_at_10=0.1), None, {}, {"ndcg@10": 0.0, "recall@10": 0.0})
    assert checks == []
    floors_only = metric_checks(_record("new", ndcg_at_10=0.1), None, {"ndcg@10": 0.0}, {"ndcg@10": 0.0})
    assert [c.kind for c in floors_only] == ["floor"]


def test_floors_come_before_drops() -> None:
    live = _record("old", ndcg_at_10=0.8)
    checks = metric_checks(_record("new", ndcg_at_10=0.8), live, {"ndcg@10": 0.5}, {"ndcg@10": 0.0})
    assert [(c.kind, c.passed) for c in checks] == [("floor", True), ("max_drop", True)]


# --- unmeasured metrics -------------------------------------------------------------------------------


def test_an_unmeasured_cut_off_fails_with_the_k_to_add() -> None:
    (check,) = metric_checks(_record("new", ndcg_at_10=0.9), None, {"recall@20": 0.5}, {})
    assert not check.passed and check.value is None and check.threshold == 0.5 and check.kind == "floor"
    assert check.message == "recall@20 was not measured (add 20 to evaluation.k_values)"


def test_a_reference_based_metric_without_references_fails_with_a_hint() -> None:
    (check,) = metric_checks(_record("new"), None, {"nonllm_context_recall": 0.5}, {})
    assert not check.passed
    assert check.message == "nonllm_context_recall was not measured (the golden set has no reference_contexts)"


def test_a_drop_cannot_be_measured_when_either_build_lacks_the_metric() -> None:
    live = _record("old", ndcg_at_10=0.8)
    (missing_now,) = metric_checks(_record("new", recall_at_10=0.8), live, {}, {"ndcg@10": 0.02})
    (missing_live,) = metric_checks(_record("new", recall_at_10=0.8), live, {}, {"recall@10": 0.02})
    for check in (missing_now, missing_live):
        assert check.kind == "max_drop" and not check.passed and check.threshold == 0.02
    assert missing_live.message == "recall@10 was not measured (add 10 to evaluation.k_values)"
    (plain,) = metric_checks(_record("new"), None, {"id_context_recall": 0.5}, {})
    assert not plain.passed and plain.message == "id_context_recall was not measured"


# --- the verdict --------------------------------------------------------------------------------------


def test_the_gate_passes_only_when_every_check_passed() -> None:
    baseline = _record("old", ndcg_at_10=0.8)
    passed = decide([_check(True), _check(True, "floor")], "kb__old", baseline)
    failed = decide([_check(True), _check(False, "floor"), _check(True, "max_drop")], "kb__old", baseline)
    assert passed.passed and not failed.passed
    assert [c.kind for c in failed.failures] == ["floor"] and passed.failures == []
    assert (failed.live, failed.baseline) == ("kb__old", baseline)
    assert decide([_check(False)], None, None).live is None


def test_the_verdict_holds_its_own_copy_of_the_checks() -> None:
    checks = [_check(True)]
    result = decide(checks, None, None)
    checks.append(_check(False))
    assert len(result.checks) == 1 and result.passed


def test_a_failed_gate_says_every_failed_check() -> None:
    result = decide([_check(True), _check(False, message="m1"), _check(False, "floor", message="m2")], None, None)
    assert result.reason == "gate failed: m1; m2"


def test_a_passed_gate_says_how_many_checks_and_whether_metrics_counted() -> None:
    sanity_only = decide([_check(True), _check(True)], None, None)
    assert sanity_only.reason == "gate passed (2 checks, sanity only: no golden set)"
    scored_first = decide([_check(True)], None, None, golden=True)  # a first build: floors only, none set
    assert scored_first.reason == ("gate passed (1 checks, none on metrics: the golden set was scored, but a first "
                                   "build meets gate.floors only, and none are set)")
    scored = decide([_check(True)], "kb__old", None, golden=True)
    assert scored.reason == ("gate passed (1 checks, none on metrics: the golden set was scored, but gate.floors "
                             "and gate.max_drop are empty)")
    measured = decide([_check(True), _check(True, "floor"), _check(True, "max_drop")], "kb__old", None)
    assert measured.reason == "gate passed (3 checks, 2 on metrics)"


# --- approval -----------------------------------------------------------------------------------------


def _passed_gate() -> GateResult:
    return decide([_check(True), _check(True, "floor")], "kb__old", None)


def test_approval_returns_a_new_verdict_and_leaves_the_gate_as_it_was() -> None:
    gate = _passed_gate()
    before = gate.model_copy(deep=True)
    approved = with_approval(gate, True, "approved by ann")
    assert approved is not gate and gate == before
    assert len(gate.checks) == 2 and len(approved.checks) == 3
    assert approved.checks[:2] == gate.checks
    assert approved.checks[-1] == GateCheck(kind="approval", passed=True, message="approved by ann")
    assert approved.passed and approved.live == gate.live and approved.decided_at >= gate.decided_at
    assert approved.reason == "gate passed (3 checks, 1 on metrics); approved by ann"


def test_a_refusal_fails_a_passed_gate() -> None:
    gate = _passed_gate()
    refused = with_approval(gate, False, "rejected by bob: looks wrong")
    assert not refused.passed and gate.passed
    assert [c.kind for c in refused.failures] == ["approval"]
    assert refused.reason == "gate failed: rejected by bob: looks wrong"


def test_approval_never_makes_a_failed_gate_pass() -> None:
    gate = decide([_check(True), _check(False, "floor", message="ndcg@10 too low")], None, None)
    approved = with_approval(gate, True, "approved by ann")
    assert not approved.passed and approved.checks[-1].passed
    assert approved.reason == "gate failed: ndcg@10 too low"
