"""Damage in the embedded store: a truncated, overwritten or emptied shard, a document table or manifest
that is no longer JSON, an alias pointing at nothing. Each is named with its build, takes down no other
build, and the next reindex recovers, rebuilding a damaged live build from the embedding cache."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flows.reindex import reindex
from rag.config import StoreSettings
from rag.errors import VersionError
from rag.index.versions import rollback
from rag.serving import Retriever
from rag.store import open_store
from rag.store.names import docs_collection
from testkit.helpers import assert_same_index, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

ALIAS = "kb"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    """A corpus and a store holding two builds of it: (corpus, store, old build, live build)."""
    root = tmp_path_factory.mktemp("damage")
    corpus, store = root / "corpus", root / "store"
    corpus.mkdir()
    for name in ("pumps", "valves", "seals"):
        (corpus / f"{name}.md").write_text(f"# {name.title()}\n\nHow to service the {name} of a cooling loop, "
                                           f"step by step.\n\nCheck the {name} every month.\n")
    old = reindex(sources=[str(corpus)], store=str(store), alias=ALIAS)["collection"]
    (corpus / "seals.md").write_text("# Seals\n\nReplace worn seals before they leak.\n")
    live = reindex(sources=[str(corpus)], store=str(store), alias=ALIAS)["collection"]
    return corpus, store, old, live


@pytest.fixture
def damaged(two_builds, tmp_path: Path) -> tuple[Path, Path, str, str]:
    """A private copy of ``two_builds`` that a test may damage."""
    corpus, store, old, live = two_builds
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("readers"))
    return corpus, copy, old, live


def _largest_file(store: Path, collection: str) -> Path:
    return max((p for p in (store / "builds" / collection).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _sql(store: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(store / "catalog.sqlite") as db:
        db.execute(statement, args)


def _damage(kind: str, store: Path, collection: str) -> None:
    if kind == "truncated shard":
        path = _largest_file(store, collection)
        os.truncate(path, path.stat().st_size // 2)
    elif kind == "emptied shard":
        for segment in (store / "builds" / collection / "segments").iterdir():
            shutil.rmtree(segment)
    elif kind == "overwritten shard":  # same size, other bytes: only the contents' hashes tell
        path = _largest_file(store, collection)
        path.write_bytes(os.urandom(path.stat().st_size))
    elif kind == "manifest":
        _sql(store, "UPDATE builds SET manifest = '{\"version\": 3, trunc' WHERE collection = ?", collection)
    elif kind == "document table":
        _sql(store, "UPDATE rows SET payload = 'garbage' WHERE tbl = ?", docs_collection(collection))
    else:
        raise AssertionError(kind)


def _status(store: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "ragops", "status", "--json", "--store", str(store), "--alias", ALIAS],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return {v["collection"]: v["damage"] for v in json.loads(done.stdout)["versions"]}


@pytest.mark.parametrize("kind", ["truncated shard", "emptied shard", "manifest", "document table"])
def test_a_damaged_old_build_is_named_and_the_live_one_still_serves(damaged, kind: str) -> None:
    corpus, store, old, live = damaged
    _damage(kind, store, old)

    shown = _status(store)
    # status reads the live build's document table only (it lists its quarantined documents)
    assert shown[live] is None and (shown[old] or kind == "document table"), shown
    with Retriever(alias=ALIAS, store=str(store)) as retriever:
        assert retriever.search("when are seals replaced?", k=1)[0].doc_id == "corpus/seals.md"
    summary = reindex(sources=[str(corpus)], store=str(store), alias=ALIAS)
    assert summary["collection"] == live and not summary["promoted"]  # nothing changed: no build made


@pytest.mark.parametrize("kind", ["truncated shard", "emptied shard", "overwritten shard", "document table"])
def test_a_damaged_live_build_is_not_trusted_and_a_reindex_rebuilds_it_from_the_cache(damaged, kind: str) -> None:
    corpus, store, old, live = damaged
    before = snapshot(store, ALIAS)
    _damage(kind, store, live)

    if kind != "overwritten shard":  # status checks sizes and counts; contents are hashed by reindex
        assert _status(store)[live], f"status missed the {kind}"
    summary = reindex(sources=[str(corpus)], store=str(store), alias=ALIAS)

    assert summary["promoted"] and summary["collection"] not in (live, old)
    assert summary["counts"]["chunks_embedded"] == 0  # every vector came from the embedding cache
    assert_same_index(snapshot(store, ALIAS), before)
    assert _status(store)[summary["collection"]] is None
    with open_store(StoreSettings(location=str(store))) as opened:  # the damaged build is no way back
        with pytest.raises(VersionError, match=f"cannot roll back to {live.split('__')[1]}: it is damaged"):
            rollback(opened, ALIAS)


def test_an_alias_pointing_at_no_build_is_named_and_a_reindex_repoints_it(damaged) -> None:
    corpus, store, old, live = damaged
    before = snapshot(store, ALIAS)
    _sql(store, "UPDATE aliases SET target = 'kb__gone' WHERE name = ?", ALIAS)

    done = subprocess.run([sys.executable, "-m", "ragops", "query", "--store", str(store), "--alias", ALIAS, "seals"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "kb__gone" in done.stderr, done.stderr[-2000:]
    summary = reindex(sources=[str(corpus)], store=str(store), alias=ALIAS)
    assert summary["promoted"] and summary["counts"]["chunks_embedded"] == 0
    assert_same_index(snapshot(store, ALIAS), before)
    with open_store(StoreSettings(location=str(store))) as opened:
        assert opened.alias_target(ALIAS) == summary["collection"]


def test_a_rollback_onto_a_build_whose_document_table_is_damaged_is_refused_naming_it(damaged) -> None:
    corpus, store, old, live = damaged
    _damage("document table", store, old)
    rolled = subprocess.run([sys.executable, "-m", "ragops", "rollback", "--store", str(store), "--alias", ALIAS],
                            capture_output=True, text=True, timeout=120)
    assert rolled.returncode == 2 and "Traceback" not in rolled.stderr, rolled.stderr[-2000:]
    assert f"cannot roll back to {old.split('__')[1]}: it is damaged (row " in rolled.stderr
    assert "is damaged (not JSON" in rolled.stderr
    with open_store(StoreSettings(location=str(store))) as opened:
        assert opened.alias_target(ALIAS) == live
