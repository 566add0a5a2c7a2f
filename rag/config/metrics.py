"""The one list of metric names: what the evaluation reports, what settings may name, and what renderers show.

A renderer (the CLI's text, the Prefect artifacts, the approval form, the log lines) picks its metrics from
the names here, never from a list of its own: ``PRIMARY_METRIC`` first, then ``HEADLINE_METRICS``, then
``DETAIL_METRICS`` where there is room. Definitions of each metric: docs/evaluation.md.
"""

from __future__ import annotations

import re

#: metrics a gate may name: IR metrics as ``name@k`` (k from ``evaluation.k_values``; mrr only @10),
#: and the RAGAS context metrics by name (see docs/evaluation.md for each definition)
IR_METRICS = ("ndcg", "recall", "precision", "hit_rate", "map", "mrr")
RAGAS_METRICS = ("id_context_recall", "id_context_precision", "nonllm_context_recall", "nonllm_context_precision")
#: LLM-judged metrics (evals/judge.py): advisory, never gating, so settings may not name them
LLM_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision")

#: the metric a build is judged by first: the first of every summary, and what ``ragops eval`` ranks queries by
PRIMARY_METRIC = "ndcg@10"
#: what a one-line summary of an evaluation shows, in this order (a reindex's summary, the eval log line and
#: artifact, ``ragops status`` the first two)
HEADLINE_METRICS = (PRIMARY_METRIC, "recall@10", "mrr@10")
#: what a table shows after the headline where it has room (the approval form; the eval artifact the first two)
DETAIL_METRICS = ("hit_rate@10", "map@100", "precision@10")
#: the order ``ragops eval`` prints means in, before the metrics without a cut-off (every k is in ``--json``)
REPORT_METRICS = (PRIMARY_METRIC, "recall@10", "precision@10", "hit_rate@10", "mrr@10", "map@10", "map@100",
                  "ndcg@100", "recall@100", "precision@1")

_METRIC_NAME = re.compile(rf"^(?:({'|'.join(IR_METRICS)})@(\d+)|([a-z_]+))$")


def check_metric_name(name: str) -> str:
    """Raise ValueError unless ``name`` is a metric the evaluation reports."""
    match = _METRIC_NAME.match(name)
    valid = match and (
        (match.group(1) and (match.group(1) != "mrr" or match.group(2) == "10")) or match.group(3) in RAGAS_METRICS
    )
    if not valid:
        raise ValueError(
            f"unknown metric {name!r}; use one of {', '.join(m + '@K' for m in IR_METRICS[:-1])}, mrr@10, "
            f"{', '.join(RAGAS_METRICS)}"
        )
    return name
