"""The drift-check flow on real builds: a model change, a corpus that lost the golden documents, a shift in
what users ask, and no false alarm on an unchanged system."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.drift import drift_check
from flows.reindex import reindex
from rag.config import StoreSettings
from rag.models import utc_now
from rag.serving.querylog import QueryLog
from rag.store import open_store
from ragops.cli import app
from testkit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TOPICS = ["the espresso machine", "descaling the coffee maker", "a bicycle chain", "chain oil",
          "index builds", "rolling back a promotion", "old index versions", "stale documents"]
ASKS = ["how do I look after {}", "what should I know about {}", "problems with {}", "{} maintenance tips",
        "when do I need to check {}"]
ELSEWHERE = ["growing tomatoes", "baking sourdough bread", "pruning roses", "brewing green tea",
             "planting tulip bulbs", "roasting vegetables", "composting kitchen waste", "knitting a scarf"]


def _config(tmp_path: Path, settings, name: str = "ragops.yaml", golden: bool = True, **sections) -> Path:
    data = settings.model_dump(mode="json", exclude_none=True)
    if golden:
        data["evaluation"] = {"golden": str(ROOT / "demo" / "golden.yaml")}
    data["drift"] = {"min_queries": 20, "permutations": 200}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _statuses(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


def _log_queries(store_path: Path, embedder, texts: list[str], days_ago: float) -> None:
    with open_store(StoreSettings(location=str(store_path))) as store:
        QueryLog(store, "test", embedder.fingerprint).record(embedder.embed(texts), at=utc_now() - timedelta(days=days_ago))


def test_an_unchanged_system_raises_no_alarm_in_three_checks(tmp_path: Path, settings, store_path: Path,
                                                              embedder) -> None:
    config = _config(tmp_path, settings)
    reindex(config=str(config))
    pool = [ask.format(topic) for ask, topic in itertools.product(ASKS, TOPICS)]
    random.Random(7).shuffle(pool)
    _log_queries(store_path, embedder, pool[:20], days_ago=3)  # reference window
    _log_queries(store_path, embedder, pool[20:], days_ago=0.5)  # recent: same kind of questions

    reports = [drift_check(config=str(config)) for _ in range(3)]

    for report in reports:
        assert report["drifted"] is False, report
        assert _statuses(report) == {"golden:ndcg@10": "ok", "golden:recall@10": "ok", "model": "ok",
                                     "compatibility": "ok", "queries": "ok"}
    assert [c["value"] for c in reports[0]["checks"]] == [c["value"] for c in reports[2]["checks"]]
    queries = next(c for c in reports[0]["checks"] if c["name"] == "queries")
    assert queries["value"] >= 0.01 and "20 recent and 20 reference queries" in queries["message"]

    # What users ask moves elsewhere: the distribution check alone notices, without any labels.
    _log_queries(store_path, embedder, [ask.format(t) for ask in ASKS for t in ELSEWHERE][:25], days_ago=0.2)
    shifted = drift_check(config=str(config), emit=False)
    assert _statuses(shifted)["queries"] == "drift" and _statuses(shifted)["model"] == "ok"


def test_a_changed_model_is_reported_by_fingerprint_and_preflight(tmp_path: Path, settings, cls_model: Path) -> None:
    reindex(config=str(_config(tmp_path, settings)))
    changed = _config(tmp_path, settings, "changed.yaml", embedding={"model": str(cls_model)})

    result = CliRunner().invoke(app, ["drift", "--config", str(changed), "--json", "--no-event"])

    assert result.exit_code == 6, result.output
    report = yaml.safe_load(result.stdout)
    assert report["drifted"] is True and report["error"]["kind"] == "drift"
    statuses = _statuses(report)
    assert statuses["model"] == "drift" and statuses["compatibility"] == "drift"
    assert statuses["golden:ndcg@10"] == "ok"  # the live build still serves its own model's queries
    compatibility = next(c for c in report["checks"] if c["name"] == "compatibility")
    assert compatibility["value"] < 0.9 and compatibility["threshold"] == 0.9
    model = next(c for c in report["checks"] if c["name"] == "model")
    assert "is not the live build's all-MiniLM-L6-v2" in model["message"]


def test_golden_documents_lost_from_the_corpus_show_as_drift(tmp_path: Path, settings, corpus: Path) -> None:
    with_golden = _config(tmp_path, settings)
    first = reindex(config=str(with_golden))
    assert first["evaluation"]["metrics"]["recall@10"] == 1.0
    (corpus / "bicycle-chain.md").unlink()
    (corpus / "espresso-machine.html").unlink()
    # A refresh without a golden set: nothing stops the build that lost the documents from going live.
    second = reindex(config=str(_config(tmp_path, settings, "nogolden.yaml", golden=False)))
    assert second["promoted"] is True and second["evaluation"] is None

    report = drift_check(config=str(with_golden), emit=False)

    statuses = _statuses(report)
    assert statuses["golden:recall@10"] == "drift" and statuses["golden:ndcg@10"] == "drift"
    recall = next(c for c in report["checks"] if c["name"] == "golden:recall@10")
    assert recall["baseline"] == 1.0 and recall["value"] < 0.95 and recall["threshold"] == 0.05
    assert f"at build {first['version']}" in recall["message"]  # the baseline the replaced build recorded
    assert "relevant document(s) no longer served" in recall["message"]
    assert statuses["model"] == "ok" and statuses["compatibility"] == "ok"
