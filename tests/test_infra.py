"""infra/ files that cannot run here (no container engine, no cluster) are still checked: Kubernetes
manifests against the Kubernetes API schemas, compose files for dangling references, and both for
names and ports that agree with each other, with prefect.yaml and with ragops' own configuration."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from rag.config import Settings
from tests.conftest import ROOT

INFRA = ROOT / "infra"
KUBERNETES = sorted((INFRA / "kubernetes").glob("*.yaml"))
PORTS = {"prefect-server": 4200, "qdrant": 6333, "minio": 9000, "postgres": 5432}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _compose() -> dict:
    """compose.yaml with the cluster overlay merged in, as `docker compose -f a -f b` merges services."""
    base = yaml.safe_load((INFRA / "compose" / "compose.yaml").read_text())
    overlay = yaml.safe_load((INFRA / "compose" / "compose.qdrant-cluster.yaml").read_text())
    for name, service in overlay["services"].items():
        base["services"][name] = {**base["services"].get(name, {}), **service}
    base["volumes"].update(overlay.get("volumes") or {})
    return base


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "", parsed.port or 0


def test_kubernetes_manifests_are_valid_against_the_api_schemas() -> None:
    import kubernetes_validate

    assert KUBERNETES
    for path in KUBERNETES:
        for doc in _documents(path):
            kubernetes_validate.validate(doc, "1.32", strict=True)  # raises on an unknown or missing field
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "three", "selector": {}, "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does catch mistakes
        kubernetes_validate.validate(broken, "1.32", strict=True)


def test_kubernetes_services_select_pods_that_listen_on_their_ports() -> None:
    docs = [doc for path in KUBERNETES for doc in _documents(path)]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matches = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert matches, f"service {service['metadata']['name']} selects no workload"
        listening = {p["containerPort"] for w in matches for c in w["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in listening, (service["metadata"]["name"], port)
        name = service["metadata"]["name"]
        if name in PORTS:
            assert PORTS[name] in {p["port"] for p in service["spec"]["ports"]}
    for workload in (w for w in workloads if w["kind"] == "StatefulSet"):
        assert any(s["metadata"]["name"] == workload["spec"]["serviceName"] for s in docs if s["kind"] == "Service")
    assert all(d["metadata"].get("namespace", "ragops") == "ragops" for d in docs)


def test_kubernetes_worker_points_at_the_services_and_a_pool_prefect_yaml_defines() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for path in KUBERNETES for d in _documents(path)}
    env = docs[("ConfigMap", "ragops-config")]["data"]
    assert _host_port(env["PREFECT_API_URL"]) == ("prefect-server", 4200)
    assert _host_port(env["RAGOPS_STORE__LOCATION"]) == ("qdrant", 6333)
    assert _host_port(env["AWS_ENDPOINT_URL_S3"]) == ("minio", 9000)
    command = docs[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]["containers"][0]["command"]
    pool = command[command.index("--pool") + 1]
    pools = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]
    assert pool in {p["name"] for p in pools.values()}
    qdrant = docs[("StatefulSet", "qdrant")]
    assert qdrant["spec"]["replicas"] == 3
    assert "6335" in docs[("ConfigMap", "qdrant")]["data"]["start.sh"]


def test_compose_services_reference_only_what_exists_and_agree_on_ports() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], (name, source)
            else:
                assert (INFRA / "compose" / source).resolve().exists(), (name, source)
    published = [port.split(":")[0] for service in services.values() for port in service.get("ports", [])]
    assert len(published) == len(set(published)), "two services publish the same host port"
    worker = services["worker"]["environment"]
    assert _host_port(worker["PREFECT_API_URL"]) == ("prefect-server", 4200)
    assert "4200:4200" in services["prefect-server"]["ports"]
    assert _host_port(worker["RAGOPS_STORE__LOCATION"]) == ("qdrant", 6333)
    assert "6333:6333" in services["qdrant"]["ports"]
    assert _host_port(worker["AWS_ENDPOINT_URL_S3"]) == ("minio", 9000)
    database = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert _host_port(database) == ("postgres", 5432)
    assert (INFRA / "compose" / services["worker"]["build"]["context"] / services["worker"]["build"]["dockerfile"]).is_file()


def test_the_compose_qdrant_cluster_has_three_nodes_joining_the_first() -> None:
    services = _compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("qdrant")}
    assert len(nodes) == 3
    assert all(s["environment"]["QDRANT__CLUSTER__ENABLED"] == "true" for s in nodes.values())
    for name, node in nodes.items():
        command = node["command"]
        assert _host_port(command[command.index("--uri") + 1]) == (name, 6335)
        if name != "qdrant":
            assert _host_port(command[command.index("--bootstrap") + 1]) == ("qdrant", 6335)


def test_the_infra_configuration_is_valid_and_names_the_services() -> None:
    settings = Settings.load(INFRA / "ragops.yaml", environ={})
    assert _host_port(settings.store.location) == ("qdrant", 6333)
    assert settings.store.replication_factor == 2
    assert _host_port(settings.sources[0].endpoint_url) == ("minio", 9000)
    from evals.golden import load_golden_set

    assert load_golden_set(INFRA / "golden.example.yaml").queries
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "-c constraints.txt" in dockerfile
