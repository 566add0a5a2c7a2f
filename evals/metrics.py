"""Retrieval metrics over ranked results and graded relevance judgements (qrels), as trec_eval defines them.

Pure functions, no I/O: ``compute_metrics(ranked, qrels)`` in, numbers out. Definitions follow
trec_eval (which pytrec_eval wraps, and which BEIR and MTEB report), so figures are comparable with
published ones to the fifth decimal:

- A document is **relevant** when its judged relevance is >= 1. Unjudged documents are not relevant.
- **Ranking**: results are ordered by score, descending. NOTE: ties are broken by document id,
  *descending*, as trec_eval does. Using any other order changes the fifth decimal.
- Only queries that have at least one relevant document are scored and averaged, as in trec_eval.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

Ranked = Mapping[str, Iterable[tuple[str, float]]]  # query id => [(doc id, score)], any order
Qrels = Mapping[str, Mapping[str, int]]  # query id => {doc id: graded relevance}

DEFAULT_K = (1, 3, 5, 10, 100)


def rank(results: Iterable[tuple[str, float]]) -> list[str]:
    """Document ids by decreasing score; ties by decreasing document id (trec_eval's order)."""
    ordered = sorted(results, key=lambda item: item[0], reverse=True)  # stable sorts: id order first
    ordered.sort(key=lambda item: item[1], reverse=True)
    return [doc_id for doc_id, _ in ordered]


def ndcg_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain at k: gain = judged relevance, discount = log2(rank + 1).

    The ideal ranking orders every relevant judged document by relevance.
    """
    dcg = sum(_gain(judged, doc) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:k]
    idcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    relevant = _relevant(judged)
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def precision_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k, divided by k (even when fewer than k were retrieved)."""
    return len(_relevant(judged).intersection(ranking[:k])) / k


def hit_rate_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    """1 when at least one relevant document is in the top k, else 0."""
    return 1.0 if _relevant(judged).intersection(ranking[:k]) else 0.0


def mrr_at_k(ranking: list[str], judged: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document in the top k (0 when none is)."""
    relevant = _relevant(judged)
    for i, doc in enumerate(ranking[:k]):
        if doc in relevant:
            return 1.0 / (i + 1)
    return 0.0


def average_precision_at_k(ranking: list[str], judged: Mapping[str, int], k: int) -> float:
    """trec_eval's map_cut_k for one query: precision at each relevant hit within the top k, summed,
    divided by the number of relevant documents (not by k, and not by the hits)."""
    relevant = _relevant(judged)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, doc in enumerate(ranking[:k]):
        if doc in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


def compute_metrics(ranked: Ranked, qrels: Qrels, k_values: Iterable[int] = DEFAULT_K) -> dict:
    """Every metric at every k, per query and averaged over the scored queries.

    Returns:
        ``{"queries": n, "mean": {"ndcg@10": ..., "recall@10": ..., "map@100": ..., "mrr@10": ...},
        "per_query": {qid: {...}}}``. Queries without a relevant judged document are skipped; a query
        with judgements but no results scores 0.
    """
    ks = sorted(set(k_values))
    per_query: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        if not _relevant(judged):
            continue
        ranking = rank(ranked.get(qid, []))
        row = {"mrr@10": mrr_at_k(ranking, judged, 10)}
        for k in ks:
            row[f"ndcg@{k}"] = ndcg_at_k(ranking, judged, k)
            row[f"recall@{k}"] = recall_at_k(ranking, judged, k)
            row[f"precision@{k}"] = precision_at_k(ranking, judged, k)
            row[f"hit_rate@{k}"] = hit_rate_at_k(ranking, judged, k)
            row[f"map@{k}"] = average_precision_at_k(ranking, judged, k)
        per_query[qid] = row
    names = next(iter(per_query.values())).keys() if per_query else []
    mean = {name: sum(row[name] for row in per_query.values()) / len(per_query) for name in names}
    return {"queries": len(per_query), "mean": mean, "per_query": per_query}


def _relevant(judged: Mapping[str, int]) -> set[str]:
    return {doc for doc, rel in judged.items() if rel >= 1}


def _gain(judged: Mapping[str, int], doc: str) -> float:
    rel = judged.get(doc, 0)
    return float(rel) if rel > 0 else 0.0
