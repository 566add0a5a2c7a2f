"""What killed runs leave behind, cleaned up or refused by the next real run and the real CLI.

A run killed mid-build leaves a ``building`` husk; one killed after its build completed but before its
gate leaves a complete build with no verdict. Both are made here with the build's own steps (what the
killed run had done by then), then a real reindex flow or a real ``ragops promote`` process meets them.
Store-level kills (half-done deletions and promotions) are in tests/index/test_versions.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.reindex import reindex
from rag.index import build
from rag.index.progress import BuildProgress
from rag.ingest.chunking import Chunker
from rag.models import Counts, Manifest
from rag.store import IndexStore, open_store
from rag.store.names import docs_collection, version_of
from testkit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _config(tmp_path: Path, settings, name: str = "ragops.yaml", **evaluation) -> Path:
    """The test settings with the demo golden set and a gate (plus evaluation overrides), as a file."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["evaluation"] = {"golden": str(ROOT / "demo" / "golden.yaml"), **evaluation}
    data["gate"] = {"floors": {"ndcg@10": 0.7}, "max_drop": {"ndcg@10": 0.02, "recall@10": 0.02}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _begin(store: IndexStore, settings, embedder, base: str | None) -> Manifest:
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    return build.begin_build(store, settings.alias, settings.sources, embedder.fingerprint, chunker.describe(), base)


def _ungated_copy(settings, embedder, share: float = 1.0) -> Manifest:
    """A complete build whose run was killed before its gate: the live build's documents (``share``
    of them), carried into a new build and finished, with no verdict recorded."""
    with open_store(settings.store) as store:
        live = store.alias_target(settings.alias)
        manifest = _begin(store, settings, embedder, base=live)
        records = sorted(store.read_records(live).values(), key=lambda r: r.doc_id)
        records = records[: max(1, int(len(records) * share))]
        progress = BuildProgress(counts=Counts(documents_seen=len(records)))
        progress.add(build.carry_documents(store, live, manifest.collection, records))
        return build.finish_build(store, manifest, progress)


def _promote(tmp_path: Path, config: Path, version: str, *extra: str) -> tuple[int, dict, str]:
    """``ragops promote`` as an operator runs it: its own process. Returns (exit code, JSON, stderr)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-cli"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    done = subprocess.run([sys.executable, "-m", "ragops", "promote", version, "--config", str(config), "--json",
                           *extra], env=env, capture_output=True, text=True, timeout=900)
    return done.returncode, json.loads(done.stdout), done.stderr


def _read(settings, collection: str) -> tuple[Manifest, str | None]:
    with open_store(settings.store) as store:
        return store.read_manifest(collection), store.alias_target(settings.alias)


def test_husks_of_killed_and_failed_runs_are_cleaned_by_the_next_run(tmp_path: Path, settings, corpus: Path,
                                                                      embedder) -> None:
    first = reindex(config=str(_config(tmp_path, settings)))
    with open_store(settings.store) as store:
        killed = _begin(store, settings, embedder, base=first["collection"])  # kill -9 mid-build: "building"
        stopped = _begin(store, settings, embedder, base=first["collection"])
        build.fail_build(store, stopped, "StoreError: the server went away")  # a run that stopped: "failed"

    (corpus / "glossary.txt").write_text((corpus / "glossary.txt").read_text() + "\nHusk: what a killed run leaves.\n")
    second = reindex(config=str(_config(tmp_path, settings)))

    # retention 3: the new build, the live one it replaced, and no slot for either husk.
    assert second["promoted"] and second["deleted"] == [killed.collection, stopped.collection]
    with open_store(settings.store) as store:
        assert store.list_builds(settings.alias) == [first["collection"], second["collection"]]
        assert not store.exists(docs_collection(killed.collection))
        assert store.orphan_tables(settings.alias) == []


def test_promote_gates_a_build_that_never_was_and_refuses_when_it_cannot(tmp_path: Path, settings,
                                                                          embedder) -> None:
    config = _config(tmp_path, settings)
    unloadable = _config(tmp_path, settings, "no-model.yaml", query_model=str(tmp_path / "no-such-model"))
    live = reindex(config=str(config))["collection"]

    # Half the live documents: gated now, it fails (documents lost), and the verdict stays with it.
    short = _ungated_copy(settings, embedder, share=0.5)
    code, result, _ = _promote(tmp_path, config, short.version)
    assert (code, result["error"]["kind"]) == (3, "gate_failed"), result
    assert "was never gated; gated now against" in result["error"]["message"]
    manifest, alias = _read(settings, short.collection)
    assert alias == live and manifest.state == "rejected" and manifest.gate.passed is False

    # A whole copy, but the query model cannot be loaded: no verdict possible, so no promotion.
    whole = _ungated_copy(settings, embedder)
    code, result, _ = _promote(tmp_path, unloadable, whole.version)
    assert (code, result["error"]["kind"]) == (3, "promotion_refused"), result
    assert "cannot be gated now" in result["error"]["message"] and "--force --reason" in result["error"]["message"]
    manifest, alias = _read(settings, whole.collection)
    assert alias == live and manifest.gate is None and manifest.promotions == []

    # With the alias's own configuration: scored beside the live build, verdict recorded, promoted.
    code, result, stderr = _promote(tmp_path, config, whole.version)
    assert code == 0, stderr[-3000:]
    assert result["gated_now"] is True and result["gate"]["passed"] and result["gate"]["live"] == live
    manifest, alias = _read(settings, whole.collection)
    assert alias == whole.collection and manifest.state == "complete"
    assert manifest.gate.passed and {c.kind for c in manifest.gate.checks} == {"sanity", "floor", "max_drop"}
    assert manifest.evaluation.queries == 9 and version_of(manifest.gate.live) == manifest.gate.baseline.version
    assert manifest.promotions[-1].reason.startswith("manual promotion: gate passed")

    # Ungated and ungateable, but forced: promoted as an override, with no verdict invented.
    forced = _ungated_copy(settings, embedder)
    code, result, stderr = _promote(tmp_path, unloadable, forced.version, "--force", "--reason", "model moved")
    assert code == 0, stderr[-3000:]
    assert (result["forced"], result["gated_now"], result["gate"]) == (True, False, None)
    manifest, alias = _read(settings, forced.collection)
    assert alias == forced.collection and manifest.gate is None
    assert (manifest.promotions[-1].forced, manifest.promotions[-1].reason) == (True, "model moved")
