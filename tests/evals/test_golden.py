"""Golden sets: both formats, every malformed case with its message, resolution against a build's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.golden import load_golden_set, resolve_qrels
from rag.errors import GoldenSetError
from rag.models import DocumentRecord, Quarantine, utc_now
from testkit.paths import ROOT


def _record(doc_id: str, chunks: int = 2, quarantine: str | None = None) -> DocumentRecord:
    now = utc_now()
    return DocumentRecord(
        doc_id=doc_id, source="kb", uri=f"file:///srv/{doc_id}", signal="s", modified=0.0, first_seen=now,
        last_seen=now, chunks=chunks,
        quarantine=Quarantine(stage="parse", reason=quarantine, signal="s", since=now) if quarantine else None,
    )


RECORDS = {r.doc_id: r for r in [_record("kb/a.md"), _record("kb/b.pdf"), _record("kb/c.txt", 0, "file is empty")]}


def test_yaml_with_lists_graded_mappings_and_default_ids(tmp_path: Path) -> None:
    file = tmp_path / "golden.yaml"
    file.write_text(
        "- query: first\n  relevant: [kb/a.md]\n"
        "- id: graded\n  query: second\n  relevant: {kb/a.md: 2, kb/b.pdf: 1, kb/z.md: 0}\n"
        "  reference_contexts: [some passage]\n  reference_answer: an answer\n"
        "- query: third\n  relevant: kb/b.pdf\n"
    )
    golden = load_golden_set(file)
    assert [q.id for q in golden.queries] == ["q1", "graded", "q3"]
    assert golden.queries[0].relevant == {"kb/a.md": 1}
    assert golden.queries[1].relevant == {"kb/a.md": 2, "kb/b.pdf": 1, "kb/z.md": 0}
    assert golden.queries[1].reference_contexts == ["some passage"]
    assert golden.queries[2].relevant == {"kb/b.pdf": 1}
    assert len(golden.sha256) == 64


def test_jsonl_and_the_demo_set(tmp_path: Path) -> None:
    file = tmp_path / "golden.jsonl"
    rows = [{"id": 7, "query": "x", "relevant": ["kb/a.md"]}, {"query": "y", "relevant": {"kb/b.pdf": 3}}]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    golden = load_golden_set(file)
    assert [(q.id, q.relevant) for q in golden.queries] == [("7", {"kb/a.md": 1}), ("q2", {"kb/b.pdf": 3})]
    demo = load_golden_set(ROOT / "demo" / "golden.yaml")
    assert len(demo.queries) == 9 and demo.queries[0].relevant["demo/operations-handbook.pdf"] == 2


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("g.yaml", "- relevant: [kb/a.md]\n", r"query 1 \(id 'q1'\): query: Field required"),
        ("g.yaml", "- query: x\n  relevant: [kb/a.md]\n  answer: y\n", r"answer: unknown field \(allowed: id, query"),
        ("g.yaml", "- query: x\n  relevant: {kb/a.md: 0}\n", "needs at least one document with grade 1 or more"),
        ("g.yaml", "- query: x\n  relevant: {kb/a.md: -1}\n", "grades must be 0"),
        ("g.yaml", "- {id: a, query: x, relevant: [d]}\n- {id: a, query: y, relevant: [d]}\n", "id 'a' is used twice"),
        ("g.yaml", "queries: []\n", "holds no queries"),
        ("g.yaml", "items: []\n", "expected a list of queries, or a mapping with `queries:`"),
        ("g.yaml", "- query: [unclosed\n", "is not valid YAML"),
        ("g.jsonl", '{"query": "x", "relevant": ["d"]}\n{"query": oops}\n', r"line 2: not valid JSON"),
        ("g.csv", "query,relevant\n", "unknown format '.csv'"),
    ],
)
def test_malformed_sets_name_the_entry_and_the_problem(tmp_path: Path, name: str, text: str, message: str) -> None:
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(GoldenSetError, match=message):
        load_golden_set(file)


def test_missing_file_says_how_to_set_one(tmp_path: Path) -> None:
    with pytest.raises(GoldenSetError, match="does not exist; set evaluation.golden or pass --golden"):
        load_golden_set(tmp_path / "nope.yaml")


def test_resolution_maps_uris_and_refuses_documents_the_build_does_not_serve(tmp_path: Path) -> None:
    file = tmp_path / "g.yaml"
    file.write_text(
        "- {id: uri, query: x, relevant: ['file:///srv/kb/b.pdf']}\n"
        "- {id: gone, query: y, relevant: [kb/a.md, kb/removed.md]}\n"
        "- {id: broken, query: z, relevant: [kb/c.txt]}\n"
    )
    golden = load_golden_set(file)
    with pytest.raises(GoldenSetError) as error:
        resolve_qrels(golden, RECORDS)
    message = str(error.value)
    assert "names 2 relevant document(s) the build does not serve" in message
    assert "kb/removed.md (query gone: not in the index)" in message
    assert "kb/c.txt (query broken: quarantined: file is empty)" in message

    qrels, missing = resolve_qrels(golden, RECORDS, strict=False)
    assert qrels["uri"] == {"kb/b.pdf": 1}  # the URI became the document id
    assert qrels["gone"] == {"kb/a.md": 1, "kb/removed.md": 1}  # kept: scored as a miss
    assert len(missing) == 2
