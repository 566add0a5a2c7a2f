"""Prefect artifacts for evaluations and gate verdicts, keyed per alias so their history shows in the UI.

- ``eval-<alias>``: a table, one row per golden query (then a row of means), for each evaluation;
- ``gate-<alias>``: a table of the gate's checks for each candidate, with figures and thresholds;
- ``freshness-<alias>``: a table of each source's staleness against its limit;
- ``reindex-<alias>``: the run summary of each reindex (Markdown), quarantined documents included.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evals.models import EvaluationReport
from rag.config import DETAIL_METRICS, HEADLINE_METRICS, LLM_METRICS, RAGAS_METRICS
from rag.index.freshness import SourceFreshness
from rag.index.result import headline as summary_headline
from rag.models import BuildSummary, GateResult

#: metrics shown per query in the evaluation table (all of them are in ``ragops eval --json``): the headline,
#: hit_rate@10 and map@100, three context metrics and two LLM-judged ones
TABLE_METRICS = (*HEADLINE_METRICS, *DETAIL_METRICS[:2], *RAGAS_METRICS[:3], *LLM_METRICS[:2])
#: the evaluation's description line: the headline and map@100
LINE_METRICS = (*HEADLINE_METRICS, DETAIL_METRICS[1])


def artifact_key(prefix: str, alias: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-{alias.replace('_', '-').lower()}"


def headline(report: EvaluationReport) -> str:
    """One line: version, golden set size and the main metrics."""
    m = report.record.metrics
    shown = ", ".join(f"{name} {m[name]:.4f}" for name in LINE_METRICS if name in m)
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


def publish_verdict(alias: str, version: str, gate: GateResult, report: EvaluationReport | None,
                    baseline: EvaluationReport | None) -> None:
    """The gate's checks, and the candidate's (and live build's) evaluation."""
    publish_gate(alias, version, gate)
    if baseline is not None:
        publish_evaluation(alias, baseline, "live build, for comparison")
    if report is not None:
        publish_evaluation(alias, report, "PASSED" if gate.passed else "FAILED: " + gate.reason)


def _redaction_rows(summary: BuildSummary, shown: int = 100) -> list[str]:
    """Counts of redacted values by entity type and by document: never a value."""
    c = summary.counts
    if not c.redacted:
        return []
    entities = sorted(c.redacted)
    rows = [f"| {doc_id} | " + " | ".join(str(counts.get(e, 0)) for e in entities) + " |"
            for doc_id, counts in sorted(summary.redacted.items())[:shown]]
    more = len(summary.redacted) - shown
    return ["", f"## Redacted values ({c.documents_redacted} documents)", "",
            "| document | " + " | ".join(entities) + " |", "|---|" + "---|" * len(entities),
            "| **all** | " + " | ".join(str(c.redacted[e]) for e in entities) + " |", *rows]\
        + ([f"\nand {more} more documents (`ragops reindex --json`: redacted)"] if more > 0 else [])


def publish_summary(summary: BuildSummary, assessed: list[SourceFreshness]) -> None:
    """The run summary (Markdown) and source freshness (table)."""
    c = summary.counts
    rows = [
        f"| state | {summary.state} |",
        f"| documents | {c.documents_seen} seen: {c.documents_new} new, {c.documents_changed} changed, "
        + (f"{c.documents_touched} touched (same text), " if c.documents_touched else "")
        + f"{c.documents_retried} retried, {c.documents_unchanged} unchanged, {c.documents_deleted} deleted |",
        f"| base | {summary.base or f'none, full build: {summary.full_build}'} |",
        f"| indexed / failed | {c.documents_indexed} / {c.documents_failed} |",
        f"| chunks | {c.chunks} ({c.chunks_embedded} embedded, {c.chunks_reused} reused) |",
        f"| promoted | {'yes' if summary.promoted else 'no'}: {summary.reason} |",
        f"| live | {summary.live or '-'} (was {summary.previous or '-'}) |",
        f"| deleted by retention | {', '.join(summary.deleted) or '-'} |",
    ]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.model_dump().items())
    failures = "\n".join(
        f"| {f.doc_id} | {f.stage} | {f.reason.replace('|', '/')} | "
        + (f"after {f.retry_after:%Y-%m-%d %H:%M:%S} UTC |" if f.retry_after else "once it changes |")
        for f in summary.failures)
    markdown = "\n".join(
        [f"# Reindex {summary.alias}: {summary.version}", "", "| | |", "|---|---|", *rows, "",
         f"Timings: {timings}"]
        + [f"\n> {note}" for note in summary.notes]
        + (["", "## Quarantined documents", "", "| document | stage | reason | retried |", "|---|---|---|---|",
            failures]
           if failures else [])
        + _redaction_rows(summary)
    )
    create_markdown_artifact(markdown=markdown, key=artifact_key("reindex", summary.alias),
                             description=summary_headline(summary))
    publish_freshness(summary.alias, assessed)
