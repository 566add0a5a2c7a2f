"""Builds, promotion by compare-and-swap, rollback and retention on a real embedded Qdrant."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from connectors import Fetcher, list_documents
from rag.config import Settings, StoreSettings
from rag.errors import AliasConflictError, PromotionRefused, StoreLockedError, VersionError
from rag.index import build, versions
from rag.index.batches import index_batches
from rag.index.cache import EmbeddingCache
from rag.index.plan import WorkItem
from rag.index.progress import BuildProgress
from rag.ingest.chunking import Chunker
from rag.ingest.sandbox import ParseSandbox
from rag.models import Counts, Manifest, utc_now
from rag.store import IndexStore, open_store
from rag.store.names import collection_name, docs_collection
from testkit.builds import FINGERPRINT, complete_build


def _husk(store: IndexStore, alias: str, version: str, state: str = "building") -> str:
    """A build a run began and never finished: ``building`` (the run was killed) or ``failed``."""
    manifest = Manifest(
        alias=alias, version=version, collection=collection_name(alias, version), created_at=utc_now(),
        model=FINGERPRINT, chunking={}, sources=[],
    )
    store.create_build(manifest)
    if state == "failed":
        build.fail_build(store, manifest, "RuntimeError: the source went away")
    return manifest.collection


class Killed(BaseException):
    """Stands in for SIGKILL at one call: nothing in ragops catches a BaseException it does not know,
    so the code after that call never runs, as after a kill -9."""


def _kill_at(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, call: int = 1) -> None:
    """Make the ``call``-th call of ``owner.name`` (an instance's method) die before doing anything."""
    original, calls = getattr(owner, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Killed(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)


@pytest.fixture
def store(store_path: Path):
    with open_store(StoreSettings(location=str(store_path))) as opened:
        yield opened


@pytest.fixture
def qdrant_store(store_path: Path):
    """The qdrant-client backend (local mode, the server API's stand-in): deletions take two requests."""
    with open_store(StoreSettings(location=str(store_path), engine="qdrant")) as opened:
        yield opened


def test_promote_moves_the_alias_and_records_the_event(store: IndexStore) -> None:
    first = complete_build(store, "kb", "20260101-000000")
    manifest = store.read_manifest(first)
    assert versions.check_promotable(store, manifest).startswith("complete")

    versions.promote(store, "kb", first, expected=None, by="reindex", reason="first")

    assert store.alias_target("kb") == first
    recorded = store.read_manifest(first)
    assert [(e.by, e.replaced, e.reason) for e in recorded.promotions] == [("reindex", None, "first")]


def test_compare_and_swap_refuses_when_the_alias_moved(store: IndexStore) -> None:
    a = complete_build(store, "kb", "20260101-000000")
    b = complete_build(store, "kb", "20260102-000000")
    c = complete_build(store, "kb", "20260103-000000")
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
    a = complete_build(store, "kb", "20260101-000000")
    b = complete_build(store, "kb", "20260102-000000")
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
    a = complete_build(store, "kb", "20260101-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    with pytest.raises(VersionError, match="did not replace any build"):
        versions.rollback(store, "kb")
    with pytest.raises(VersionError, match="has no version 'nope'"):
        versions.rollback(store, "kb", to="nope")


def test_retention_deletes_only_old_unaliased_builds(store: IndexStore) -> None:
    names = [complete_build(store, "kb", f"2026010{i}-000000") for i in range(1, 7)]
    other_alias_build = complete_build(store, "other", "20260101-000000")
    versions.promote(store, "kb", names[0], expected=None, by="reindex", reason="oldest is live")
    versions.promote(store, "kb", names[1], expected=names[0], by="reindex", reason="")
    store.swap_alias("pinned", expected=None, target=names[2])  # another alias keeps this one

    deleted = versions.apply_retention(store, "kb", keep=3)

    # live (1) + rollback target (0) + newest (5) fill keep=3; 2 is aliased by "pinned"; 3, 4 go.
    assert deleted == [names[3], names[4]]
    assert store.list_builds("kb") == [names[0], names[1], names[2], names[5]]
    assert store.exists(other_alias_build)
    assert store.alias_target("kb") == names[1]


def test_retention_leaves_a_build_that_was_live_moments_ago_for_its_grace_period(store: IndexStore) -> None:
    a, b, c = (complete_build(store, "kb", f"2026010{i}-000000") for i in range(1, 4))
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")
    versions.promote(store, "kb", c, expected=b, by="reindex", reason="c")  # a left the alias first, then b

    # keep=2 holds c (live) and b (rollback target); a stopped being live a moment ago.
    assert versions.apply_retention(store, "kb", keep=2, grace=timedelta(minutes=10)) == []
    assert store.exists(a)
    later = utc_now() + timedelta(minutes=11)
    assert versions.apply_retention(store, "kb", keep=2, grace=timedelta(minutes=10), now=later) == [a]
    assert StoreSettings(location="http://qdrant:6333").grace == timedelta(minutes=10)
    assert StoreSettings(location="/x", retention_grace="30s").grace == timedelta(seconds=30)
    assert StoreSettings(location="/x").grace == timedelta(0)  # snapshots keep a deleted build readable


def test_the_live_collection_is_never_deleted(store: IndexStore) -> None:
    a = complete_build(store, "kb", "20260101-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    with pytest.raises(VersionError, match="refusing to delete"):
        store.delete_build(a)
    assert versions.apply_retention(store, "kb", keep=2, protect=set()) == []


def test_sanity_checks_refuse_empty_or_incomplete_builds(store: IndexStore) -> None:
    a = complete_build(store, "kb", "20260101-000000")
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
    complete_build(store, "kb", "20260101-000000")
    with pytest.raises(VersionError, match="already exists"):
        complete_build(store, "kb", "20260101-000000")
    fixed = utc_now()
    first = versions.new_version(store, "kb", now=fixed)
    complete_build(store, "kb", first)
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
            with open_store(StoreSettings(location=str(store_path), engine="qdrant")):
                pass
    finally:
        holder.kill()
        holder.wait()
    with open_store(StoreSettings(location=str(store_path), engine="qdrant")) as store:  # free again
        assert store.list_builds("kb") == []


@pytest.mark.slow
def test_alias_moved_mid_build_leaves_it_untouched(settings: Settings, embedder) -> None:
    """The reindex flow's own steps, with a competing promotion between build start and swap."""
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    with open_store(settings.store) as store:
        a = complete_build(store, settings.alias, "20260101-000000")
        b = complete_build(store, settings.alias, "20260102-000000")
        versions.promote(store, settings.alias, a, expected=None, by="reindex", reason="a")

        expected = store.alias_target(settings.alias)  # what the run saw when it started
        manifest = build.begin_build(store, settings.alias, settings.sources, embedder.fingerprint, chunker.describe())
        work = [WorkItem(ref=ref) for ref in list_documents(settings.sources[0]).refs]
        cache = EmbeddingCache(store, settings.alias, embedder.fingerprint)
        progress = BuildProgress()
        for report in index_batches(store, manifest, [work], embedder, chunker, cache, Fetcher(settings.sources),
                                    max_bytes=10**7, sandbox=ParseSandbox(settings.pipeline)):
            progress.add(report)
        manifest = build.finish_build(store, manifest, progress)
        versions.promote(store, settings.alias, b, expected=a, by="promote", reason="another operator")  # mid-run

        with pytest.raises(AliasConflictError) as error:
            versions.promote(store, settings.alias, manifest.collection, expected=expected, by="reindex", reason="x")
        assert f"points at {b}" in str(error.value) and f"expected {a}" in str(error.value)
        assert store.alias_target(settings.alias) == b
        assert store.count(manifest.collection) == manifest.counts.chunks > 0


def test_cache_pruning_keeps_only_vectors_that_remaining_builds_use(store: IndexStore) -> None:
    from rag.index.cache import EmbeddingCache, prune_caches
    from rag.models import Chunk as ChunkModel

    build_a = complete_build(store, "kb", "20260101-000000", chunks=2)  # texts "text 0", "text 1"
    cache = EmbeddingCache(store, "kb", FINGERPRINT)
    used = [ChunkModel(doc_id=f"d/{i}", chunk_index=0, text=f"text {i}", source_uri="", source="d").text_hash
            for i in range(2)]
    cache.put(used + ["orphan-hash"], np.eye(3, 4, dtype=np.float32))

    assert prune_caches(store, "kb") == 1
    assert set(cache.get(used + ["orphan-hash"])) == set(used)

    store.delete_build(build_a)  # no build of the model left: the whole cache goes
    assert prune_caches(store, "kb") == 2
    assert not store.exists(cache.table)


# --- what a kill -9 leaves behind ------------------------------------------------------------------


def test_retention_deletes_husks_and_they_take_no_slot(store: IndexStore) -> None:
    a = complete_build(store, "kb", "20260101-000000")
    b = complete_build(store, "kb", "20260102-000000")
    c = complete_build(store, "kb", "20260103-000000")
    failed = _husk(store, "kb", "20260104-000000", "failed")  # a run that stopped on an error
    killed = _husk(store, "kb", "20260105-000000")  # a run killed mid-build: still "building"
    running = _husk(store, "kb", "20260106-000000")  # this run's own build, not finished yet
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")

    deleted = versions.apply_retention(store, "kb", keep=4, protect={running})

    # running, live b and rollback target a are pinned; the fourth slot goes to c, not to a newer husk.
    assert deleted == [failed, killed]
    assert store.list_builds("kb") == [a, b, c, running]
    assert not store.exists(docs_collection(killed)) and store.exists(docs_collection(running))


def test_retention_never_deletes_the_live_build_whatever_its_state(store: IndexStore) -> None:
    husk = _husk(store, "kb", "20260101-000000", "failed")
    store.swap_alias("kb", expected=None, target=husk)  # pointed at by hand, below ragops
    _husk(store, "kb", "20260102-000000")
    assert versions.apply_retention(store, "kb", keep=2) == [collection_name("kb", "20260102-000000")]
    assert store.list_builds("kb") == [husk]


def test_a_table_orphaned_by_a_killed_deletion_is_deleted_by_retention(qdrant_store: IndexStore) -> None:
    store = qdrant_store
    old = complete_build(store, "kb", "20260101-000000")
    live = complete_build(store, "kb", "20260102-000000")
    versions.promote(store, "kb", live, expected=None, by="reindex", reason="live")
    # The first half of a deletion in the old order (collection, then table), killed in between.
    store.client.delete_collection(old)
    assert old not in store.list_builds("kb") and store.exists(docs_collection(old))

    assert versions.apply_retention(store, "kb", keep=2) == [docs_collection(old)]

    assert not store.exists(docs_collection(old)) and store.orphan_tables("kb") == []
    assert store.exists(docs_collection(live))  # a table whose build exists is never an orphan


def test_a_deletion_killed_half_way_leaves_a_build_that_retention_retries(
    qdrant_store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = qdrant_store
    old, middle, live = (complete_build(store, "kb", f"2026010{i}-000000") for i in (1, 2, 3))
    versions.promote(store, "kb", live, expected=None, by="reindex", reason="live")
    with monkeypatch.context() as patch:
        _kill_at(patch, store.client, "delete_collection", call=2)  # dies between the two deletions
        with pytest.raises(Killed):
            versions.apply_retention(store, "kb", keep=2)

    # The table went first, so what is left is still a build: listed, and deleted by the next retention.
    assert store.list_builds("kb") == [old, middle, live]
    assert not store.exists(docs_collection(old))
    assert versions.apply_retention(store, "kb", keep=2) == [old]
    assert store.list_builds("kb") == [middle, live] and store.orphan_tables("kb") == []


def test_a_promotion_killed_before_the_swap_records_nothing(
    qdrant_store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server records a move in steps (the embedded store in the move's transaction: test_move_history.py)."""
    store = qdrant_store
    a = complete_build(store, "kb", "20260101-000000")
    b = complete_build(store, "kb", "20260102-000000")
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    with monkeypatch.context() as patch:
        _kill_at(patch, store, "swap_alias")
        with pytest.raises(Killed):
            versions.promote(store, "kb", b, expected=a, by="reindex", reason="killed")

    assert store.alias_target("kb") == a
    shown = {v.collection: v.manifest for v in versions.list_versions(store, "kb")}  # what `status` shows
    assert shown[b].promotions == [] and shown[a].promotions[-1].reason == "a"
    raw = store.read_manifest(b)
    assert [e.pending for e in raw.promotions] == [True] and raw.replaced is None
    assert versions.rollback(store, "kb", to="20260102-000000") == (a, b)  # b is promotable as ever
    assert [(e.by, e.pending) for e in store.read_manifest(b).promotions] == [("rollback", False)]


def test_a_promotion_killed_after_the_swap_still_guides_rollback_and_retention(
    qdrant_store: IndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = qdrant_store
    a, b, c = (complete_build(store, "kb", f"2026010{i}-000000") for i in (1, 2, 3))
    versions.promote(store, "kb", c, expected=None, by="reindex", reason="c")
    versions.promote(store, "kb", a, expected=c, by="rollback", reason="back to a")
    with monkeypatch.context() as patch:
        _kill_at(patch, store, "write_manifest", call=2)  # the confirmation, right after the swap
        with pytest.raises(Killed):
            versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")

    assert store.alias_target("kb") == b
    assert store.read_manifest(b).promotions[-1].pending  # unconfirmed on disk ...
    shown = {v.collection: v.manifest for v in versions.list_versions(store, "kb")}
    assert [(e.replaced, e.pending) for e in shown[b].promotions] == [(a, False)]  # ... but the alias proves it
    # a is the rollback target: retention keeps it over the newer c.
    assert versions.apply_retention(store, "kb", keep=2) == [c]
    assert versions.rollback(store, "kb") == (b, a)
    # Moving off b confirmed its record on disk: it was live, so its promotion happened.
    assert [(e.replaced, e.pending) for e in store.read_manifest(b).promotions] == [(a, False)]


@pytest.mark.parametrize("engine", ["edge", "qdrant"])
def test_a_swap_that_loses_the_race_leaves_no_record(store_path: Path, engine: str) -> None:
    with open_store(StoreSettings(location=str(store_path), engine=engine)) as store:
        a = complete_build(store, "kb", "20260101-000000")
        b = complete_build(store, "kb", "20260102-000000")
        versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
        with pytest.raises(AliasConflictError):
            versions.promote(store, "kb", b, expected=None, by="reindex", reason="late")
        assert store.read_manifest(b).promotions == []


def test_a_build_never_gated_is_not_promoted_by_hand_without_force(store: IndexStore) -> None:
    a = complete_build(store, "kb", "20260101-000000")  # complete, no verdict: its run died before the gate
    with pytest.raises(PromotionRefused, match="was never gated.*--force --reason"):
        versions.promote_version(store, "kb", "20260101-000000")
    assert store.alias_target("kb") is None
    assert versions.needs_gate(store, "kb", "20260101-000000").collection == a

    manifest = versions.promote_version(store, "kb", "20260101-000000", force=True, reason="smoke test")
    assert (manifest.promotions[-1].forced, store.alias_target("kb")) == (True, a)
    assert versions.needs_gate(store, "kb", "20260101-000000") is None  # live now: nothing to gate


def _rejected_build(store: IndexStore, alias: str, version: str) -> str:
    """A complete build the gate rejected."""
    collection = complete_build(store, alias, version)
    store.write_manifest(store.read_manifest(collection).model_copy(update={"state": "rejected", "error": "gate"}))
    return collection


def test_rejected_builds_never_push_good_builds_out_of_retention(store: IndexStore) -> None:
    """An accidental run that the gate rejects must not cost the user a build they kept."""
    a = complete_build(store, "kb", "20260101-000000")
    b = complete_build(store, "kb", "20260102-000000")
    kept = complete_build(store, "kb", "20260103-000000")  # built with --no-promote, kept on purpose
    versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
    versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")
    older_rejection = _rejected_build(store, "kb", "20260104-000000")
    just_rejected = _rejected_build(store, "kb", "20260105-000000")  # this run's build

    deleted = versions.apply_retention(store, "kb", keep=3, protect={just_rejected})

    # live b and rollback target a are pinned, the third slot goes to the good build; the newest
    # rejected build is kept besides (to be re-gated), the older one goes.
    assert deleted == [older_rejection]
    assert store.list_builds("kb") == [a, b, kept, just_rejected]
    assert versions.apply_retention(store, "kb", keep=3) == []  # stable on the next run


def test_a_rejected_build_older_than_the_live_one_takes_a_slot_only_when_one_is_free(store: IndexStore) -> None:
    rejected = _rejected_build(store, "kb", "20260101-000000")
    a = complete_build(store, "kb", "20260102-000000")
    b = complete_build(store, "kb", "20260103-000000")
    versions.promote(store, "kb", b, expected=None, by="reindex", reason="b")
    assert versions.apply_retention(store, "kb", keep=3) == []  # a free slot: kept
    c = complete_build(store, "kb", "20260104-000000")
    assert versions.apply_retention(store, "kb", keep=3) == [rejected]
    assert store.list_builds("kb") == [a, b, c]
