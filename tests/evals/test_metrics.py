"""IR metrics against cases computed by hand (trec_eval definitions)."""

from __future__ import annotations

import math

import pytest

from evals.metrics import (
    average_precision_at_k,
    compute_metrics,
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    rank,
    recall_at_k,
)

# Relevant: a (2), c (1), e (1, never retrieved). Ranking: a, b, c, d.
JUDGED = {"a": 2, "c": 1, "e": 1, "x": 0}
RANKING = ["a", "b", "c", "d"]


def test_ties_break_by_descending_document_id_like_trec_eval() -> None:
    assert rank([("b", 0.5), ("c", 0.9), ("a", 0.5), ("d", 0.5)]) == ["c", "d", "b", "a"]


def test_recall_precision_hit_rate() -> None:
    assert recall_at_k(RANKING, JUDGED, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, JUDGED, 3) == pytest.approx(2 / 3)  # e is missing from the results
    assert precision_at_k(RANKING, JUDGED, 3) == pytest.approx(2 / 3)
    assert precision_at_k(RANKING, JUDGED, 10) == pytest.approx(2 / 10)  # divided by k, not by 4
    assert hit_rate_at_k(["b", "d"], JUDGED, 2) == 0.0
    assert hit_rate_at_k(RANKING, JUDGED, 1) == 1.0


def test_mrr() -> None:
    assert mrr_at_k(["b", "d", "c"], JUDGED) == pytest.approx(1 / 3)
    assert mrr_at_k(["b"] * 10 + ["a"], JUDGED, 10) == 0.0


def test_graded_ndcg() -> None:
    dcg = 2 / math.log2(2) + 0 + 1 / math.log2(4)  # a at 1, c at 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # a, c, e ideally
    assert ndcg_at_k(RANKING, JUDGED, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(RANKING, JUDGED, 1) == pytest.approx(1.0)
    ideal_at_2 = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(RANKING, JUDGED, 2) == pytest.approx(2 / ideal_at_2)


def test_average_precision_divides_by_all_relevant() -> None:
    # hits at ranks 1 and 3: (1/1 + 2/3) / 3 relevant documents
    assert average_precision_at_k(RANKING, JUDGED, 10) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(RANKING, JUDGED, 2) == pytest.approx(1 / 3)


def test_compute_metrics_skips_unjudged_queries_and_scores_empty_results_zero() -> None:
    ranked = {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.1)], "q3": [("z", 1.0)]}
    qrels = {"q1": JUDGED, "q2": {"a": 1}, "q3": {"z": 0}}
    result = compute_metrics(ranked, qrels, k_values=(1, 10))
    assert result["queries"] == 2  # q3 has no relevant document
    assert result["per_query"]["q2"]["ndcg@10"] == 0.0  # judged, but nothing retrieved
    assert result["mean"]["recall@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert result["mean"]["mrr@10"] == pytest.approx(0.5)
