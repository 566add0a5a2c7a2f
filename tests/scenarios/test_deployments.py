"""The scheduled operation on a real Prefect server: prefect.yaml registered, a worker running the flows,
one run per alias at a time, and a drift event starting the rebuild deployment by itself."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from rag.config import StoreSettings
from rag.store import open_store
from rag.store.locks import AliasLock
from testkit.paths import ROOT

# Runs go through a server and a worker's subprocesses: on a loaded machine a test takes many minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real `prefect server` on 127.0.0.1 with every deployment of prefect.yaml registered."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.prefect_local import local_prefect

    with local_prefect(tmp_path_factory.mktemp("prefect")) as prefect:
        prefect.deploy()
        with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}):  # this process talks to it too
            yield prefect


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _wait(flow_run_id, timeout: float = 900):  # runs on a machine at load 20 took over 300 s
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.type.value in FINAL:
                return run
            time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} did not finish in {timeout}s")


def _runs_of(deployment_name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])))


def test_deployments_run_on_a_server_one_run_per_alias_and_drift_starts_a_rebuild(
    prefect_server, tmp_path: Path, settings, store_path: Path, cls_model: Path
) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) == {"refresh", "full-rebuild", "drift-check", "freshness-check", "reindex"}
        assert all(deployments[name].schedules for name in ("refresh", "full-rebuild", "drift-check", "freshness-check"))
        form = deployments["reindex"].parameter_openapi_schema
        assert set(form["definitions"]["ReindexRequest"]["properties"]) >= {"alias", "sources", "full_rebuild", "promote"}
    assert "full-rebuild" in prefect_server.cli("automation", "ls").stdout  # the drift trigger

    data = settings.model_dump(mode="json", exclude_none=True)
    config = _write(tmp_path / "ragops.yaml", {**data, "evaluation": {"golden": str(ROOT / "demo" / "golden.yaml")}})
    # The drift check is told that applications embed queries with another model: golden recall drops.
    drifted = _write(tmp_path / "drifted.yaml", {**data, "evaluation": {"golden": str(ROOT / "demo" / "golden.yaml"),
                                                                         "query_model": str(cls_model)}})

    with prefect_server.worker(RAGOPS_CONFIG=str(config)):
        manual = run_deployment("manual-reindex/reindex", timeout=0,
                                parameters={"request": {"alias": "test", "full_rebuild": False}, "reason": "test"})
        refresh = run_deployment("reindex/refresh", timeout=0)  # same alias, at the same time
        manual, refresh = _wait(manual.id), _wait(refresh.id)
        assert (manual.state.type.value, refresh.state.type.value) == ("COMPLETED", "COMPLETED"), (
            manual.state.message, refresh.state.message)

        with open_store(StoreSettings(location=str(store_path))) as store:
            builds = store.list_builds("test")
            live = store.alias_target("test")
        # Had they overlapped, the embedded store would have refused the second, or both would have
        # built from nothing; instead the later run found the first's build and had nothing to do.
        assert builds == [live]
        assert AliasLock(StoreSettings(location=str(store_path)), "test").current() is None  # both let go

        check = run_deployment("drift-check/drift-check", timeout=0, parameters={"config": str(drifted)})
        check = _wait(check.id)
        assert check.state.type.value == "COMPLETED", check.state.message
        deadline = time.monotonic() + 120
        while not _runs_of("full-rebuild") and time.monotonic() < deadline:
            time.sleep(1)
        (rebuild,) = _runs_of("full-rebuild")
        assert rebuild.parameters["alias"] == "test" and rebuild.parameters["config"] == str(drifted.resolve())
        rebuild = _wait(rebuild.id)
        assert rebuild.state.type.value == "COMPLETED", rebuild.state.message

    drift = Artifact.get("drift-test")
    assert drift is not None and "DRIFT" in (drift.description or "")
    for key in ("reindex-test", "gate-test", "eval-test", "freshness-test"):
        assert Artifact.get(key) is not None, key
    with open_store(StoreSettings(location=str(store_path))) as store:
        rebuilt = store.alias_target("test")
        manifest = store.read_manifest(rebuilt)
    assert rebuilt != live and manifest.base is None  # a full rebuild, promoted through the gate
    assert manifest.gate.passed


def _logs_of(flow_run_id, waiting_for: str, timeout: float = 60) -> list[str]:
    """Every log line the server holds for a flow run, once the line ``waiting_for`` has arrived (the
    worker's subprocess ships its logs in batches, after the run's final state may already be set)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            lines, offset = [], 0
            while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                           limit=200, offset=offset):
                lines += [log.message for log in page]
                offset += len(page)
            if any(waiting_for in line for line in lines) or time.monotonic() > deadline:
                return lines
            time.sleep(1)


def test_expected_refusals_end_deployment_runs_failed_with_one_line_and_no_traceback(
    prefect_server, tmp_path: Path, settings
) -> None:
    from prefect.deployments import run_deployment

    data = settings.model_dump(mode="json", exclude_none=True)
    one_doc = tmp_path / "one-doc"  # the smallest build a gate can refuse
    one_doc.mkdir()
    shutil.copy(ROOT / "demo" / "corpus" / "bicycle-chain.md", one_doc)
    golden = _write(tmp_path / "golden.yaml", {"queries": [{"query": "how do I oil a bicycle chain",
                                                            "relevant": ["demo/bicycle-chain.md"]}]})
    strict = _write(tmp_path / "strict.yaml", {**data, "alias": "refused",
                                               "sources": [{"path": str(one_doc), "name": "demo"}],
                                               "evaluation": {"golden": str(golden)},
                                               "gate": {"floors": {"precision@10": 1.0}}})  # 1 relevant of 10: 0.1
    stale = _write(tmp_path / "stale.yaml", {**data, "alias": "never-built",
                                             "sources": [{**data["sources"][0], "max_staleness": "1s"}]})

    with open_store(StoreSettings(location=data["store"]["location"])):
        pass  # the store exists; its alias "never-built" does not
    with prefect_server.worker():
        gate = run_deployment("reindex/refresh", timeout=0, parameters={"config": str(strict)})
        fresh = run_deployment("freshness-check/freshness-check", timeout=0, parameters={"config": str(stale)})
        runs = {"gate": (_wait(gate.id), "was not promoted: gate failed: precision@10"),
                "freshness": (_wait(fresh.id), "freshness limit breached: demo: never synced")}
        # Read inside the worker's lifetime: a flow run's process ships its last logs as it exits.
        logs = {what: _logs_of(run.id, waiting_for=reason) for what, (run, reason) in runs.items()}

    for what, (run, reason) in runs.items():
        assert run.state.type.value == "FAILED", (what, run.state.type, run.state.message)
        message = run.state.message or ""
        assert reason in message and "\n" not in message, (what, message)  # the UI's one line
        assert any(reason in line for line in logs[what]), (what, logs[what])
        assert not [line for line in logs[what] if "Traceback" in line], (what, logs[what])
