"""Rendering command results: one JSON object for scripts, or readable text for people."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any, Callable

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel


def emit(result: BaseModel, json_output: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print a command's response (a ``ragops.contracts`` model) as one JSON object (``--json``) or
    through its text renderer; both see the same dump, so text and JSON cannot disagree."""
    dumped = result.model_dump(mode="json")
    if json_output:
        typer.echo(json.dumps(dumped, ensure_ascii=False))
    else:
        typer.echo(render(dumped))


def render_summary(s: dict[str, Any]) -> str:
    """Text form of a reindex run summary."""
    c, t = s["counts"], s["timings"]
    if s["state"] == "unchanged":
        lines = [f"Alias {s['alias']!r}: {s['reason']} ({c['documents_unchanged']} documents unchanged); no new build."]
    else:
        lines = [
            f"Build {s['version']} of alias {s['alias']!r} ({s['collection']}): {s['state']}"
            + (f", based on {s['base']}" if s.get("base") else f", full build: {s.get('full_build') or 'no base'}"),
            f"  documents: {c['documents_seen']} seen: {c['documents_new']} new, {c['documents_changed']} changed, "
            + (f"{c['documents_touched']} touched (same text), " if c.get("documents_touched") else "")
            + (f"{c['documents_retried']} retried, " if c.get("documents_retried") else "")
            + f"{c['documents_unchanged']} unchanged, {c['documents_deleted']} deleted",
            f"  indexed:   {c['documents_indexed']} documents, {c['documents_failed']} quarantined",
            f"  chunks:    {c['chunks']} ({c['chunks_embedded']} embedded, {c['chunks_reused']} reused)",
            "  timings:   " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if v >= 0.05 or k == "total"),
        ]
    if s["failures"]:
        lines.append("  quarantined this run:")
        lines += [f"    {f['doc_id']}  [{f['stage']}]  {f['reason']}{_retry(f)}" for f in s["failures"]]
    lines += [f"  note: {note}" for note in s.get("notes", [])]
    if s.get("evaluation"):
        from rag.config.metrics import HEADLINE_METRICS

        e = s["evaluation"]
        shown = ", ".join(f"{n} {e['metrics'][n]:.4f}" for n in HEADLINE_METRICS if n in e["metrics"])
        lines.append(f"  golden:    {e['queries']} queries: {shown}")
    if s.get("gate"):
        for check in s["gate"]["checks"]:
            if not check["passed"] or check["kind"] != "sanity":
                lines.append(f"    {'ok  ' if check['passed'] else 'FAIL'} {check['message']}")
    if s["state"] != "unchanged":
        verdict = "promoted" if s["promoted"] else "NOT promoted"
        lines.append(f"  {verdict}: {s['reason']}")
        lines.append(f"  alias {s['alias']!r} -> {s['live'] or 'nothing'} (was {s['previous'] or 'nothing'})")
    if s["deleted"]:
        lines.append(f"  deleted by retention: {', '.join(s['deleted'])}")
    return "\n".join(lines)


def render_plan(p: dict[str, Any]) -> str:
    """Text form of ``ragops reindex --dry-run``: what a reindex would do, and why."""
    c = p["counts"]
    if p["regate"]:
        verdict = f"no new build: build {p['regate']}, rejected by the gate, already is this build; it would be gated again"
    elif not p["would_build"]:
        verdict = "no new build: nothing changed since the live build"
    else:
        verdict = "a new build " + (f"based on {p['base']}" if p["base"] else f"from nothing (full build: {p['full_build']})")
    lines = [f"Dry run for alias {p['alias']!r} (live: {p['live'] or 'nothing'}): {verdict}",
             f"  documents: {c['documents_seen']} seen: {c['documents_new']} new, {c['documents_changed']} changed, "
             f"{c['documents_unchanged']} unchanged, {c['documents_deleted']} deleted"]
    parse = [d for d in p["documents"] if d["action"] == "parse"]
    delete = [d for d in p["documents"] if d["action"] == "delete"]
    if parse:
        lines.append(f"  would parse {len(parse)} (their chunks embedded only where the embedding cache lacks the text):")
        lines += [f"    {d['doc_id']}  {d['why']}" for d in parse]
    if delete:
        lines.append(f"  would delete {len(delete)}:")
        lines += [f"    {d['doc_id']}  {d['why']}" for d in delete]
    lines += [f"  note: {note}" for note in p["notes"]]
    return "\n".join(lines)


