"""The gate's rules and the scoring of rankings, against figures computed by hand (no model needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from evals.evaluate import Retrieved, score_rankings
from evals.gate import metric_checks, sanity_checks
from rag.config import EvaluationSettings, Settings, StoreSettings
from rag.errors import ConfigError
from rag.index import build
from rag.index.progress import BuildProgress
from rag.models import Chunk, Counts, EvaluationRecord, Manifest, utc_now
from rag.store import IndexStore, open_store
from rag.store.names import collection_name
from testkit.builds import FINGERPRINT


def _record(version: str, **metrics: float) -> EvaluationRecord:
    return EvaluationRecord(version=version, golden="g.yaml", golden_sha256="0", queries=3, query_model="m",
                            metrics={k.replace("_at_", "@"): v for k, v in metrics.items()}, evaluated_at=utc_now())


def test_floors_report_the_shortfall() -> None:
    candidate = _record("new", ndcg_at_10=0.41234, recall_at_10=0.9)
    checks = metric_checks(candidate, None, {"ndcg@10": 0.6, "recall@10": 0.9}, {"ndcg@10": 0.02})
    assert [(c.kind, c.metric, c.passed) for c in checks] == [("floor", "ndcg@10", False), ("floor", "recall@10", True)]
    assert checks[0].message == "ndcg@10 0.41234 is below its floor 0.60000 (short by 0.18766)"
    # No live build: no drop checks at all (the first build of an alias).
    assert all(c.kind == "floor" for c in checks)


def test_largest_drop_is_measured_against_the_live_figures() -> None:
    live = _record("old", ndcg_at_10=0.8, recall_at_10=0.9)
    candidate = _record("new", ndcg_at_10=0.79, recall_at_10=0.65)
    checks = metric_checks(candidate, live, {}, {"ndcg@10": 0.02, "recall@10": 0.02})
    assert [c.passed for c in checks] == [True, False]
    assert checks[1].message == (
        "recall@10 0.65000 vs live 0.90000: dropped 0.25000 against live old, more than the 0.02000 allowed"
    )
    assert (checks[1].value, checks[1].baseline, checks[1].threshold) == (0.65, 0.9, 0.02)
    # Identical figures are never a drop, and a gain is fine.
    same = metric_checks(live, live, {}, {"ndcg@10": 0.0})
    better = metric_checks(_record("b", ndcg_at_10=0.95), live, {}, {"ndcg@10": 0.0})
    assert same[0].passed and better[0].passed


def test_a_metric_the_evaluation_did_not_produce_fails_with_a_hint() -> None:
    checks = metric_checks(_record("new", ndcg_at_10=1.0), None, {"nonllm_context_recall": 0.5}, {})
    assert not checks[0].passed
    assert checks[0].message == "nonllm_context_recall was not measured (the golden set has no reference_contexts)"


def test_gate_settings_refuse_unknown_metrics_and_unmeasured_cut_offs() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'ndgc@10'"):
        Settings.load(None, overrides={"gate": {"floors": {"ndgc@10": 0.5}}}, environ={})
    with pytest.raises(ConfigError, match="metric recall@20 needs k=20 in evaluation.k_values"):
        Settings.load(None, overrides={"gate": {"floors": {"recall@20": 0.5}}}, environ={})
    with pytest.raises(ConfigError, match="is not between 0 and 1"):
        Settings.load(None, overrides={"gate": {"max_drop": {"ndcg@10": 2}}}, environ={})
    ok = Settings.load(None, overrides={"gate": {"floors": {"mrr@10": 0.5, "id_context_recall": 0.8}}}, environ={})
    assert ok.gate.floors == {"mrr@10": 0.5, "id_context_recall": 0.8}


def _build(store: IndexStore, version: str, documents: int, deleted: int = 0) -> Manifest:
    manifest = Manifest(alias="kb", version=version, collection=collection_name("kb", version),
                        created_at=utc_now(), model=FINGERPRINT, chunking={}, sources=[])
    store.create_build(manifest)
    chunks = [Chunk(doc_id=f"kb/{i}", chunk_index=0, text=f"t{i}", source_uri="file:///x", source="kb")
              for i in range(documents)]
    store.upsert_chunks(manifest.collection, chunks, np.eye(documents, 4, dtype=np.float32))
    counts = Counts(documents_seen=documents, documents_indexed=documents, chunks=documents,
                    documents_deleted=deleted)
    return build.finish_build(store, manifest, BuildProgress(counts=counts))


def test_documents_lost_without_a_deletion_at_the_source_fail_the_sanity_check(store_path: Path) -> None:
    with open_store(StoreSettings(location=str(store_path))) as store:
        live = _build(store, "20260101-000000", 10)
        candidate = _build(store, "20260102-000000", 7)
        lost = sanity_checks(store, candidate, live, 0.0, deleted_from_live=2)
        tolerated = sanity_checks(store, candidate, live, 0.1, deleted_from_live=2)
        explained = sanity_checks(store, candidate, live, 0.0, deleted_from_live=3)
    assert [c.passed for c in lost] == [True, False]
    assert lost[1].message.startswith("documents: 7 served vs 10 live, 2 deleted at the source; 1 lost without")
    assert [c.passed for c in tolerated] == [True, True]
    assert [c.passed for c in explained] == [True, True]


@pytest.mark.slow  # imports ragas (~1.5 s)
def test_rankings_score_documents_by_their_best_chunk_with_ragas_context_metrics() -> None:
    settings = EvaluationSettings(k_values=[1, 3, 10], context_k=2)
    qrels = {"q1": {"a": 2, "c": 1, "x": 0}, "q2": {"d": 1}}
    retrieved = {
        "q1": Retrieved(documents=[("a", 0.9), ("b", 0.8), ("c", 0.7)], contexts=["alpha text", "beta text"]),
        "q2": Retrieved(documents=[("b", 0.5), ("c", 0.5)], contexts=["beta", "gamma"]),
    }
    references = {"q1": ["alpha text!"], "q2": None}
    means, rows = score_rankings({"q1": "one", "q2": "two"}, retrieved, qrels, settings, references)

    q1, q2 = (row.metrics for row in rows)
    dcg, idcg = 2 + 1 / math.log2(4), 2 + 1 / math.log2(3)
    assert q1["ndcg@3"] == pytest.approx(dcg / idcg)
    assert q1["recall@1"] == pytest.approx(0.5) and q1["mrr@10"] == 1.0
    assert q1["id_context_recall"] == pytest.approx(0.5)  # top 2 docs a, b: a of {a, c}
    assert q1["id_context_precision"] == pytest.approx(0.5)
    assert q1["nonllm_context_recall"] == 1.0  # "alpha text" matches the reference passage
    assert q2["ndcg@10"] == 0.0 and q2["nonllm_context_recall"] is None
    assert rows[1].retrieved == ["c", "b"]  # a tie: descending document id, as trec_eval (and the metrics)
    assert means["ndcg@3"] == pytest.approx(dcg / idcg / 2)
    assert means["nonllm_context_recall"] == 1.0  # averaged over the one query it applies to
