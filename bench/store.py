"""Benchmark: the embedded vector engines, Qdrant Edge against qdrant-client's local mode.

For each size it writes N synthetic chunk vectors (384-d unit vectors in 2,000 topic clusters, the shape
of sentence embeddings; a payload with a document id and 200 characters of text) and measures:

- upload throughput (points/s) and, for Edge, the time to build HNSW and the payload index (``optimize``);
- query latency p50/p99 over 200 queries, top 10, through the index and exactly (every vector);
- recall@10 of the index against exact search (numpy, on the same vectors).

    .venv/bin/python bench/store.py [--sizes 100000,300000] [--queries 200] [--local-max 100000]
    .venv/bin/python bench/store.py --retriever 100000
    .venv/bin/python bench/store.py --snapshot 100000 [--workdir DIR]

``--retriever N`` instead builds an N-chunk store through ragops' own store (Qdrant Edge, the real
model's fingerprint, synthetic vectors) and compares ``Retriever.search`` with embedding the query alone
(target: p50 <= encode + 5 ms).

``--snapshot N`` builds an N-chunk store through ragops' own store (Edge, synthetic vectors, no model; in
``--workdir`` if given, reused when it holds the build) and opens a reader's snapshot of it: the disk the
snapshot takes (hard-linked files are shared; copied ones are new disk), and the time to copy it.

Local mode is brute force in Python and writes ~2,000 points/s: ``--local-max`` bounds the sizes it runs
at (0 skips it). Uniform random vectors (``--uniform``) are the worst case for any graph index: no
structure to follow. Figures and the command: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIMENSION = 384
TOPICS = 2_000
BATCH = 1_000


def synthetic(n: int, rng: np.random.Generator, *, uniform: bool = False) -> np.ndarray:
    """``n`` unit vectors: around ``TOPICS`` centroids (embedding-like), or uniform on the sphere."""
    if uniform:
        vectors = rng.standard_normal((n, DIMENSION), dtype=np.float32)
    else:
        centroids = np.random.default_rng(1).standard_normal((TOPICS, DIMENSION), dtype=np.float32)
        vectors = centroids[rng.integers(0, TOPICS, n)] + 0.6 * rng.standard_normal((n, DIMENSION), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def payload(i: int) -> dict:
    return {"doc_id": f"bench/doc-{i // 5}.md", "chunk_index": i % 5, "text": f"chunk {i} " + "x" * 190}


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def bench_edge(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> dict:
    import qdrant_edge as edge

    config = edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=DIMENSION, distance=edge.Distance.Cosine),
        hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
    )
    shard = edge.EdgeShard.create(str(folder), config)
    shard.update(edge.UpdateOperation.create_field_index("doc_id", edge.PayloadSchemaType.Keyword))
    started = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        points = [edge.Point(id=i, vector=vectors[i].tolist(), payload=payload(i))
                  for i in range(start, min(len(vectors), start + BATCH))]
        shard.update(edge.UpdateOperation.upsert_points(points))
    shard.flush()
    upload = time.perf_counter() - started
    started = time.perf_counter()
    shard.optimize()
    optimize = time.perf_counter() - started

    def run(params) -> tuple[list[float], list[list[int]]]:
        latencies, found = [], []
        for query in queries:
            started = time.perf_counter()
            hits = shard.search(edge.SearchRequest(query=edge.Query.Nearest(query.tolist()), limit=10,
                                                   params=params, with_payload=True))
            latencies.append((time.perf_counter() - started) * 1000)
            found.append([int(h.id) for h in hits])
        return latencies, found

    run(None)  # warm the page cache and the graph
    indexed, indexed_found = run(None)
    exact, _ = run(edge.SearchParams(exact=True))
    shard.close()
    return {"upload": len(vectors) / upload, "optimize": optimize, "index": percentiles(indexed),
            "exact": percentiles(exact), "found": indexed_found}


def bench_local(folder: Path, vectors: np.ndarray, queries: np.ndarray) -> dict:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder))
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=DIMENSION, distance=models.Distance.COSINE))
    # The WAL tuning ragops' embedded store applied to local mode (rag.store.IndexStore.tune_embedded).
    connection = client._client.collections["bench"].storage.storage
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        ids = range(start, min(len(vectors), start + BATCH))
        client.upload_points("bench", [models.PointStruct(id=i, vector=vectors[i].tolist(), payload=payload(i))
                                       for i in ids], batch_size=256, wait=True)
    upload = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = client.query_points("bench", query=query.tolist(), limit=10, with_payload=True).points
        latencies.append((time.perf_counter() - started) * 1000)
        found.append([int(h.id) for h in hits])
    client.close()
    return {"upload": len(vectors) / upload, "exact": percentiles(latencies), "found": found}


def bench_retriever(size: int, queries: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rag.config import EmbeddingSettings, StoreSettings
    from rag.embed.embedder import load_embedder
    from rag.models import Chunk, Manifest, utc_now
    from rag.serving import Retriever
    from rag.store import open_store

    embedder = load_embedder(EmbeddingSettings())
    vectors = synthetic(size, np.random.default_rng(0))
    texts = [f"how do I {verb} the {thing}?" for verb in ("undo", "rotate", "descale", "replace", "index")
             for thing in ("promotion", "API keys", "espresso machine", "bicycle chain", "alias")]
    with tempfile.TemporaryDirectory(prefix="ragops-bench-retriever-") as tmp:
        settings = StoreSettings(location=tmp, engine="edge")
        manifest = Manifest(alias="bench", version="v1", collection="bench__v1", created_at=utc_now(),
                            model=embedder.fingerprint, chunking={}, sources=[], state="complete")
        started = time.perf_counter()
        with open_store(settings) as store:
            store.create_build(manifest)
            for start in range(0, size, 5_000):
                ids = range(start, min(size, start + 5_000))
                chunks = [Chunk(doc_id=f"bench/doc-{i // 5}.md", chunk_index=i % 5, text=f"chunk {i} " + "x" * 190,
                                source_uri="file:///bench", source="bench") for i in ids]
                store.upsert_chunks(manifest.collection, chunks, vectors[start : start + len(chunks)])
            store.finish_bulk_load(manifest.collection)
            store.swap_alias("bench", expected=None, target=manifest.collection)
        print(f"built {size} chunks through IndexStore (Edge) in {time.perf_counter() - started:.1f}s")
        encode, search = [], []
        with Retriever("bench", settings, follow_every=0) as retriever:
            for i in range(queries + 20):
                text = texts[i % len(texts)] + f" #{i}"
                started = time.perf_counter()
                embedder.embed([text])
                encoded = time.perf_counter()
                retriever.search(text, k=10)
                done = time.perf_counter()
                if i >= 20:  # after warming up
                    encode.append((encoded - started) * 1000)
                    search.append((done - encoded) * 1000)
    (e50, e99), (s50, s99) = percentiles(encode), percentiles(search)
    print(f"encode(query) alone:  p50 {e50:.2f} ms  p99 {e99:.2f} ms")
    print(f"Retriever.search:     p50 {s50:.2f} ms  p99 {s99:.2f} ms  (p50 encode + {s50 - e50:.2f} ms)")


def bench_snapshot(size: int, workdir: Path | None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import statistics

    from rag.config import StoreSettings
    from rag.models import Chunk, Manifest, ModelFingerprint, utc_now
    from rag.store import open_store
    from rag.store.edge import _snapshot

    root = workdir or Path(tempfile.mkdtemp(prefix="ragops-bench-snapshot-"))
    settings = StoreSettings(location=str(root), engine="edge")
    fingerprint = ModelFingerprint(name="bench", path="-", weights_sha256="0" * 64, dimension=DIMENSION,
                                   normalize=True, dtype="float32", max_seq_length=256)
    manifest = Manifest(alias="bench", version="v1", collection="bench__v1", created_at=utc_now(),
                        model=fingerprint, chunking={}, sources=[], state="complete")
    if not (root / "builds" / manifest.collection).is_dir():
        vectors = synthetic(size, np.random.default_rng(0))
        started = time.perf_counter()
        with open_store(settings) as store:
            store.create_build(manifest)
            for start in range(0, size, 5_000):
                chunks = [Chunk(doc_id=f"bench/doc-{i // 5}.md", chunk_index=i % 5, text=f"chunk {i} " + "x" * 190,
                                source_uri="file:///bench", source="bench", title=f"Section {i % 50}")
                          for i in range(start, min(size, start + 5_000))]
                store.upsert_chunks(manifest.collection, chunks, vectors[start : start + len(chunks)])
            store.finish_bulk_load(manifest.collection)
            store.swap_alias("bench", expected=None, target=manifest.collection)
        print(f"built {size} chunks in {time.perf_counter() - started:.0f} s")

    def usage(paths: list[Path]) -> tuple[float, float]:
        return (sum(p.stat().st_size for p in paths) / 1e6, sum(p.stat().st_blocks * 512 for p in paths) / 1e6)

    build = [p for p in (root / "builds" / manifest.collection).rglob("*") if p.is_file()]
    print("build: %d files, %.1f MB apparent, %.2f MB allocated" % (len(build), *usage(build)))
    with open_store(settings) as store:
        store.prepare_reader("bench")()
        files = [p for p in store._readers.rglob("*") if p.is_file()]
        linked = [p for p in files if p.stat().st_nlink > 1]
        copied = [p for p in files if p.stat().st_nlink == 1]
        print("snapshot: %d files hard-linked (%.1f MB apparent, shared with the build); %d copied: %.1f MB "
              "apparent, %.2f MB allocated (new disk per reader)" % (len(linked), usage(linked)[0], len(copied),
                                                                   *usage(copied)))
        dense = root / "dense-copies"  # what the snapshot cost before its copies kept their holes
        for i, path in enumerate(copied):
            dense.mkdir(exist_ok=True)
            shutil.copy2(path, dense / str(i))
        print("the same files copied densely (shutil.copy2, as before 2026-12-08): %.2f MB allocated"
              % usage(list(dense.iterdir()))[1])
        shutil.rmtree(dense)
    times = []
    for i in range(7):
        target = root / f"snapshot-timing-{i}"
        started = time.perf_counter()
        _snapshot(root / "builds" / manifest.collection, target)
        times.append((time.perf_counter() - started) * 1000)
        shutil.rmtree(target)
    print(f"copying a snapshot (7 times, files written out): median {statistics.median(times):.0f} ms, "
          f"min {min(times):.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000", help="comma-separated point counts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--local-max", type=int, default=100_000, help="largest size local mode runs at (0: skip)")
    parser.add_argument("--uniform", action="store_true", help="uniform random vectors (the worst case for HNSW)")
    parser.add_argument("--retriever", type=int, metavar="N", help="Retriever.search against encode, at N chunks")
    parser.add_argument("--snapshot", type=int, metavar="N", help="a reader snapshot's disk and time, at N chunks")
    parser.add_argument("--workdir", type=Path, help="--snapshot: build (or reuse the build) here")
    args = parser.parse_args(argv)
    if args.snapshot:
        bench_snapshot(args.snapshot, args.workdir)
        return 0
    if args.retriever:
        bench_retriever(args.retriever, args.queries)
        return 0
    rng = np.random.default_rng(0)
    print(f"{'engine':<12} {'points':>8} {'upload/s':>9} {'optimize':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'exact p50':>9} {'exact p99':>9} {'recall@10':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        vectors = synthetic(size, rng, uniform=args.uniform)
        queries = synthetic(args.queries, rng, uniform=args.uniform)
        truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        with tempfile.TemporaryDirectory(prefix="ragops-bench-store-") as tmp:
            edge = bench_edge(Path(tmp) / "edge", vectors, queries)
            print(f"{'edge':<12} {size:>8} {edge['upload']:>9.0f} {edge['optimize']:>8.1f}s {edge['index'][0]:>7.2f} "
                  f"{edge['index'][1]:>7.2f} {edge['exact'][0]:>9.2f} {edge['exact'][1]:>9.2f} "
                  f"{recall(edge['found'], truth):>9.4f}", flush=True)
            shutil.rmtree(Path(tmp) / "edge")
            if size <= args.local_max:
                local = bench_local(Path(tmp) / "local", vectors, queries)
                print(f"{'local mode':<12} {size:>8} {local['upload']:>9.0f} {'-':>9} {'-':>7} {'-':>7} "
                      f"{local['exact'][0]:>9.2f} {local['exact'][1]:>9.2f} {recall(local['found'], truth):>9.4f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