def render_hits(r: dict[str, Any]) -> str:
    """Text form of query results."""
    if not r["hits"]:
        return f"No results from alias {r['alias']!r} (the live build is empty)."
    lines = [f"{len(r['hits'])} results from alias {r['alias']!r}, version {r['version']}:"]
    for rank, hit in enumerate(r["hits"], start=1):
        where = hit["doc_id"] + (f" p.{hit['page']}" if hit["page"] else "")
        title = f"  [{hit['title']}]" if hit["title"] else ""
        lines.append(f"{rank:>2}. {hit['score']:.3f}  {where}{title}")
        lines.append(f"    {hit['source_uri']}")
        snippet = " ".join(hit["text"].split())
        lines += textwrap.wrap(snippet[:400] + ("…" if len(snippet) > 400 else ""), 100,
                               initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def render_status(r: dict[str, Any]) -> str:
    """Text form of ``ragops status``."""
    from rag.config.metrics import HEADLINE_METRICS, PRIMARY_METRIC

    lines = [f"alias {r['alias']!r} -> {r['live'] or 'nothing (no build promoted yet)'}   store: {r['store']}"]
    if not r["versions"]:
        lines.append("no builds yet: run `ragops reindex`")
        return "\n".join(lines)
    models = [_model_label((v["manifest"] or {}).get("model")) for v in r["versions"]]
    width = max(len("MODEL"), *map(len, models))
    lines.append(f"  {'VERSION':<20} {'STATE':<9} {'LIVE':<4} {'DOCS':>5} {'FAILED':>6} {'CHUNKS':>6} {'POINTS':>6} "
                 f"{'NDCG@10':>7} {'R@10':>6} {'GATE':<6} {'MODEL':<{width}}  CREATED")
    for v, model in zip(r["versions"], models):
        m = v["manifest"] or {}
        counts = m.get("counts", {})
        lines.append(
            f"  {v['version']:<20} {m.get('state', '?'):<9} {'*' if v['live'] else '':<4} "
            f"{counts.get('documents_indexed', '?'):>5} {counts.get('documents_failed', '?'):>6} "
            f"{counts.get('chunks', '?'):>6} {v['points']:>6} "
            f"{_metric(m, PRIMARY_METRIC):>7} {_metric(m, HEADLINE_METRICS[1]):>6} "
            f"{_gate(m):<6} {model:<{width}}  {str(m.get('created_at', '?'))[:19].replace('T', ' ')}"
        )
        if v.get("damage"):
            fix = ("`ragops reindex` rebuilds it from the embedding cache" if v["live"]
                   else "it is not served, nor used as a base")
            lines.append(f"      DAMAGED: {v['damage']}; {fix}")
        if m.get("error"):
            lines.append(f"      {m['error']}")
        for event in m.get("promotions", []):
            if event.get("forced"):
                lines.append(f"      forced promotion {str(event['at'])[:19].replace('T', ' ')}: {event['reason']}")
    if r.get("quarantined"):
        lines.append(f"quarantined documents in the live build ({len(r['quarantined'])}):")
        for q in r["quarantined"]:
            kept = "previous version kept" if q["chunks"] else "not indexed"
            lines.append(f"  {q['doc_id']}  [{q['quarantine']['stage']}]  {q['quarantine']['reason']}  ({kept})"
                         f"{_retry(q['quarantine'])}")
    return "\n".join(lines)


def render_audit(r: dict[str, Any]) -> str:
    """Text form of ``ragops audit``: one line per event, then who, when it matters."""
    since = f" since {r['since']}" if r.get("since") else ""
    if not r["events"]:
        return f"no audit events for alias {r['alias']!r}{since}"
    lines = [f"audit trail of alias {r['alias']!r}{since} ({len(r['events'])} events):"]
    for e in r["events"]:
        by = e["by"]
        who = by["user"] + "".join(f", {label} {by[key]}" for key, label in (
            ("approver", "approver"), ("api_key", "API key"), ("flow_run", "flow run"), ("deployment", "deployment"))
            if by.get(key))
        build = e["build"].split("__", 1)[-1] if e.get("build") else "-"
        lines.append(f"  {str(e['at'])[:19].replace('T', ' ')}  {e['kind']:<16} {build:<20} {e['why']}")
        lines.append(f"      by {who}")
    return "\n".join(lines)


def _model_label(model: dict[str, Any] | None) -> str:
    """A build's model as ``ModelFingerprint.label`` shows it: name (precision, weights)."""
    if not model:
        return "?"
    from rag.models import ModelFingerprint

    return ModelFingerprint.model_validate(model).label


def _metric(manifest: dict[str, Any], name: str) -> str:
    value = ((manifest.get("evaluation") or {}).get("metrics") or {}).get(name)
    return "-" if value is None else f"{value:.3f}"


def _retry(failure: dict[str, Any]) -> str:
    """When a quarantined version is retried: a timeout or stall by a later run, anything else once it
    changes."""
    if failure.get("retry_after"):
        return f"; retried by the first run after {str(failure['retry_after'])[:19].replace('T', ' ')} UTC"
    return "; retried once it changes"


def _gate(manifest: dict[str, Any]) -> str:
    gate = manifest.get("gate")
    return "-" if not gate else "pass" if gate["passed"] else "FAIL"


def render_freshness(r: dict[str, Any]) -> str:
    """Text form of ``ragops freshness``."""
    lines = [f"freshness of alias {r['alias']!r} (live: {r['live'] or 'nothing'}):"]
    for s in r["sources"]:
        limit = s["max_staleness_seconds"]
        mark = "BREACH" if s["breach"] else "ok"
        limit_text = f"limit {_seconds(limit)}" if limit else "no limit"
        lines.append(f"  {mark:<6} {s['name']:<20} {s['documents']:>6} docs  {s['quarantined']:>3} quarantined  "
                     f"{limit_text:<12} {s['message']}")
    if r.get("documents") is not None:
        lines.append("documents:")
        for d in r["documents"]:
            lines.append(f"  {d['doc_id']}  hash {str(d['content_hash'])[:12]}  modified {d['modified_at'][:19]}  "
                         f"indexed {str(d['indexed_at'])[:19]} in {d['indexed_in']}"
                         + (f"  QUARANTINED: {d['quarantine']['reason']}{_retry(d['quarantine'])}"
                            if d["quarantine"] else ""))
    return "\n".join(lines)


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def render_rollback(r: dict[str, Any]) -> str:
    """Text form of ``ragops rollback``."""
    return f"alias {r['alias']!r} -> {r['to']} (was {r['from']}, kept)"


def render_unlock(r: dict[str, Any]) -> str:
    """Text form of ``ragops unlock``."""
    freed = r["freed"]
    if freed is None:
        return f"alias {r['alias']!r} is not locked: nothing to free"
    return (f"alias {r['alias']!r}: freed the lock of {freed['run'] or 'a ragops process'} "
            f"(pid {freed['pid']} on {freed['host']}, since {freed['since']})")


def render_promote(r: dict[str, Any]) -> str:
    """Text form of ``ragops promote``."""
    forced = " (FORCED over its gate)" if r["forced"] else ""
    return (f"alias {r['alias']!r} -> {r['collection']}{forced} (was {r['replaced'] or 'nothing'}, kept)\n"
            f"  reason: {r['reason']}")


def _metric_lines(metrics: dict[str, float], indent: str = "  ") -> list[str]:
    """Headline metrics, then those without a cut-off (RAGAS, LLM-judged), five decimals each.

    Every k of every metric is in the ``--json`` output.
    """
    from rag.config.metrics import REPORT_METRICS

    names = [n for n in REPORT_METRICS if n in metrics] + sorted(n for n in metrics if "@" not in n)
    return [f"{indent}{name:<26} {metrics[name]:.5f}" for name in names]


def render_eval(r: dict[str, Any]) -> str:
    """Text form of ``ragops eval``: means, the gate's verdict when compared, the worst queries."""
    from rag.config.metrics import PRIMARY_METRIC

    e = r["evaluation"]
    lines = [
        f"build {r['version']} of alias {r['alias']!r}{' (live)' if r['live'] else ''}: {e['queries']} golden "
        f"queries from {e['golden']}, queries embedded with {e['query_model']}, {e['seconds']:.1f}s",
        *_metric_lines(e["metrics"]),
    ]
    if e["advisory"]:
        lines.append("  advisory (LLM-judged, never gate):")
        lines += _metric_lines(e["advisory"], "    ")
    for missing in r["missing"]:
        lines.append(f"  not served by this build: {missing}")
    if r.get("gate"):
        gate = r["gate"]
        verdict = "would PASS the gate" if gate["passed"] else "would FAIL the gate"
        lines.append(f"against live {gate['live']}: {verdict}")
        lines += [f"  {'ok  ' if c['passed'] else 'FAIL'} {c['message']}" for c in gate["checks"]]
    imperfect = [q for q in r["per_query"] if (q["metrics"].get(PRIMARY_METRIC) or 0) < 1]
    worst = sorted(imperfect, key=lambda q: (q["metrics"].get(PRIMARY_METRIC) or 0, q["query_id"]))[:5]
    if worst:
        lines.append("lowest nDCG@10:")
        for q in worst:
            relevant = ", ".join(d for d, g in q["relevant"].items() if g)
            lines.append(f"  {q['metrics'].get(PRIMARY_METRIC, 0):.3f}  [{q['query_id']}] {q['query'][:70]}")
            lines.append(f"         wants {relevant[:90]}; got {', '.join(q['retrieved'][:3])[:90]}")
    return "\n".join(lines)


def render_drift(r: dict[str, Any]) -> str:
    """Text form of ``ragops drift``."""
    lines = [f"drift check of alias {r['alias']!r}, live build {r['version']}: "
             + ("DRIFT" if r["drifted"] else "no drift")]
    for c in r["checks"]:
        mark = {"ok": "ok  ", "drift": "DRIFT", "skipped": "skip"}[c["status"]]
        lines.append(f"  {mark:<5} {c['name']:<18} {c['message']}")
    return "\n".join(lines)


def render_bench(r: dict[str, Any]) -> str:
    """Text form of ``ragops bench beir``."""
    lines = [f"{r['dataset']} ({r['split']}): {r['documents']} documents, {r['queries']} queries, model {r['model']}"]
    runs = r.get("backends") or [{"backend": None, "metrics": r["metrics"], "seconds": r["seconds"]}]
    for run in runs:
        if len(runs) > 1:
            lines.append(f"backend {run['backend']} ({run['space']} vectors):")
        t = run["seconds"]
        lines += [*_metric_lines(run["metrics"]),
                  f"time: index {t['index']:.1f}s, evaluate {t['evaluate']:.1f}s, total {t['total']:.1f}s"]
    return "\n".join(lines)


def render_config(r: dict[str, Any]) -> str:
    """Text form of ``ragops config`` (YAML, like the file it came from)."""
    import yaml

    return yaml.safe_dump(r, sort_keys=False).rstrip()


def render_migration(m: dict[str, Any]) -> str:
    """Text form of ``ragops migrate``."""
    if m["already_done"]:
        return f"{m['store']} is already a Qdrant Edge store: nothing to migrate"
    lines = [f"migrated {m['backup']} -> {m['store']} (Qdrant Edge); the old store is kept at {m['backup']}"]
    lines += [f"  build {name}: {points} points" for name, points in m["builds"].items()]
    lines += [f"  alias {alias!r} -> {target}" for alias, target in m["aliases"].items()]
    lines += [f"  table {name}: {rows} rows" for name, rows in m["tables"].items()]
    lines += [f"  skipped {name} (not made by ragops)" for name in m["skipped"]]
    return "\n".join(lines)
