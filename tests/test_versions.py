"""Builds, promotion by compare-and-swap, rollback and retention on a real embedded Qdrant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from connectors import Fetcher, list_documents
from rag import build, versions
from rag.cache import EmbeddingCache
from rag.chunking import Chunker
from rag.config import Settings, StoreSettings
from rag.errors import AliasConflictError, PromotionRefused, StoreLockedError, VersionError
from rag.models import Chunk, Counts, Manifest, ModelFingerprint, utc_now
from rag.store import IndexStore, collection_name

FINGERPRINT = ModelFingerprint(
    name="test", path="/nowhere", weights_sha256="0" * 64, dimension=4, normalize=True, dtype="float32",
    max_seq_length=16,
)


def _complete_build(store: IndexStore, alias: str, version: str, chunks: int = 2) -> str:
    """A small complete build with real points (vectors made by hand: no model needed here)."""
    manifest = Manifest(
        alias=alias, version=version, collection=collection_name(alias, version), created_at=utc_now(),
        model=FINGERPRINT, chunking={}, sources=[],
    )
    store.create_build(manifest)
    rows = [
        Chunk(doc_id=f"d/{i}", chunk_index=0, text=f"text {i}", source_uri=f"file:///{i}", source="d")
        for i in range(chunks)
    ]
    store.upsert_chunks(manifest.collection, rows, np.eye(chunks, 4, dtype=np.float32))
    progress = build.BuildProgress(counts=Counts(documents_seen=chunks, documents_indexed=chunks, chunks=chunks))
    build.finish_build(store, manifest, progress)
    return manifest.collection


@pytest.fixture
def store(store_path: Path):
    with IndexStore.open(StoreSettings(location=str(store_path))) as opened:
        yield opened


def test_promote_moves_the_alias_and_records_the_event(store: IndexStore) -> None:
    first = _complete_build(store, "kb", "20260101-000000")
    manifest = store.read_manifest(first)
    assert versions.check_promotable(store, manifest).startswith("complete")

    versions.promote(store, "kb", first, expected=None, by="reindex", reason="first")

    assert store.alias_target("kb") == first
    recorded = store.read_manifest(first)
    assert [(e.by, e.replaced, e.reason) for e in recorded.promotions] == [("reindex", None, "first")]


def test_compare_and_swap_refuses_when_the_alias_moved(store: IndexStore) -> None:
    a = _complete_build(store, "kb", "20260101-000000")
    b = _complete_build(store, "kb", "20260102-000000")
    c = _complete_build(store, "kb", "20260103-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    # A run starts expecting a; meanwhile someone else promotes b.
    versions.promote(store, "kb", b, expected=a, by="promote", reason="someone else")

    with pytest.raises(AliasConflictError, match="someone else moved it"):
        versions.promote(store, "kb", c, expected=a, by="reindex", reason="late")

    assert store.alias_target("kb") == b
    with pytest.raises(AliasConflictError):
        versions.promote(store, "kb", c, expected=None, by="reindex", reason="thinks no alias exists")
    assert store.alias_target("kb") == b


def test_rollback_goes_back_to_the_replaced_build_and_deletes_nothing(store: IndexStore) -> None:
    a = _complete_build(store, "kb", "20260101-000000")
    b = _complete_build(store, "kb", "20260102-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")

    before, after = versions.rollback(store, "kb")

    assert (before, after) == (b, a)
    assert store.alias_target("kb") == a
    assert store.list_builds("kb") == [a, b]
    assert store.read_manifest(a).promotions[-1].by == "rollback"
    # a replaced b now, so rolling back again undoes the rollback.
    assert versions.rollback(store, "kb") == (a, b)
    assert versions.rollback(store, "kb", to="20260101-000000") == (b, a)


def test_rollback_errors(store: IndexStore) -> None:
    with pytest.raises(VersionError, match="does not exist"):
        versions.rollback(store, "kb")
    a = _complete_build(store, "kb", "20260101-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    with pytest.raises(VersionError, match="did not replace any build"):
        versions.rollback(store, "kb")
    with pytest.raises(VersionError, match="has no version 'nope'"):
        versions.rollback(store, "kb", to="nope")


def test_retention_deletes_only_old_unaliased_builds(store: IndexStore) -> None:
    names = [_complete_build(store, "kb", f"2026010{i}-000000") for i in range(1, 7)]
    other_alias_build = _complete_build(store, "other", "20260101-000000")
    versions.promote(store, "kb", names[0], expected=None, by="reindex", reason="oldest is live")
    versions.promote(store, "kb", names[1], expected=names[0], by="reindex", reason="")
    store.swap_alias("pinned", expected=None, target=names[2])  # another alias keeps this one

    deleted = versions.apply_retention(store, "kb", keep=3)

    # live (1) + rollback target (0) + newest (5) fill keep=3; 2 is aliased by "pinned"; 3, 4 go.
    assert deleted == [names[3], names[4]]
    assert store.list_builds("kb") == [names[0], names[1], names[2], names[5]]
    assert store.exists(other_alias_build)
    assert store.alias_target("kb") == names[1]


def test_the_live_collection_is_never_deleted(store: IndexStore) -> None:
    a = _complete_build(store, "kb", "20260101-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    with pytest.raises(VersionError, match="refusing to delete"):
        store.delete_build(a)
    assert versions.apply_retention(store, "kb", keep=2, protect=set()) == []


def test_sanity_checks_refuse_empty_or_incomplete_builds(store: IndexStore) -> None:
    a = _complete_build(store, "kb", "20260101-000000")
    manifest = store.read_manifest(a)
    manifest.counts.chunks = 5  # the manifest claims more than the collection holds
    with pytest.raises(PromotionRefused, match="holds 2 points but wrote 5 chunks"):
        versions.check_promotable(store, manifest)
    manifest.counts = Counts(documents_seen=3, documents_failed=3)
    with pytest.raises(PromotionRefused, match="indexed no documents"):
        versions.check_promotable(store, manifest)
    manifest.state = "failed"
    with pytest.raises(PromotionRefused, match="is failed, not complete"):
        versions.check_promotable(store, manifest)


def test_builds_are_never_overwritten(store: IndexStore) -> None:
    _complete_build(store, "kb", "20260101-000000")
    with pytest.raises(VersionError, match="already exists"):
        _complete_build(store, "kb", "20260101-000000")
    fixed = utc_now()
    first = versions.new_version(store, "kb", now=fixed)
    _complete_build(store, "kb", first)
    assert versions.new_version(store, "kb", now=fixed) == f"{first}-2"


def test_an_embedded_store_held_by_another_process_is_a_clear_error(store_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from qdrant_client import QdrantClient; "
         f"c = QdrantClient(path={str(store_path)!r}); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="in use by another ragops process"):
            with IndexStore.open(StoreSettings(location=str(store_path))):
                pass
    finally:
        holder.kill()
        holder.wait()
    with IndexStore.open(StoreSettings(location=str(store_path))) as store:  # free again
        assert store.list_builds("kb") == []


@pytest.mark.slow
def test_alias_moved_mid_build_leaves_it_untouched(settings: Settings, embedder) -> None:
    """The reindex flow's own steps, with a competing promotion between build start and swap."""
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    with IndexStore.open(settings.store) as store:
        a = _complete_build(store, settings.alias, "20260101-000000")
        b = _complete_build(store, settings.alias, "20260102-000000")
        versions.promote(store, settings.alias, a, expected=None, by="reindex", reason="a")

        expected = store.alias_target(settings.alias)  # what the run saw when it started
        manifest = build.begin_build(store, settings, embedder, chunker)
        work = [build.WorkItem(ref=ref) for ref in list_documents(settings.sources[0])]
        cache = EmbeddingCache(store, settings.alias, embedder.fingerprint)
        progress = build.BuildProgress()
        progress.add(build.index_batch(store, manifest, work, embedder, chunker, cache, Fetcher(settings.sources),
                                       max_bytes=10**7, now=utc_now()))
        manifest = build.finish_build(store, manifest, progress)
        versions.promote(store, settings.alias, b, expected=a, by="promote", reason="another operator")  # mid-run

        with pytest.raises(AliasConflictError) as error:
            versions.promote(store, settings.alias, manifest.collection, expected=expected, by="reindex", reason="x")
        assert f"points at {b}" in str(error.value) and f"expected {a}" in str(error.value)
        assert store.alias_target(settings.alias) == b
        assert store.count(manifest.collection) == manifest.counts.chunks > 0


def test_cache_pruning_keeps_only_vectors_that_remaining_builds_use(store: IndexStore) -> None:
    from rag.cache import EmbeddingCache, prune_caches
    from rag.models import Chunk as ChunkModel

    build_a = _complete_build(store, "kb", "20260101-000000", chunks=2)  # texts "text 0", "text 1"
    cache = EmbeddingCache(store, "kb", FINGERPRINT)
    used = [ChunkModel(doc_id=f"d/{i}", chunk_index=0, text=f"text {i}", source_uri="", source="d").text_hash
            for i in range(2)]
    cache.put(used + ["orphan-hash"], np.eye(3, 4, dtype=np.float32))

    assert prune_caches(store, "kb") == 1
    assert set(cache.get(used + ["orphan-hash"])) == set(used)

    store.delete_build(build_a)  # no build of the model left: the whole cache goes
    assert prune_caches(store, "kb") == 2
    assert not store.exists(cache.collection)
