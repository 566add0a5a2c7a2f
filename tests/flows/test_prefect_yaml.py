"""prefect.yaml stays in step with the flows it names (tests/scenarios/test_deployments.py registers it on a server)."""

from __future__ import annotations

import importlib
import inspect

import yaml

from testkit.paths import ROOT

SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def _flow(entrypoint: str):
    path, function = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)


def test_every_operation_is_a_deployment_with_valid_parameters() -> None:
    assert set(DEPLOYMENTS) == {"refresh", "full-rebuild", "drift-check", "freshness-check", "reindex"}
    for name, deployment in DEPLOYMENTS.items():
        flow = _flow(deployment["entrypoint"])
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted, name
        for trigger in deployment.get("triggers", []):
            assert set(trigger["parameters"]) <= accepted, name
        assert deployment["work_pool"]["name"] == "ragops-process"
        assert deployment["work_pool"]["job_variables"]["env"]["HF_HUB_OFFLINE"] == "1"
    scheduled = {name for name, d in DEPLOYMENTS.items() if d.get("schedules")}
    assert scheduled == {"refresh", "full-rebuild", "drift-check", "freshness-check"}
    assert DEPLOYMENTS["full-rebuild"]["parameters"]["full_rebuild"] is True
    assert DEPLOYMENTS["refresh"]["parameters"]["full_rebuild"] is False


def test_the_drift_event_starts_the_full_rebuild() -> None:
    from flows.drift import DRIFT_EVENT

    (trigger,) = DEPLOYMENTS["full-rebuild"]["triggers"]
    assert trigger["expect"] == [DRIFT_EVENT] and trigger["enabled"] is True
    assert trigger["match"]["prefect.resource.id"] == "ragops.alias.*"
    assert trigger["parameters"]["alias"] == "{{ event.payload.alias }}"


def test_the_manual_reindex_takes_a_typed_request() -> None:
    from flows.manual import ReindexRequest

    flow = _flow(DEPLOYMENTS["reindex"]["entrypoint"])
    assert flow.name == "manual-reindex"
    assert inspect.signature(flow.fn).parameters["request"].annotation in (ReindexRequest, "ReindexRequest")
    ReindexRequest.model_validate(DEPLOYMENTS["reindex"]["parameters"]["request"])
