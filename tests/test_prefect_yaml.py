"""prefect.yaml stays in step with the flows it names (a real registration test comes with the server)."""

from __future__ import annotations

import importlib
import inspect

import yaml

from tests.conftest import ROOT


def test_reindex_deployment_points_at_the_flow_with_valid_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    reindex = deployments["reindex"]

    path, function = reindex["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    assert flow.name == "reindex"
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(reindex["parameters"]) <= accepted
    assert {"config", "full_rebuild"} <= set(reindex["parameters"])
    assert reindex["work_pool"]["name"] == "ragops-process"
    assert reindex["work_pool"]["job_variables"]["env"]["HF_HUB_OFFLINE"] == "1"
