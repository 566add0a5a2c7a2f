"""A store made by the previous release (qdrant-client's local mode) is carried over to Qdrant Edge by
`ragops migrate` with nothing lost; opened any other way it is refused with a line naming the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.config import StoreSettings
from rag.store import open_store
from rag.store.names import ledger_table
from ragops.cli import app
from testkit.helpers import assert_same_index, points_of

pytestmark = pytest.mark.slow
runner = CliRunner()
OLD = {"RAGOPS_STORE__ENGINE": "qdrant"}  # what the previous release wrote


def _run(*args: str, env: dict | None = None) -> dict:
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _everything(location: Path, engine: str) -> dict:
    with open_store(StoreSettings(location=str(location), engine=engine)) as store:
        builds = store.list_builds("test")
        return {
            "live": store.alias_target("test"),
            "builds": builds,
            "manifests": [store.read_manifest(b).model_dump(mode="json") for b in builds],
            "records": [store.read_records(b) for b in builds],
            "ledger": sorted((p.payload["name"], p.payload["synced_through"]) for p in store.scan_rows(ledger_table("test"))),
            "cache": sorted(p.payload["text_hash"] for t in store.tables("_ragops_cache__") for p in store.scan_rows(t)),
        }


def test_migrate_carries_every_build_alias_and_table_and_is_safe_to_rerun(write_config: Path, settings) -> None:
    location = Path(settings.store.location)
    first = _run("reindex", "--config", str(write_config), env=OLD)
    second = _run("reindex", "--config", str(write_config), "--full", env=OLD)
    before = _everything(location, "qdrant")
    points = {b: points_of_engine(location, b, "qdrant") for b in before["builds"]}

    refused = runner.invoke(app, ["status", "--config", str(write_config)])
    assert refused.exit_code == 2 and f"run `ragops migrate --store {location}`" in refused.stderr

    report = _run("migrate", "--config", str(write_config))
    assert report["builds"] == {first["collection"]: first["counts"]["chunks"],
                                second["collection"]: second["counts"]["chunks"]}
    assert report["aliases"] == {"test": second["collection"]} and not report["skipped"]
    assert Path(report["backup"]).is_dir()

    after = _everything(location, "edge")
    assert after == before
    for build, expected in points.items():
        assert_same_index(points_of(location, build), expected)
    status = _run("status", "--config", str(write_config))
    assert status["live"] == second["collection"] and all(v["status"] == "green" for v in status["versions"])
    assert _run("migrate", "--config", str(write_config))["already_done"]
    third = _run("reindex", "--config", str(write_config))  # nothing changed since: the migrated build is the base
    assert third["counts"]["documents_unchanged"] == second["counts"]["documents_seen"]


def points_of_engine(location: Path, collection: str, engine: str) -> dict:
    with open_store(StoreSettings(location=str(location), engine=engine)) as store:
        return {p.id: (p.payload, p.vector) for p in store.scan_rows(collection, vectors=True)}
