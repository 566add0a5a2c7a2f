"""BEIR datasets: the loader (CRLF and LF, headers, splits) and `ragops bench beir` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.beir import load_beir
from rag.errors import GoldenSetError
from ragops.cli import app

DOCS = {
    "d1": ("Espresso", "Descale the espresso machine every two months with citric acid."),
    "d2": ("Bicycles", "Replace a bicycle chain at 0.5% elongation before it wears the cassette."),
    "d3": ("", "Sourdough bread needs a ripe starter, flour, water and salt, and a long cold proof."),
    "d4": ("Tides", "Tides are caused by the gravitational pull of the moon and the sun on the oceans."),
}


def write_dataset(root: Path, newline: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) + "\n" for i, (t, x) in DOCS.items())
    )
    queries = {"q1": "how often to descale an espresso machine", "q2": "what causes ocean tides",
               "q3": "unjudged query", "q4": "when to replace a bike chain"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    rows = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td4\t2", "q2\td3\t0", "q4\td2\t1"]
    (root / "qrels" / "test.tsv").write_bytes((newline.join(rows) + newline).encode())
    return root


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_loader_reads_crlf_and_lf_alike(tmp_path: Path, newline: str) -> None:
    dataset = load_beir(write_dataset(tmp_path / "mini", newline), "test")
    assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d4": 2, "d3": 0}, "q4": {"d2": 1}}
    assert list(dataset.queries) == ["q1", "q2", "q4"]  # only judged queries
    assert dataset.corpus["d1"] == "Espresso Descale the espresso machine every two months with citric acid."
    assert dataset.corpus["d3"].startswith("Sourdough")  # empty title: no leading space


def test_loader_errors_name_the_file_and_line(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "mini", "\n")
    with pytest.raises(GoldenSetError, match=r"qrels/dev.tsv does not exist.*\(splits here: test\)"):
        load_beir(root, "dev")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(GoldenSetError, match=r"test.tsv, line 2: expected query-id, corpus-id, score"):
        load_beir(root, "test")


@pytest.mark.slow
def test_bench_indexes_through_the_pipeline_and_prints_the_metrics(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "mini", "\r\n")
    result = CliRunner().invoke(app, ["bench", "beir", str(root), "--json", "--keep", str(tmp_path / "kept")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["dataset"], report["documents"], report["queries"]) == ("mini", 4, 3)
    metrics = report["metrics"]
    # Four distinct topics and unambiguous queries: every relevant document ranks first.
    assert metrics["ndcg@10"] == 1.0 and metrics["recall@1"] == 1.0 and metrics["mrr@10"] == 1.0
    assert metrics["precision@1"] == 1.0 and metrics["map@100"] == 1.0
    assert metrics["precision@3"] == pytest.approx(1 / 3)
    assert report["store"] == str(tmp_path / "kept") and (tmp_path / "kept").is_dir()

    text = CliRunner().invoke(app, ["bench", "beir", str(root)])
    assert text.exit_code == 0 and "ndcg@10                    1.00000" in text.stdout
    missing = CliRunner().invoke(app, ["bench", "beir", str(tmp_path / "nope"), "--json"])
    assert missing.exit_code == 2 and json.loads(missing.stdout)["error"]["kind"] == "golden_set"


@pytest.mark.slow
def test_bench_runs_each_backend_into_its_own_build(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "mini", "\n")
    result = CliRunner().invoke(app, ["bench", "beir", str(root), "--json", "-b", "torch", "-b", "onnx",
                                      "-b", "onnx-int8", "--keep", str(tmp_path / "kept")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    runs = {run["backend"]: run for run in report["backends"]}
    assert list(runs) == ["torch", "onnx", "onnx-int8"]
    assert [runs[name]["space"] for name in runs] == ["reference", "reference", "int8"]
    assert report["metrics"] == runs["torch"]["metrics"]  # the first backend's, as before
    assert all(run["metrics"]["ndcg@10"] == 1.0 for run in runs.values())
    text = CliRunner().invoke(app, ["bench", "beir", str(root), "-b", "onnx", "-b", "torch"])
    assert text.exit_code == 0 and "backend onnx (reference vectors):" in text.stdout
    wrong = CliRunner().invoke(app, ["bench", "beir", str(root), "--json", "-b", "gpu"])
    assert wrong.exit_code == 2 and "unknown --backend gpu" in json.loads(wrong.stdout)["error"]["message"]
