"""Evaluation-gated promotion end to end: real flows, real model, real embedded Qdrant, the demo golden set."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.reindex import reindex
from rag.config import StoreSettings
from rag.errors import GateFailed, PromotionRefused
from rag.index.audit import read_trail
from rag.index.versions import promote_version
from rag.store import open_store
from rag.store.names import version_of
from ragops.cli import app
from testkit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

runner = CliRunner()


def _config(tmp_path: Path, settings, name: str = "ragops.yaml", **sections) -> Path:
    """The test settings with the demo golden set and a gate, plus overrides, as a YAML file."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["evaluation"] = {"golden": str(ROOT / "demo" / "golden.yaml")}
    data["gate"] = {"floors": {"ndcg@10": 0.7, "hit_rate@5": 0.9}, "max_drop": {"ndcg@10": 0.02, "recall@10": 0.02}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _manifest(store_path: Path, collection: str):
    with open_store(StoreSettings(location=str(store_path))) as store:
        return store.read_manifest(collection), store.alias_target("test")


def test_a_good_candidate_is_measured_against_live_and_promoted(tmp_path: Path, settings, corpus: Path,
                                                                 store_path: Path) -> None:
    from prefect.artifacts import Artifact

    config = _config(tmp_path, settings)
    first = reindex(config=str(config))
    assert first["promoted"] is True, first["reason"]
    assert first["gate"]["live"] is None  # first build: floors only
    assert {c["kind"] for c in first["gate"]["checks"]} == {"sanity", "floor"}
    metrics = first["evaluation"]["metrics"]
    assert first["evaluation"]["queries"] == 9
    assert metrics["ndcg@10"] >= 0.7 and metrics["hit_rate@5"] == 1.0

    (corpus / "glossary.txt").write_text((corpus / "glossary.txt").read_text() + "\nVersion: a build of an index.\n")
    second = reindex(config=str(config))
    assert second["promoted"] is True, second["reason"]
    gate = second["gate"]
    assert gate["live"] == first["collection"] and gate["baseline"]["version"] == first["version"]
    drops = {c["metric"]: c for c in gate["checks"] if c["kind"] == "max_drop"}
    assert set(drops) == {"ndcg@10", "recall@10"} and all(c["passed"] for c in drops.values())
    assert drops["ndcg@10"]["baseline"] == pytest.approx(metrics["ndcg@10"])

    manifest, live = _manifest(store_path, second["collection"])
    assert live == second["collection"]
    assert manifest.gate.passed and manifest.evaluation.metrics == second["evaluation"]["metrics"]
    assert manifest.evaluation.golden_sha256 == gate["baseline"]["golden_sha256"]  # same set, same run
    assert manifest.promotions[-1].reason.startswith("gate passed")

    evaluation = Artifact.get("eval-test")
    assert evaluation is not None and evaluation.type == "table"
    rows = json.loads(evaluation.data)
    assert [r["query_id"] for r in rows][-1] == "MEAN" and len(rows) == 10
    assert Artifact.get("gate-test") is not None

    # `ragops eval` on the older build: scored, and the live build scored beside it for the gate's rules.
    result = runner.invoke(app, ["eval", "--config", str(config), "--version", first["version"], "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["live"] is False and report["version"] == first["version"]
    assert report["evaluation"]["metrics"]["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    assert len(report["per_query"]) == 9 and report["gate"]["live"] == second["collection"]
    row = report["per_query"][0]
    assert set(row) == {"query_id", "query", "relevant", "retrieved", "metrics"}
    assert row["metrics"]["ndcg@10"] is not None and "id_context_recall" in row["metrics"]

    status = json.loads(runner.invoke(app, ["status", "--config", str(config), "--json"]).stdout)
    assert [v["manifest"]["evaluation"]["metrics"]["ndcg@10"] for v in status["versions"]] == [
        pytest.approx(second["evaluation"]["metrics"]["ndcg@10"]), pytest.approx(metrics["ndcg@10"])]
    text = runner.invoke(app, ["status", "--config", str(config)]).stdout
    assert "NDCG@10" in text and "pass" in text


def test_a_candidate_embedded_with_another_model_than_its_queries_is_rejected_then_forced(
    tmp_path: Path, settings, store_path: Path, cls_model: Path
) -> None:
    live = reindex(config=str(_config(tmp_path, settings)))
    # Documents embedded with CLS pooling; applications embed queries with the packaged (mean) model.
    swapped = _config(tmp_path, settings, "swapped.yaml", embedding={"model": str(cls_model)},
                      evaluation={"golden": str(ROOT / "demo" / "golden.yaml"), "query_model": "all-MiniLM-L6-v2"})

    with pytest.raises(GateFailed) as error:
        reindex(config=str(swapped))

    message = str(error.value)
    assert "gate failed" in message and "ndcg@10" in message
    assert "dropped" in message and "against live" in message  # which metric missed, by how much
    summary = error.value.details["summary"]
    assert summary["state"] == "rejected" and summary["promoted"] is False
    candidate, alias = _manifest(store_path, summary["collection"])
    assert alias == live["collection"]  # the alias did not move
    assert candidate.state == "rejected" and candidate.error.startswith("gate failed")
    assert candidate.gate.passed is False and candidate.evaluation.queries == 9
    assert candidate.evaluation.metrics["ndcg@10"] < live["evaluation"]["metrics"]["ndcg@10"] - 0.02

    with open_store(StoreSettings(location=str(store_path))) as store:
        with pytest.raises(PromotionRefused, match="was rejected: gate failed.*--force --reason"):
            promote_version(store, "test", candidate.version)
    forced = runner.invoke(app, ["promote", candidate.version, "--force", "--reason", "accepted: new model rollout",
                                 "--config", str(swapped), "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["forced"] is True
    after, alias = _manifest(store_path, summary["collection"])
    assert alias == summary["collection"]
    event = after.promotions[-1]
    assert (event.by, event.forced, event.reason, event.replaced) == (
        "promote", True, "accepted: new model rollout", live["collection"])
    missing_reason = runner.invoke(app, ["promote", live["version"], "--force", "--config", str(swapped)])
    assert missing_reason.exit_code == 2 and "--force needs --reason" in missing_reason.output


def test_a_golden_set_naming_documents_the_build_lacks_rejects_with_the_names(tmp_path: Path, settings,
                                                                              store_path: Path) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"query": "descaling", "relevant": ["demo/espresso-machine.html"]}) + "\n"
                      + json.dumps({"id": "old", "query": "x", "relevant": ["demo/removed-page.md"]}) + "\n")
    config = _config(tmp_path, settings, evaluation={"golden": str(golden)})

    with pytest.raises(GateFailed, match=r"demo/removed-page.md \(query old: not in the index\)"):
        reindex(config=str(config))
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.alias_target("test") is None


def _resume_when_paused(run_name: str, answer: dict, outcome: dict, store_path: Path,
                        wait: float = 240) -> threading.Thread:
    """Answer the approval form of the run named ``run_name`` once it is paused (as a person would); the text
    above the form goes to ``outcome["form"]``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.flow_runs import resume_flow_run
    from prefect.input import read_flow_run_input

    def answer_it() -> None:
        deadline = time.monotonic() + wait
        try:
            with get_client(sync_client=True) as client:
                while time.monotonic() < deadline:
                    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
                    state = runs[0].state if runs else None
                    keys = state.state_details.run_input_keyset if state and state.is_paused() else None
                    # The schema lands just after the Paused state; resuming before it fails.
                    if keys and read_flow_run_input(keys["schema"], flow_run_id=runs[0].id) is not None:
                        outcome["paused"] = True
                        outcome["form"] = read_flow_run_input(keys["description"], flow_run_id=runs[0].id)
                        with open_store(StoreSettings(location=str(store_path))) as store:  # not locked
                            outcome["live_while_paused"] = store.alias_target("test")
                        resume_flow_run(runs[0].id, run_input=answer)
                        return
                    time.sleep(0.3)
        except BaseException as exc:  # surfaced by the test
            outcome["error"] = exc

    thread = threading.Thread(target=answer_it, daemon=True)
    thread.start()
    return thread


def test_approval_pauses_the_run_and_resumes_on_input(tmp_path: Path, settings, store_path: Path) -> None:
    config = _config(tmp_path, settings, gate={"require_approval": True, "approval_timeout": "4m"})
    name, outcome = f"reindex-approve-{uuid.uuid4().hex[:8]}", {}
    answer = {"approve": True, "reason": "looks good to me", "by": "dana@example.com"}
    thread = _resume_when_paused(name, answer, outcome, store_path)

    summary = reindex.with_options(flow_run_name=name)(config=str(config))

    thread.join(10)
    assert outcome.get("paused") and "error" not in outcome, outcome
    assert outcome["live_while_paused"] is None  # the embedded store was free while the run waited
    assert summary["promoted"] is True
    manifest, alias = _manifest(store_path, summary["collection"])
    assert alias == summary["collection"]
    assert manifest.promotions[-1].reason.endswith("; approved: looks good to me")
    assert manifest.gate.checks[-1].kind == "approval" and manifest.gate.checks[-1].passed
    with open_store(StoreSettings(location=str(store_path))) as store:
        (approval,) = [e for e in read_trail(store, "test") if e.kind == "approval"]
    assert (approval.by.approver, approval.why, approval.build) == (
        "dana@example.com", "approved: looks good to me", summary["collection"])


def test_an_approval_asked_from_the_manual_reindex_form_pauses_that_run_and_shows_the_gates_figures(
    tmp_path: Path, settings, store_path: Path
) -> None:
    """The person who started a reindex from the `reindex` deployment's form looks at that run: its Resume
    button must be there (a subflow's pause left it Running), and the form must show what the gate measured."""
    from flows.manual import ReindexRequest, manual_reindex

    config = _config(tmp_path, settings, gate={"require_approval": True, "approval_timeout": "90s"})
    name, outcome = f"manual-approve-{uuid.uuid4().hex[:8]}", {}
    answer = {"approve": True, "reason": "figures look right", "by": "erin@example.com"}
    thread = _resume_when_paused(name, answer, outcome, store_path, wait=120)

    summary = manual_reindex.with_options(flow_run_name=name)(request=ReindexRequest(config=str(config)),
                                                               reason="approval test")

    thread.join(10)
    assert outcome.get("paused") and "error" not in outcome, outcome
    assert summary["promoted"] is True and summary["reason"].endswith("; approved: figures look right")
    form, metrics = outcome["form"], summary["evaluation"]["metrics"]
    assert f"Promote build {summary['version']} of alias 'test'?" in form
    assert f"| floor | ndcg@10 | {metrics['ndcg@10']:.4f} |  | 0.7000 | yes |" in form  # the gate's checks
    assert f"| recall@10 | {metrics['recall@10']:.4f} |  |" in form  # the candidate's metrics (no live build yet)


def test_approval_that_never_comes_rejects_the_candidate(tmp_path: Path, settings, store_path: Path) -> None:
    config = _config(tmp_path, settings, gate={"require_approval": True, "approval_timeout": "3s"})

    with pytest.raises(GateFailed, match="approval timed out after 3s") as error:
        reindex(config=str(config))

    summary = error.value.details["summary"]
    manifest, alias = _manifest(store_path, summary["collection"])
    assert alias is None and manifest.state == "rejected"
    assert manifest.gate.passed is False and manifest.error.startswith("gate failed: approval timed out")
    assert [c.passed for c in manifest.gate.checks if c.kind != "approval"] == [True, True, True]  # metrics passed


def test_llm_judged_metrics_are_reported_as_advisory_and_never_gate(tmp_path: Path, settings) -> None:
    from testkit.stub_llm import StubLLM

    stub = StubLLM()
    try:
        llm = {"base_url": stub.base_url, "model": "stub-judge-7b", "api_key": "sk-test", "max_queries": 3}
        config = _config(tmp_path, settings, evaluation={"golden": str(ROOT / "demo" / "golden.yaml"), "llm": llm})
        summary = reindex(config=str(config))
    finally:
        stub.close()

    assert summary["promoted"] is True
    advisory = summary["evaluation"]["advisory"]
    assert set(advisory) == {"faithfulness", "answer_relevancy", "llm_context_precision"}
    assert advisory["faithfulness"] == pytest.approx(0.5)  # the stub supports 1 of 2 statements everywhere
    assert not set(advisory) & set(summary["evaluation"]["metrics"])
    assert all(c["metric"] not in advisory for c in summary["gate"]["checks"])
    answered = [r for r in stub.requests if "response_format" not in r["body"]]
    assert len(answered) == 3  # max_queries golden queries were answered and judged


def test_a_rejected_build_is_gated_again_not_rebuilt_and_promoted_once_its_golden_set_is_fixed(
    tmp_path: Path, settings, corpus: Path, store_path: Path
) -> None:
    good = _config(tmp_path, settings)
    first = reindex(config=str(good))
    wrong = tmp_path / "wrong.jsonl"  # a golden set with a mistake: descaling is not about bicycle chains
    wrong.write_text(json.dumps({"query": "how often should I descale the coffee machine?",
                                 "relevant": ["demo/bicycle-chain.md"]}) + "\n")
    bad = _config(tmp_path, settings, "bad.yaml", evaluation={"golden": str(wrong)})
    (corpus / "glossary.txt").write_text((corpus / "glossary.txt").read_text() + "\nVersion: a build.\n")

    with pytest.raises(GateFailed) as rejected:
        reindex(config=str(bad))
    candidate = rejected.value.details["summary"]["collection"]
    with open_store(StoreSettings(location=str(store_path))) as store:
        builds = store.list_builds("test")

    with pytest.raises(GateFailed) as again:  # nothing changed at the sources: no identical build again
        reindex(config=str(bad))
    summary = again.value.details["summary"]
    assert summary["collection"] == candidate and summary["counts"]["chunks_embedded"] == 0
    assert any("gated again instead of being built again" in note for note in summary["notes"])
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.list_builds("test") == builds

    # The golden set is fixed: `ragops promote` gates the rejected build again, and it passes now.
    promoted = runner.invoke(app, ["promote", version_of(candidate), "--config", str(good), "--json"])
    assert promoted.exit_code == 0, promoted.output
    response = json.loads(promoted.stdout)
    assert response["forced"] is False and response["gated_now"] is True and response["state"] == "complete"
    manifest, alias = _manifest(store_path, candidate)
    assert alias == candidate and manifest.gate.passed and manifest.error is None
    assert manifest.promotions[-1].replaced == first["collection"]
