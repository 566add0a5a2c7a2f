"""infra/ files that cannot run here (no container engine, no cluster) are still checked: Kubernetes
manifests against the Kubernetes API schemas, compose files for dangling references, and both for
names and ports that agree with each other, with prefect.yaml and with ragops' own configuration."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from rag.config import Settings
from testkit.paths import ROOT

INFRA = ROOT / "infra"
KUBERNETES = sorted((INFRA / "kubernetes").glob("*.yaml"))
PORTS = {"prefect-server": 4200, "qdrant": 6333, "minio": 9000, "postgres": 5432, "ragops-serve": 8000}


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
        container_ports = [p for w in matches for c in w["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])]
        # A targetPort is a number (containerPort) or a name (a container port's name).
        listening = {p["containerPort"] for p in container_ports} | {p["name"] for p in container_ports if "name" in p}
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
    assert _host_port(services["serve"]["environment"]["RAGOPS_STORE__LOCATION"]) == ("qdrant", 6333)
    database = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert _host_port(database) == ("postgres", 5432)
    assert (INFRA / "compose" / services["worker"]["build"]["context"] / services["worker"]["build"]["dockerfile"]).is_file()
    assert services["serve"]["image"] == services["worker"]["image"]  # one image, built from one Dockerfile
    assert services["serve"]["build"] == services["worker"]["build"]


def _option(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, (flag, command)
    return command[command.index(flag) + 1]


def test_the_query_service_listens_where_it_is_published_probed_on_real_routes_with_a_secret_key() -> None:
    """`ragops serve` in compose and Kubernetes: bound to 0.0.0.0 on the port published (compose) or
    served (the Service); readiness on /v1/readyz, liveness on /v1/healthz, both routes of the app as
    built here; the API key from the environment or a Secret, never written in the file."""
    from rag.serving.app import create_app

    routes = {route.path for route in create_app(Settings()).routes}  # starts nothing until served
    assert {"/v1/readyz", "/v1/healthz", "/metrics"} <= routes

    def serves(command: list[str]) -> int:
        assert command[:2] == ["ragops", "serve"], command
        assert _option(command, "--host") == "0.0.0.0"
        return int(_option(command, "--port"))

    # compose: the published port, a readiness healthcheck, the key interpolated from the shell.
    serve = _compose()["services"]["serve"]
    port = serves(serve["command"])
    assert [f"{port}:{port}"] == serve["ports"]
    assert "qdrant" in serve["depends_on"] and "prefect-server" not in serve["depends_on"]
    healthcheck = " ".join(serve["healthcheck"]["test"])
    assert f"urlopen('http://localhost:{port}/v1/readyz')" in healthcheck
    key = serve["environment"]["RAGOPS_SERVE__API_KEY"]
    assert key.startswith("${RAGOPS_SERVE_API_KEY:?") and key.endswith("}"), key  # required, no default
    assert "PREFECT_API_URL" not in serve["environment"]

    # Kubernetes: the Service's port reaches the container's, the probes hit the app's routes.
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _documents(INFRA / "kubernetes" / "ragops-serve.yaml")}
    deployment, service = docs[("Deployment", "ragops-serve")], docs[("Service", "ragops-serve")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"] == {"app": "ragops-serve"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    workers = {(d["kind"], d["metadata"]["name"]): d for path in KUBERNETES for d in _documents(path)}
    worker = workers[("Deployment", "prefect-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == worker["image"]
    port = serves(container["command"])
    (http,) = container["ports"]
    assert http == {"name": "http", "containerPort": port}
    (published,) = service["spec"]["ports"]
    assert published["port"] == port and published["targetPort"] in (port, "http")
    for probe, path in (("readinessProbe", "/v1/readyz"), ("livenessProbe", "/v1/healthz")):
        check = container[probe]["httpGet"]
        assert check["path"] == path and check["path"] in routes, (probe, check)
        assert check["port"] in (port, "http"), (probe, check)
    liveness = container["livenessProbe"]
    # not restarted while the model loads (10-20 s): first check after 30 s, then 3 misses 10 s apart
    assert liveness["initialDelaySeconds"] + liveness["periodSeconds"] * liveness["failureThreshold"] >= 45
    env = {e["name"]: e for e in container["env"]}
    assert env["RAGOPS_SERVE__API_KEY"] == {"name": "RAGOPS_SERVE__API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "ragops-serve", "key": "api-key"}}}
    config = workers[("ConfigMap", "ragops-config")]["data"]
    assert env["RAGOPS_STORE__LOCATION"]["value"] == config["RAGOPS_STORE__LOCATION"]
    assert env["RAGOPS_CONFIG"]["value"] == config["RAGOPS_CONFIG"]
    assert container["resources"]["requests"]
    assert not [d for d in docs.values() if d["kind"] == "Secret"]  # the key's Secret is created, not applied

    # No key written anywhere: no literal for the variable, nothing shaped like `ragops serve --new-key`'s keys.
    import re

    for path in (INFRA / "compose" / "compose.yaml", INFRA / "kubernetes" / "ragops-serve.yaml"):
        text = path.read_text()
        assert not re.search(r"rk_[A-Za-z0-9_-]{20,}", text), path
        assert not re.search(r"RAGOPS_SERVE__API_KEY\s*[:=]\s*[^$\s]", text), path


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
