"""Rendering command results: one JSON object for scripts, or readable text for people."""

from __future__ import annotations

import json
import textwrap
from typing import Any, Callable

import typer


def emit(result: dict[str, Any], json_output: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print ``result`` as one JSON object (``--json``) or through its text renderer."""
    if json_output:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        typer.echo(render(result))


def render_summary(s: dict[str, Any]) -> str:
    """Text form of a reindex run summary."""
    c, t = s["counts"], s["timings"]
    lines = [
        f"Build {s['version']} of alias {s['alias']!r} ({s['collection']}): {s['state']}",
        f"  documents: {c['documents_seen']} seen, {c['documents_indexed']} indexed, {c['documents_failed']} failed",
        f"  chunks:    {c['chunks']}",
        "  timings:   " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()),
    ]
    if s["failures"]:
        lines.append("  failed documents:")
        lines += [f"    {f['doc_id']}  [{f['stage']}]  {f['reason']}" for f in s["failures"]]
    verdict = "promoted" if s["promoted"] else "NOT promoted"
    lines.append(f"  {verdict}: {s['reason']}")
    lines.append(f"  alias {s['alias']!r} -> {s['live'] or 'nothing'} (was {s['previous'] or 'nothing'})")
    if s["deleted"]:
        lines.append(f"  deleted by retention: {', '.join(s['deleted'])}")
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
    lines = [f"alias {r['alias']!r} -> {r['live'] or 'nothing (no build promoted yet)'}   store: {r['store']}"]
    if not r["versions"]:
        lines.append("no builds yet: run `ragops reindex`")
        return "\n".join(lines)
    header = f"  {'VERSION':<20} {'STATE':<9} {'LIVE':<4} {'DOCS':>5} {'FAILED':>6} {'CHUNKS':>6} {'POINTS':>6}  MODEL  CREATED"
    lines.append(header)
    for v in r["versions"]:
        m = v["manifest"] or {}
        counts = m.get("counts", {})
        model = m.get("model", {})
        lines.append(
            f"  {v['version']:<20} {m.get('state', '?'):<9} {'*' if v['live'] else '':<4} "
            f"{counts.get('documents_indexed', '?'):>5} {counts.get('documents_failed', '?'):>6} "
            f"{counts.get('chunks', '?'):>6} {v['points']:>6}  {model.get('name', '?')} "
            f"({model.get('dtype', '?')}, {str(model.get('weights_sha256', '?'))[:8]})  "
            f"{str(m.get('created_at', '?'))[:19].replace('T', ' ')}"
        )
        if m.get("error"):
            lines.append(f"      {m['error']}")
    return "\n".join(lines)


def render_rollback(r: dict[str, Any]) -> str:
    """Text form of ``ragops rollback``."""
    return f"alias {r['alias']!r} -> {r['to']} (was {r['from']}, kept)"


def render_config(r: dict[str, Any]) -> str:
    """Text form of ``ragops config`` (YAML, like the file it came from)."""
    import yaml

    return yaml.safe_dump(r, sort_keys=False).rstrip()
