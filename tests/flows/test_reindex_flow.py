"""The reindex flow end to end: real Prefect flow, real model, real embedded Qdrant, real documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.reindex import reindex
from rag.config import StoreSettings
from rag.errors import PromotionRefused
from rag.serving import Retriever
from rag.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_reindex_builds_promotes_and_answers_through_the_alias(write_config: Path, store_path: Path) -> None:
    summary = reindex(config=str(write_config))

    assert summary["promoted"] is True, summary["reason"]
    assert summary["counts"]["documents_seen"] == 6
    assert summary["counts"]["documents_indexed"] == 6
    assert summary["counts"]["documents_failed"] == 0
    assert summary["counts"]["chunks"] >= 6
    assert summary["live"] == summary["collection"] == f"test__{summary['version']}"
    assert summary["previous"] is None

    with Retriever(alias="test", store=str(store_path)) as retriever:
        espresso = retriever.search("how often should I descale the coffee machine?", k=3)
        rollback = retriever.search("how do I undo a bad promotion?", k=3)
        chain = retriever.search("when must a worn bicycle chain be replaced", k=1)
    assert espresso[0].doc_id == "demo/espresso-machine.html"
    assert rollback[0].doc_id == "demo/operations-handbook.pdf" and rollback[0].page == 2
    assert chain[0].doc_id == "demo/bicycle-chain.md"
    assert espresso[0].version == summary["version"]
    assert espresso[0].score > espresso[1].score

    with open_store(StoreSettings(location=str(store_path))) as store:  # the run released its lock
        manifest = store.read_manifest(summary["collection"])
    assert manifest.state == "complete"
    assert manifest.counts.chunks == summary["counts"]["chunks"]
    assert manifest.model.name == "all-MiniLM-L6-v2" and manifest.model.dimension == 384
    assert manifest.model.max_seq_length == 256 and manifest.model.dtype == "float32"
    assert manifest.chunking["max_tokens"] == 96
    assert manifest.sources[0]["name"] == "demo"


def test_run_summary_is_published_as_an_artifact(write_config: Path) -> None:
    from prefect.artifacts import Artifact

    summary = reindex(config=str(write_config))

    artifact = Artifact.get("reindex-test")
    assert artifact is not None
    assert summary["version"] in artifact.data
    assert "| indexed / failed | 6 / 0 |" in artifact.data
    freshness = Artifact.get("freshness-test")
    assert freshness is not None and freshness.type == "table" and "demo" in freshness.data


def test_a_failed_document_is_reported_and_the_good_ones_promoted(
    write_config: Path, corpus: Path, store_path: Path
) -> None:
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n% truncated, no objects at all\n")
    (corpus / "empty.md").write_text("")

    summary = reindex(config=str(write_config))

    assert summary["promoted"] is True
    assert summary["counts"]["documents_seen"] == 8
    assert summary["counts"]["documents_indexed"] == 6
    failed = {f["doc_id"]: f for f in summary["failures"]}
    assert set(failed) == {"demo/broken.pdf", "demo/empty.md"}
    assert failed["demo/empty.md"]["reason"] == "file is empty"
    assert all(f["stage"] == "parse" and f["reason"] for f in failed.values())


def test_a_build_with_nothing_indexed_is_refused_and_the_alias_stays(
    write_config: Path, tmp_path: Path, store_path: Path
) -> None:
    first = reindex(config=str(write_config))
    empty = tmp_path / "empty-source"
    empty.mkdir()
    for name in ("a.md", "b.pdf"):
        (empty / name).write_bytes(b"")

    # The configured source is replaced by one whose every document fails, and forgotten: nothing would
    # be served.
    with pytest.raises(PromotionRefused, match="indexed no documents") as error:
        reindex(config=str(write_config), sources=[str(empty)], forget_sources=["demo"])

    refused = error.value.details["summary"]
    assert refused["promoted"] is False and refused["state"] == "rejected"
    assert refused["counts"]["documents_deleted"] == 6 and refused["counts"]["documents_failed"] == 2
    with open_store(StoreSettings(location=str(store_path))) as store:  # lock released on failure too
        assert store.alias_target("test") == first["collection"]
        assert store.read_manifest(refused["collection"]).state == "rejected"


def test_no_promote_builds_but_leaves_the_alias(write_config: Path, store_path: Path) -> None:
    first = reindex(config=str(write_config))
    second = reindex(config=str(write_config), promote=False, full_rebuild=True)

    assert second["promoted"] is False and second["state"] == "complete"
    assert second["live"] == first["collection"]
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.exists(second["collection"])


def test_parameters_override_the_config(tmp_path: Path, corpus: Path) -> None:
    other_store = tmp_path / "elsewhere"
    summary = reindex(sources=[str(corpus)], store=str(other_store), alias="override")
    assert summary["alias"] == "override" and summary["promoted"]
    assert summary["counts"]["documents_indexed"] == 6
    with open_store(StoreSettings(location=str(other_store))) as store:
        assert store.alias_target("override") == summary["collection"]


def test_a_source_left_out_by_a_run_keeps_its_documents_until_forgotten(
    write_config: Path, tmp_path: Path, store_path: Path
) -> None:
    """`--source <other folder>` adds to the alias; it never empties the configured sources behind the
    user's back. Only `--forget-source` deletes a source's documents, and the freshness ledger follows."""
    from rag.errors import ConfigError
    from rag.index.freshness import read_freshness
    from rag.models import utc_now

    first = reindex(config=str(write_config))
    other = tmp_path / "other"
    other.mkdir()
    (other / "kettle.md").write_text("# Kettle\n\nDescale the kettle with citric acid every month.\n")
    (other / "toaster.md").write_text("# Toaster\n\nEmpty the crumb tray of the toaster weekly.\n")

    added = reindex(config=str(write_config), sources=[str(other)])

    assert added["promoted"], added["reason"]
    assert added["counts"]["documents_deleted"] == 0 and added["counts"]["documents_new"] == 2
    assert any("--forget-source demo" in note for note in added["notes"])
    with open_store(StoreSettings(location=str(store_path))) as store:
        held = store.read_records(store.alias_target("test"))
        states = store.read_source_states("test")
    assert sorted({r.source for r in held.values()}) == ["demo", "other"] and len(held) == 8
    assert states["demo"].documents == 6 and states["other"].documents == 2

    assert reindex(config=str(write_config))["state"] == "unchanged"  # "other" is kept, not deleted
    with pytest.raises(ConfigError, match="no documents of a source 'typo'"):
        reindex(config=str(write_config), forget_sources=["typo"])
    with pytest.raises(ConfigError, match="one of this run's sources"):
        reindex(config=str(write_config), forget_sources=["demo"])

    forgot = reindex(config=str(write_config), forget_sources=["other"])

    assert forgot["promoted"], forgot["reason"]
    assert forgot["counts"]["documents_deleted"] == 2
    with open_store(StoreSettings(location=str(store_path))) as store:
        held = store.read_records(store.alias_target("test"))
        assert sorted({r.source for r in held.values()}) == ["demo"]
        assert set(store.read_source_states("test")) == {"demo"}  # no phantom source left
        assert [s.state.name for s in read_freshness(store, "test", [], utc_now())] == ["demo"]
    assert first["collection"] != forgot["collection"]
