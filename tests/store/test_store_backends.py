"""The store interface behaves the same on both backends: Qdrant Edge (the embedded engine) and
qdrant-client (its local mode is the stand-in for a Qdrant server: no server installs here).

Each scenario runs on both and returns what it observed; the observations are compared (ids and order
equal, scores to 1e-5 on the same vectors). No model: vectors are seeded, unit-length, 16-d.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from rag.config import StoreSettings
from rag.errors import AliasConflictError, VersionError
from rag.index import versions
from rag.index.cache import EmbeddingCache, prune_caches
from rag.models import Chunk, Manifest, ModelFingerprint, utc_now
from rag.store import Between, IndexStore, Match, Prefix, Row, open_store

DIMENSION = 16
FINGERPRINT = ModelFingerprint(name="test", path="/m", weights_sha256="a" * 64, dimension=DIMENSION,
                               normalize=True, dtype="float32", max_seq_length=128)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _chunks(n: int, doc: str = "kb/a.md") -> list[Chunk]:
    return [Chunk(doc_id=f"{doc}-{i // 3}", chunk_index=i % 3, text=f"text {doc} {i}", source_uri="file:///kb",
                  source="kb", page=i % 4 + 1, title=f"Part {i % 2}") for i in range(n)]


def _manifest(version: str) -> Manifest:
    return Manifest(alias="kb", version=version, collection=f"kb__{version}", created_at=utc_now(),
                    model=FINGERPRINT, chunking={}, sources=[])


def _build(store: IndexStore, version: str, chunks: list[Chunk], vectors: np.ndarray) -> str:
    manifest = _manifest(version)
    store.create_build(manifest)
    store.upsert_chunks(manifest.collection, chunks, vectors)
    assert store.finish_bulk_load(manifest.collection) == "green"
    store.write_manifest(manifest.model_copy(update={"state": "complete"}))
    return manifest.collection


def _search_points_and_carry(store: IndexStore) -> dict:
    chunks, vectors = _chunks(30), _vectors(30)
    first = _build(store, "v1", chunks, vectors)
    queries = _vectors(5, seed=7)
    hits = store.search_many(first, queries, 5)
    exact = store.search_many(first, queries, 5, exact=True)
    store.create_build(_manifest("v2"))
    carried = store.copy_points(first, "kb__v2", [c.point_id for c in chunks[:12]])
    read = store.read_points(first, [chunks[0].point_id, "00000000-0000-0000-0000-000000000000"], fields=["text"])
    return {
        "hits": [[(h.id, round(h.score, 5), h.payload["doc_id"]) for h in row] for row in hits],
        "exact": [[h.id for h in row] for row in exact],
        "carried": (carried, store.count("kb__v2")),
        "read": [(p.id, p.payload, np.round(p.vector, 5).tolist()) for p in read],
        "count": store.count(first),
        "status": store.status(first),
        "ids": sorted(store.point_ids(first)),
        "hashes": sorted(store.text_hashes(first)),
        "builds": store.list_builds("kb"),
    }


def _manifests_and_aliases(store: IndexStore) -> dict:
    one = _build(store, "v1", _chunks(3), _vectors(3))
    two = _build(store, "v2", _chunks(3), _vectors(3, seed=1))
    with pytest.raises(VersionError):
        store.create_build(_manifest("v1"))
    store.swap_alias("kb", expected=None, target=one)
    with pytest.raises(AliasConflictError):
        store.swap_alias("kb", expected=None, target=two)  # the alias exists: someone got there first
    store.swap_alias("kb", expected=one, target=two)
    with pytest.raises(AliasConflictError):
        store.swap_alias("kb", expected=one, target=one)  # stale expectation: nothing changes
    with pytest.raises(VersionError):
        store.swap_alias("kb", expected=two, target="kb__nope")
    with pytest.raises(VersionError):
        store.delete_build(two)  # live: never deleted
    store.delete_build(one)
    with pytest.raises(VersionError):
        store.read_manifest(one)
    return {"live": store.alias_target("kb"), "aliases_of": store.aliases_of(two), "builds": store.list_builds("kb"),
            "state": store.read_manifest(two).state, "orphans": store.orphan_tables("kb"),
            "names": [n for n in store.collection_names() if n.startswith("kb__")]}


def _tables(store: IndexStore) -> dict:
    vectors = _vectors(3)
    store.put_rows("_ragops_cache__kb__x", [Row(f"h{i}", {"text_hash": f"h{i}"}, v) for i, v in enumerate(vectors)],
                   dimension=DIMENSION)
    store.put_rows("_ragops_ledger__kb", [Row("source:kb", {"name": "kb", "n": 1})])
    store.put_rows("_ragops_ledger__kb", [Row("source:kb", {"name": "kb", "n": 2})])  # replaces
    got = store.get_rows("_ragops_cache__kb__x", ["h0", "h2", "missing"], vectors=True)
    store.delete_rows("_ragops_cache__kb__x", ["h1", "never-there"])
    scanned = sorted(p.payload["text_hash"] for p in store.scan_rows("_ragops_cache__kb__x", fields=["text_hash"]))
    return {
        "got": {k: (p.payload, np.round(p.vector, 5).tolist()) for k, p in got.items()},
        "scanned": scanned,
        "ledger": [p.payload for p in store.scan_rows("_ragops_ledger__kb")],
        "tables": store.tables("_ragops_"),
        "absent": (store.get_rows("_ragops_nothing", ["a"]), list(store.scan_rows("_ragops_nothing"))),
        "dropped": (store.drop_table("_ragops_cache__kb__x"), store.exists("_ragops_cache__kb__x")),
        "lock": (store.read_lock("kb"), store.write_lock("kb", {"pid": 1}), store.read_lock("kb"),
                 store.delete_lock("kb"), store.read_lock("kb")),
    }


def _filtered_search(store: IndexStore) -> dict:
    chunks = _chunks(24, doc="kb/guides/a") + [c.model_copy(update={"source": "wiki"}) for c in _chunks(24, doc="wiki/b")]
    build = _build(store, "v1", chunks, _vectors(48))
    queries = _vectors(4, seed=3)
    wheres = {
        "source": [Match("source", ("wiki",))],
        "doc ids": [Match("doc_id", ("kb/guides/a-1", "wiki/b-7"))],
        "doc id prefix": [Prefix("doc_id", "kb/guides/")],
        "pages 2-3 of one title": [Between("page", gte=2, lte=3), Match("title", ("Part 1",))],
        "nothing matches": [Match("source", ("nope",))],
    }
    observed = {}
    for name, where in wheres.items():
        for exact in (False, True):
            rows = store.search_many(build, queries, 6, where=where, exact=exact)
            assert all(_meets(h.payload, where) for row in rows for h in row), name
            observed[name, exact] = [[(h.id, round(h.score, 5)) for h in row] for row in rows]
    assert observed["nothing matches", False] == [[]] * 4
    assert all(len(r) == 6 for r in observed["doc ids", True])  # two documents, 3 chunks each
    return observed


def _meets(payload: dict, where: list) -> bool:
    """What each condition means, written out: the backends must agree with this, not only each other."""
    for c in where:
        value = payload[c.field]
        if isinstance(c, Match) and value not in c.values or isinstance(c, Prefix) and not value.startswith(c.prefix):
            return False
        if isinstance(c, Between) and not (c.gte or -1e18) <= value <= (c.lte or 1e18):
            return False
    return True


def _retention_and_cache(store: IndexStore) -> dict:
    builds = [_build(store, f"v{i}", _chunks(6, doc=f"kb/{i}"), _vectors(6, seed=i)) for i in range(1, 6)]
    for before, after in zip([None, *builds], builds[:4]):
        versions.promote(store, "kb", after, expected=before, by="reindex", reason="")
    cache = EmbeddingCache(store, "kb", FINGERPRINT)
    hashes = [c.text_hash for i in range(1, 6) for c in _chunks(6, doc=f"kb/{i}")]
    cache.put(hashes + ["stale"], _vectors(len(hashes) + 1, seed=9))
    deleted = versions.apply_retention(store, "kb", keep=3)
    pruned = prune_caches(store, "kb")
    hits = cache.get(hashes + ["stale"])
    return {"deleted": deleted, "builds": store.list_builds("kb"), "live": store.alias_target("kb"),
            "pruned": pruned, "cache hits": sorted(hits), "vector": np.round(hits[hashes[-1]], 5).tolist()}


SCENARIOS: dict[str, Callable[[IndexStore], dict]] = {
    "search, points and carry": _search_points_and_carry,
    "filtered search": _filtered_search,
    "manifests and aliases": _manifests_and_aliases,
    "retention and cache": _retention_and_cache,
    "tables": _tables,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_both_backends_observe_the_same(scenario: str, tmp_path: Path) -> None:
    observed = {}
    for engine in ("edge", "qdrant"):
        with open_store(StoreSettings(location=str(tmp_path / engine), engine=engine)) as store:
            observed[engine] = SCENARIOS[scenario](store)
    assert observed["edge"] == observed["qdrant"]
    assert observed["edge"]  # and something was observed


def _hold_and_search(location: str, collection: str, ready, done) -> None:
    with open_store(StoreSettings(location=location, engine="edge")) as store:
        store.search_many(collection, _vectors(1), 3)
        ready.set()
        done.wait(60)


def test_edge_builds_while_another_process_reads_and_sealed_files_never_change(tmp_path: Path) -> None:
    settings = StoreSettings(location=str(tmp_path / "edge"), engine="edge")
    with open_store(settings) as store:
        live = _build(store, "v1", _chunks(30), _vectors(30))
        store.swap_alias("kb", expected=None, target=live)
    before = _digest(tmp_path / "edge" / "builds" / live)
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    reader = context.Process(target=_hold_and_search, args=(settings.location, "kb", ready, done))
    reader.start()
    try:
        assert ready.wait(60)
        with open_store(settings) as store:  # while the reader holds its snapshot of the live build
            candidate = _build(store, "v2", _chunks(30), _vectors(30, seed=3))
            assert store.count(live) == 30 and len(store.search_many(live, _vectors(2), 4)[1]) == 4
            store.swap_alias("kb", expected=live, target=candidate)
    finally:
        done.set()
        reader.join(60)
    assert reader.exitcode == 0
    assert _digest(tmp_path / "edge" / "builds" / live) == before  # readers never wrote to a sealed build
    assert not list((tmp_path / "edge" / "readers").iterdir())  # every snapshot was removed on close


def _digest(folder: Path) -> dict[str, bytes]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_edge_reader_snapshot_takes_no_more_disk_than_the_build_holds(tmp_path: Path) -> None:
    """A reader's snapshot hard-links a build's large files and copies its small ones, which Edge
    preallocates (1 MB flag files, 2 MB index pages) and fills a few pages of: the copies keep those
    holes. Dense copies took ~29 MB per reader of an 81-point build whose shard allocates ~0.4 MB."""
    settings = StoreSettings(location=str(tmp_path / "edge"), engine="edge")
    with open_store(settings) as store:
        live = _build(store, "v1", _chunks(81), _vectors(81))
        store.swap_alias("kb", expected=None, target=live)
    shard = tmp_path / "edge" / "builds" / live

    def allocated(paths) -> int:
        return sum(path.stat().st_blocks * 512 for path in paths)

    with open_store(settings) as store:
        expected = store.search_many(live, _vectors(2, seed=5), 5)
        [snapshot] = (tmp_path / "edge" / "readers").glob(f"*/{live}")
        copies = [path for path in snapshot.rglob("*") if path.is_file() and path.stat().st_nlink == 1]
        originals = [shard / copy.relative_to(snapshot) for copy in copies]
        assert len(copies) > 20 and all(c.read_bytes() == o.read_bytes() for c, o in zip(copies, originals))
        apparent = sum(copy.stat().st_size for copy in copies)
        assert allocated(originals) < apparent / 4  # Edge's small files are mostly holes on this disk
        assert allocated(copies) <= allocated(originals), (allocated(copies), allocated(originals), apparent)
    with open_store(settings) as store:  # a second reader, on its own snapshot, reads the same
        assert [[p.id for p in hits] for hits in store.search_many(live, _vectors(2, seed=5), 5)] == \
            [[p.id for p in hits] for hits in expected]
