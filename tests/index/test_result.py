"""A reindex run's result, decided by pure functions (rag.index.result) on hand-made plans, manifests and verdicts.

No store, no model, no Prefect: each decision the reindex flow makes at its end, one test each.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rag.config import FolderSource
from rag.errors import FreshnessBreach, GateFailed, PromotionRefused
from rag.index.freshness import assess
from rag.index.plan import BuildPlan, WorkItem
from rag.index.result import asks_approval, gated, headline, nothing_changed, planned_counts, refusal, summarize
from rag.models import (
    Counts,
    DocumentRecord,
    DocumentRef,
    EvaluationRecord,
    Failure,
    GateCheck,
    GateResult,
    Manifest,
    ModelFingerprint,
    SourceState,
    StageTimings,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
EARLIER = NOW - timedelta(hours=1)
FINGERPRINT = ModelFingerprint(name="m", path="/m", weights_sha256="a" * 64, dimension=384, normalize=True,
                               dtype="float32", max_seq_length=256)
LIVE = "kb__20260101-000000"


def _ref(name: str) -> DocumentRef:
    return DocumentRef(doc_id=f"kb/{name}", source="kb", uri=f"file:///kb/{name}", size=1,
                       modified=EARLIER.timestamp(), signal="s2")


def _doc(name: str) -> DocumentRecord:
    return DocumentRecord(doc_id=f"kb/{name}", source="kb", uri=f"file:///kb/{name}", signal="s1", modified=0,
                          first_seen=EARLIER, last_seen=EARLIER, chunks=2)


def _plan(*, base: str | None = LIVE) -> BuildPlan:
    """2 new, 1 changed, 3 unchanged, 1 kept, 2 deleted; 6 listed."""
    return BuildPlan(
        base=base,
        carry=[_doc(f"same{i}.md") for i in range(4)],
        work=[WorkItem(ref=_ref("a.md")), WorkItem(ref=_ref("b.md")),
              WorkItem(ref=_ref("c.md"), previous=_doc("c.md"))],
        deleted=[_doc("gone1.md"), _doc("gone2.md")],
        unchanged=3, kept=1, listed=6, notes=["source 'kb': skipped 1 entries: kb/x (socket)"],
    )


def _manifest(version: str, state: str = "complete", **counts: int) -> Manifest:
    return Manifest(alias="kb", version=version, collection=f"kb__{version}", state=state, created_at=EARLIER,
                    model=FINGERPRINT, chunking={}, sources=[], counts=Counts(**counts))


def _gate(*checks: bool, kinds: tuple[str, ...] = ()) -> GateResult:
    kinds = kinds or ("sanity",) * len(checks)
    return GateResult(passed=all(checks), decided_at=NOW, live=LIVE, checks=[
        GateCheck(kind=kind, passed=ok, message=f"check {i} {'ok' if ok else 'failed'}")
        for i, (kind, ok) in enumerate(zip(kinds, checks))])


def _evaluation() -> EvaluationRecord:
    return EvaluationRecord(version="20260102-000000", golden="g.yaml", golden_sha256="0", queries=3,
                            query_model="m", metrics={"ndcg@10": 0.9}, evaluated_at=NOW)


# --- counts and outcomes ------------------------------------------------------------------------------


def test_planned_counts_come_from_the_plan() -> None:
    counts = planned_counts(_plan())
    assert counts == Counts(documents_seen=7, documents_new=2, documents_changed=1, documents_unchanged=3,
                            documents_deleted=2)
    assert (counts.documents_indexed, counts.chunks, counts.chunks_embedded) == (0, 0, 0)  # the build adds these


def test_nothing_changed_serves_the_base_with_its_figures() -> None:
    plan = BuildPlan(base=LIVE, carry=[_doc("a.md"), _doc("b.md")], unchanged=2, listed=2)
    base = _manifest("20260101-000000", documents_indexed=9, documents_failed=1, chunks=40, documents_new=5,
                     chunks_embedded=40)
    outcome = nothing_changed(plan, base)
    assert outcome.manifest is base and outcome.state == "unchanged" and not outcome.built
    assert not outcome.promoted and outcome.gate is None and outcome.evaluation is None
    assert outcome.reason == "no changes since build 20260101-000000"
    assert outcome.counts == Counts(documents_seen=2, documents_unchanged=2, documents_indexed=9,
                                    documents_failed=1, chunks=40)  # not the base's own new/embedded figures


def test_a_passed_gate_promotes_when_promotion_was_asked() -> None:
    candidate = _manifest("20260102-000000", documents_indexed=5, chunks=12)
    gate, evaluation = _gate(True, True, kinds=("sanity", "floor")), _evaluation()
    outcome = gated(candidate, gate, evaluation, requested=True)
    assert outcome.promoted and outcome.reason == gate.reason == "gate passed (2 checks, 1 on metrics)"
    assert (outcome.manifest, outcome.state, outcome.counts) == (candidate, "complete", candidate.counts)
    assert outcome.gate is gate and outcome.evaluation is evaluation and outcome.built


def test_a_passed_gate_does_not_promote_with_no_promote() -> None:
    gate = _gate(True)
    outcome = gated(_manifest("20260102-000000"), gate, None, requested=False)
    assert not outcome.promoted
    assert outcome.reason.startswith("not requested (--no-promote)")
    assert outcome.reason == f"not requested (--no-promote); {gate.reason}"


@pytest.mark.parametrize("requested", [True, False])
def test_a_failed_gate_never_promotes_and_says_why(requested: bool) -> None:
    gate = _gate(True, False)
    outcome = gated(_manifest("20260102-000000", "rejected"), gate, None, requested=requested)
    assert not outcome.promoted and outcome.state == "rejected"
    assert outcome.reason == gate.reason == "gate failed: check 1 failed"


@pytest.mark.parametrize("passed", [True, False])
@pytest.mark.parametrize("requested", [True, False])
@pytest.mark.parametrize("required", [True, False])
def test_approval_is_asked_only_for_a_passed_gate_promotion_asked_and_required(
    passed: bool, requested: bool, required: bool
) -> None:
    gate = _gate(passed)
    assert asks_approval(gate, requested=requested, required=required) is (passed and requested and required)


# --- the summary --------------------------------------------------------------------------------------


def _summary(outcome, plan: BuildPlan | None = None, previous: str | None = LIVE):
    return summarize("kb", plan or _plan(), outcome, timings=StageTimings(total=2.5),
                     failures=[Failure(doc_id="kb/x.pdf", uri="file:///kb/x.pdf", stage="parse", reason="bad")],
                     previous=previous, deleted=["kb__20251201-000000"],
                     sources=[SourceState(name="kb", kind="folder", uri="file:///kb")])


def test_a_promoted_run_is_live_on_its_candidate() -> None:
    candidate = _manifest("20260102-000000", documents_indexed=5, chunks=12)
    summary = _summary(gated(candidate, _gate(True), None, requested=True))
    assert summary.live == candidate.collection and summary.previous == LIVE and summary.promoted
    assert (summary.alias, summary.version, summary.collection, summary.state) == (
        "kb", "20260102-000000", candidate.collection, "complete")
    assert summary.base == LIVE and summary.notes == _plan().notes and summary.counts == candidate.counts
    assert summary.deleted == ["kb__20251201-000000"] and [f.doc_id for f in summary.failures] == ["kb/x.pdf"]
    assert [s.name for s in summary.sources] == ["kb"] and summary.gate is not None


@pytest.mark.parametrize("requested, passed", [(False, True), (True, False), (False, False)])
def test_a_run_that_did_not_promote_leaves_the_previous_build_live(requested: bool, passed: bool) -> None:
    state = "complete" if passed else "rejected"
    summary = _summary(gated(_manifest("20260102-000000", state), _gate(passed), None, requested=requested))
    assert summary.live == LIVE and not summary.promoted
    first = _summary(gated(_manifest("20260102-000000", state), _gate(passed), None, requested=requested),
                     previous=None)
    assert first.live is None  # an alias's first build, not promoted: nothing is live


def test_an_unchanged_run_summarizes_the_base() -> None:
    base = _manifest("20260101-000000", documents_indexed=9, chunks=40)
    plan = BuildPlan(base=LIVE, unchanged=9, listed=9)
    summary = _summary(nothing_changed(plan, base), plan)
    assert summary.state == "unchanged" and summary.live == LIVE and summary.gate is None
    assert summary.version == "20260101-000000"
    assert headline(summary) == "kb: no changes since build 20260101-000000; 9 documents unchanged"


def test_the_headline_of_a_build() -> None:
    candidate = _manifest("20260102-000000", documents_new=2, documents_changed=1, documents_unchanged=3,
                          documents_deleted=2, documents_failed=1, chunks=30, chunks_embedded=8)
    summary = _summary(gated(candidate, _gate(True), None, requested=False))
    assert headline(summary) == (
        "kb 20260102-000000: 2 new, 1 changed, 3 unchanged, 2 deleted, 1 failed; 30 chunks (8 embedded) in 2.5s; "
        "not promoted: not requested (--no-promote); gate passed (1 checks, sanity only: no golden set)"
    )


# --- the refusal a run ends with ----------------------------------------------------------------------

LIMITED = FolderSource(path="/kb", name="kb", max_staleness=timedelta(hours=1))


def _assessed(stale: bool):
    synced = NOW - (timedelta(hours=3) if stale else timedelta(minutes=5))
    state = SourceState(name="kb", kind="folder", uri="file:///kb", synced_through=synced, unsynced=int(stale))
    return assess({"kb": state}, [LIMITED], NOW)


def _rejected(*checks: bool):
    return _summary(gated(_manifest("20260102-000000", "rejected"), _gate(*checks), None, requested=True))


def test_a_sound_build_below_the_bar_is_a_gate_failure() -> None:
    summary = _rejected(True, False)
    error = refusal(summary, _assessed(False), requested=True)
    assert type(error) is GateFailed
    assert str(error) == "build 20260102-000000 was not promoted: gate failed: check 1 failed"
    assert error.details["summary"] == summary.model_dump(mode="json")


def test_an_unsound_build_is_a_refused_promotion_not_a_gate_failure() -> None:
    error = refusal(_rejected(False, True), _assessed(False), requested=True)
    assert isinstance(error, PromotionRefused) and not isinstance(error, GateFailed)
    assert error.details["summary"]["version"] == "20260102-000000"


def test_a_rejected_build_without_a_verdict_is_a_refused_promotion() -> None:
    summary = _summary(gated(_manifest("20260102-000000", "rejected"), _gate(True), None, requested=True))
    no_gate = summary.model_copy(update={"gate": None})
    no_checks = summary.model_copy(update={"gate": GateResult(passed=False, decided_at=NOW)})
    for case in (no_gate, no_checks):
        assert type(refusal(case, _assessed(False), requested=True)) is PromotionRefused


def test_a_rejection_is_no_refusal_when_promotion_was_not_asked() -> None:
    assert refusal(_rejected(True, False), _assessed(False), requested=False) is None
    assert refusal(_rejected(False), _assessed(False), requested=False) is None


def test_a_breach_refuses_naming_the_source() -> None:
    summary = _summary(gated(_manifest("20260102-000000"), _gate(True), None, requested=True))
    error = refusal(summary, _assessed(True), requested=True)
    assert type(error) is FreshnessBreach
    assert str(error).startswith("freshness limit breached: kb: 1 change(s) not in the live index")
    assert error.details["summary"] == summary.model_dump(mode="json")
    # not asking for promotion does not excuse a breach
    assert type(refusal(summary, _assessed(True), requested=False)) is FreshnessBreach
    unchanged = _summary(nothing_changed(BuildPlan(base=LIVE), _manifest("20260101-000000")))
    assert type(refusal(unchanged, _assessed(True), requested=True)) is FreshnessBreach


def test_a_rejection_comes_before_a_breach() -> None:
    assert type(refusal(_rejected(True, False), _assessed(True), requested=True)) is GateFailed
    assert type(refusal(_rejected(True, False), _assessed(True), requested=False)) is FreshnessBreach


def test_a_healthy_run_ends_without_a_refusal() -> None:
    summary = _summary(gated(_manifest("20260102-000000"), _gate(True), None, requested=True))
    assert refusal(summary, _assessed(False), requested=True) is None
    assert refusal(summary, [], requested=True) is None
