"""Prefect artifacts for evaluations and gate verdicts, keyed per alias so their history shows in the UI.

- ``eval-<alias>``: a table, one row per golden query (then a row of means), for each evaluation;
- ``gate-<alias>``: a table of the gate's checks for each candidate, with figures and thresholds;
- ``freshness-<alias>``: a table of each source's staleness against its limit.
"""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from evals.models import EvaluationReport
from rag.freshness import SourceFreshness
from rag.models import GateResult

#: metrics shown per query in the evaluation table (all of them are in ``ragops eval --json``)
TABLE_METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "map@100", "id_context_recall",
                 "id_context_precision", "nonllm_context_recall", "faithfulness", "answer_relevancy")


def artifact_key(prefix: str, alias: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-{alias.replace('_', '-').lower()}"


def headline(report: EvaluationReport) -> str:
    """One line: version, golden set size and the main metrics."""
    m = report.record.metrics
    shown = ", ".join(f"{name} {m[name]:.4f}" for name in ("ndcg@10", "recall@10", "mrr@10", "map@100") if name in m)
    return f"{report.record.version} on {report.record.queries} golden queries: {shown}"


def publish_evaluation(alias: str, report: EvaluationReport, verdict: str = "") -> None:
    """The per-query table of one evaluation, with its means as the last row."""
    columns = [name for name in TABLE_METRICS if any(row.metrics.get(name) is not None for row in report.per_query)]
    rows = [
        {"query_id": row.query_id, "query": row.query[:120],
         **{name: _round(row.metrics.get(name)) for name in columns},
         "retrieved": ", ".join(row.retrieved[:3]), "relevant": ", ".join(d for d, g in row.relevant.items() if g)}
        for row in report.per_query
    ]
    rows.append({"query_id": "MEAN", "query": f"{report.record.queries} queries",
                 **{name: _round(report.record.metrics.get(name, report.record.advisory.get(name)))
                    for name in columns},
                 "retrieved": "", "relevant": ""})
    description = headline(report) + (f"; {verdict}" if verdict else "")
    create_table_artifact(table=rows, key=artifact_key("eval", alias), description=description)


def publish_gate(alias: str, version: str, gate: GateResult) -> None:
    """The gate's checks for a candidate: kind, metric, figure, live figure, threshold, verdict."""
    rows = [
        {"check": check.kind, "metric": check.metric or "", "candidate": _round(check.value),
         "live": _round(check.baseline), "threshold": _round(check.threshold),
         "passed": check.passed, "message": check.message}
        for check in gate.checks
    ]
    verdict = "PASSED" if gate.passed else "FAILED"
    create_table_artifact(table=rows, key=artifact_key("gate", alias),
                          description=f"Gate {verdict} for {alias} {version}: {gate.reason}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def publish_freshness(alias: str, assessed: list[SourceFreshness]) -> list[dict]:
    """Each source's staleness against its max_staleness; returns the rows."""
    rows = [
        {"source": s.state.name, "documents": s.state.documents, "quarantined": s.state.quarantined,
         "unsynced": s.state.unsynced, "staleness_s": round(s.staleness_seconds or 0, 1),
         "max_staleness_s": s.max_staleness_seconds, "breach": s.breach, "status": s.message}
        for s in assessed
    ]
    create_table_artifact(table=rows, key=artifact_key("freshness", alias), description=f"Freshness of {alias}'s sources")
    return rows
