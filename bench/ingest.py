"""Benchmark: a full build on BEIR SciFact against just encoding its chunks, and against LlamaIndex.

Writes each SciFact document as a Markdown file (as bench/refresh_scifact.py does), then runs, each in a
process of its own (wall time and the peak RSS of that process):

1. ``ragops reindex --full --json`` for each configuration (``--builds``, default: the default onnx
   build, and torch), every one into a store of its own: the full build a user runs, Prefect included;
2. the baseline: raw ``SentenceTransformer.encode`` (torch float32, the same local model, batch 32) of
   exactly the chunk texts the first build stored, model load not timed;
3. LlamaIndex's IngestionPipeline on the same files: SimpleDirectoryReader -> SentenceSplitter (the
   same chunk size, in the model's tokens) -> HuggingFaceEmbedding (the same local model) ->
   QdrantVectorStore on qdrant-client's local mode (LlamaIndex has no Qdrant Edge store). Needs the
   bench extra: ``pip install -c constraints.txt -e '.[bench]'`` (``make bench-deps``).

Each build is scored on the SciFact test queries (nDCG@10, documents ranked by their best chunk, exact
search, the build's own model for queries).

    .venv/bin/python bench/ingest.py [--limit N] [--builds onnx,torch,onnx-unstructured,torch-unstructured,int8]
                                     [--no-llamaindex] [--workdir DIR] [--json]
    (and onnx-redact: the default build with PII redaction, for its cost per document)

Targets (issue 13): the default build's wall time <= 1.0 x the baseline encode; >= 2 x faster than
LlamaIndex; nDCG@10 within 0.002 of the unstructured + torch build; peak RSS flat from 10% to 100% of
the corpus (run with --limit for the 10% figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: build name -> (embedding settings, pipeline.text_parser, the source's redact settings)
REDACT = {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"], "mode": "mask"}
BUILDS = {
    "onnx": ({"backend": "onnx"}, "builtin", None),
    "torch": ({"backend": "torch"}, "builtin", None),
    "int8": ({"backend": "onnx", "quantization": "int8"}, "builtin", None),
    "onnx-unstructured": ({"backend": "onnx"}, "unstructured", None),
    "torch-unstructured": ({"backend": "torch"}, "unstructured", None),
    "onnx-redact": ({"backend": "onnx"}, "builtin", REDACT),  # the default build with PII redaction (Presidio)
}
MODEL = "all-MiniLM-L6-v2"
BATCH = 32
SOURCE = "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N documents (quick runs).")
    parser.add_argument("--builds", default="onnx,torch", help=f"Comma-separated, of {', '.join(BUILDS)}.")
    parser.add_argument("--no-llamaindex", action="store_true", help="Skip the LlamaIndex pipeline.")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep corpus, stores and texts here.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one measured step, in its own process
    parser.add_argument("--job-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        _run_job(args.job, json.loads(args.job_args))
        return
    builds = [name.strip() for name in args.builds.split(",") if name.strip()]
    unknown = [name for name in builds if name not in BUILDS]
    if unknown:
        parser.error(f"unknown builds {unknown}; choose from {', '.join(BUILDS)}")

    from bench.refresh_scifact import write_corpus

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-ingest-"))
    corpus = work / "corpus"
    paths = write_corpus(args.dataset, corpus, args.limit)
    _say(f"corpus: {len(paths)} documents in {corpus}")
    rows: list[dict] = []
    for name in builds:
        rows.append(_build(name, work, corpus, args.dataset))
        _say(_row_line(rows[-1]))
    texts = work / "chunk-texts.json"
    _job("dump-texts", store=str(work / f"store-{builds[0]}"), collection=rows[0]["collection"], out=str(texts))
    baseline = _job("encode", texts=str(texts))
    baseline.update(name="raw torch fp32 encode", chunks=baseline["texts"])
    _say(_row_line(baseline))
    if not args.no_llamaindex:
        llama = _job("llamaindex", corpus=str(corpus), store=str(work / "llamaindex"), dataset=str(args.dataset),
                     max_tokens=rows[0]["max_tokens"])
        llama["name"] = "LlamaIndex IngestionPipeline"
        rows.append(llama)
        _say(_row_line(llama))
    _report(len(paths), rows, baseline, builds[0], args.json)


def _build(name: str, work: Path, corpus: Path, dataset: Path) -> dict:
    """One full build with the CLI, then its nDCG@10."""
    import yaml

    embedding, text_parser, redact = BUILDS[name]
    store = work / f"store-{name}"
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "scifact", "sources": [{"name": SOURCE, "path": str(corpus), **({"redact": redact} if redact else {})}],
        "store": {"location": str(store)},
        "embedding": {"model": MODEL, "batch_size": BATCH, **embedding},
        "pipeline": {"text_parser": text_parser}, "retention": 2,
    }))
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect")}
    measured = _measure([str(ROOT / ".venv" / "bin" / "ragops"), "reindex", "--full", "--json", "--config",
                         str(config)], env)
    if measured["returncode"] != 0:
        raise SystemExit(f"build {name} failed:\n{measured['stderr'][-3000:]}")
    summary = json.loads(measured["stdout"])
    scored = _job("score", store=str(store), collection=summary["collection"], dataset=str(dataset))
    return {"name": f"ragops {name}", "seconds": measured["seconds"], "peak_rss_mb": measured["peak_rss_mb"],
            "chunks": summary["counts"]["chunks"], "collection": summary["collection"],
            "max_tokens": scored["max_tokens"], "ndcg@10": scored["ndcg@10"],
            "documents": summary["counts"]["documents_indexed"], "redact_seconds": summary["timings"]["redact"],
            "redacted": sum(summary["counts"]["redacted"].values())}


def _job(job: str, **params) -> dict:
    """Run one step of the benchmark in a process of its own; its JSON result, with seconds and RSS."""
    command = [sys.executable, str(Path(__file__).resolve()), "--job", job, "--job-args", json.dumps(params)]
    measured = _measure(command, dict(os.environ))
    if measured["returncode"] != 0:
        raise SystemExit(f"{job} failed:\n{measured['stderr'][-3000:]}")
    result = json.loads(measured["stdout"].strip().splitlines()[-1])
    result.setdefault("seconds", measured["seconds"])
    result["peak_rss_mb"] = measured["peak_rss_mb"]
    return result


def _measure(command: list[str], env: dict) -> dict:
    """Wall time, exit code, output and peak RSS (that process only) of a command."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return {"seconds": round(seconds, 1), "returncode": process.returncode,
                "stdout": out.read().decode(), "stderr": err.read().decode(errors="replace"),
                "peak_rss_mb": round(usage.ru_maxrss / 1024)}


# --- the jobs, each in its own process -------------------------------------------------------------


def _run_job(job: str, params: dict) -> None:
    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    result = {"dump-texts": _dump_texts, "encode": _encode, "score": _score, "llamaindex": _llamaindex}[job](**params)
    print(json.dumps(result), flush=True)


def _dump_texts(store: str, collection: str, out: str) -> dict:
    """The chunk texts a build stored, in point order, to a JSON file."""
    from rag.config import StoreSettings
    from rag.store import open_store

    with open_store(StoreSettings(location=store), create=False) as opened:
        texts = [chunk["text"] for chunk in _payloads(opened, collection)]
    Path(out).write_text(json.dumps(texts))
    return {"texts": len(texts)}


def _payloads(store, collection: str) -> list[dict]:
    """Every point's text and document id, in point order."""
    return [point.payload for point in store.read_points(collection, list(store.point_ids(collection)),
                                                          fields=["text", "doc_id"])]


def _encode(texts: str) -> dict:
    """The baseline: sentence-transformers on torch float32 encoding the texts, model load not timed."""
    from sentence_transformers import SentenceTransformer

    from rag.embed.embedder import resolve_model_path

    chunks = json.loads(Path(texts).read_text())
    model = SentenceTransformer(str(resolve_model_path(MODEL)), device="cpu")
    model.encode(chunks[:BATCH], batch_size=BATCH)  # first-pass warm-up, as a build's model has had
    started = time.perf_counter()
    model.encode(chunks, batch_size=BATCH, normalize_embeddings=True)
    return {"texts": len(chunks), "seconds": round(time.perf_counter() - started, 1)}


def _score(store: str, collection: str, dataset: str) -> dict:
    """nDCG@10 of a build on the SciFact test queries; its query model is the build's own."""
    from evals.beir import load_beir
    from evals.evaluate import retrieve, score_rankings
    from rag.config import EvaluationSettings, StoreSettings
    from rag.embed.embedder import load_embedder_for
    from rag.store import open_store

    beir = load_beir(Path(dataset), "test")
    settings = EvaluationSettings()
    with open_store(StoreSettings(location=store), create=False) as opened:
        manifest = opened.read_manifest(collection)
        embedder = load_embedder_for(manifest.model)
        ids = {doc["doc_id"] for doc in _payloads(opened, collection)}
        qrels = {query: {f"{SOURCE}/{doc}.md": grade for doc, grade in judged.items()}
                 for query, judged in beir.qrels.items()}
        results = retrieve(opened, collection, list(beir.queries.values()), embedder, settings.search_depth)
    means, _ = score_rankings(beir.queries, dict(zip(beir.queries, results)), qrels, settings)
    return {"ndcg@10": round(means["ndcg@10"], 5), "documents": len(ids),
            "max_tokens": manifest.chunking.get("max_tokens")}


def _llamaindex(corpus: str, store: str, dataset: str, max_tokens: int) -> dict:
    """LlamaIndex's IngestionPipeline over the same files and model, timed from reading to stored."""
    started = time.perf_counter()
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from rag.embed.embedder import resolve_model_path

    model = HuggingFaceEmbedding(model_name=str(resolve_model_path(MODEL)), device="cpu", embed_batch_size=BATCH)
    splitter = SentenceSplitter(chunk_size=max_tokens, chunk_overlap=0,
                                tokenizer=lambda text: model._model.tokenizer.tokenize(text))
    client = QdrantClient(path=store)
    vector_store = QdrantVectorStore(collection_name="scifact", client=client)
    documents = SimpleDirectoryReader(corpus).load_data()
    nodes = IngestionPipeline(transformations=[splitter, model], vector_store=vector_store).run(documents=documents)
    seconds = time.perf_counter() - started

    from evals.beir import load_beir
    from evals.evaluate import Retrieved, score_rankings
    from rag.config import EvaluationSettings

    beir, settings = load_beir(Path(dataset), "test"), EvaluationSettings()
    vectors = model.get_text_embedding_batch(list(beir.queries.values()))
    results = {}
    for query_id, vector in zip(beir.queries, vectors):
        hits = client.query_points("scifact", query=vector, limit=settings.search_depth, with_payload=True).points
        best: dict[str, float] = {}
        for hit in hits:
            best.setdefault(Path(hit.payload["file_name"]).stem, float(hit.score))
        results[query_id] = Retrieved(documents=list(best.items()), contexts=[])
    means, _ = score_rankings(beir.queries, results, beir.qrels, settings)
    return {"seconds": round(seconds, 1), "chunks": len(nodes), "ndcg@10": round(means["ndcg@10"], 5)}


# --- the report ------------------------------------------------------------------------------------------


def _row_line(row: dict) -> str:
    ndcg = f", nDCG@10 {row['ndcg@10']:.5f}" if "ndcg@10" in row else ""
    return (f"{row['name']}: {row['seconds']:.1f}s, {row.get('chunks', '?')} chunks, "
            f"peak RSS {row['peak_rss_mb']} MB{ndcg}")


def _report(documents: int, rows: list[dict], baseline: dict, default: str, as_json: bool) -> None:
    main_row = rows[0]
    reference = next((r for r in rows if r["name"] == "ragops torch-unstructured"), None)
    llama = next((r for r in rows if r["name"].startswith("LlamaIndex")), None)
    targets = {"default build <= 1.0 x baseline encode": main_row["seconds"] <= baseline["seconds"]}
    if llama:
        targets[">= 2 x faster than LlamaIndex"] = llama["seconds"] >= 2 * main_row["seconds"]
    if reference:
        targets["nDCG@10 within 0.002 of unstructured + torch"] = abs(main_row["ndcg@10"] - reference["ndcg@10"]) \
            <= 0.002
    if as_json:
        print(json.dumps({"documents": documents, "runs": rows, "baseline": baseline, "targets": targets}))
        return
    print()
    print(f"SciFact, {documents} documents; baseline: raw torch fp32 encode of the {baseline['texts']} chunk "
          f"texts of `ragops {default}`")
    print("| run | seconds | x baseline encode | chunks | chunks/s | nDCG@10 | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for row in [*rows, baseline]:
        ndcg = f"{row['ndcg@10']:.5f}" if "ndcg@10" in row else "-"
        print(f"| {row['name']} | {row['seconds']:.1f} | {row['seconds'] / baseline['seconds']:.2f} | "
              f"{row['chunks']} | {row['chunks'] / row['seconds']:.1f} | {ndcg} | {row['peak_rss_mb']} |")
    for target, met in targets.items():
        print(f"target {target}: {'PASS' if met else 'FAIL'}")
    plain = next((r for r in rows if r["name"] == "ragops onnx"), None)
    for row in rows:
        if row.get("redact_seconds"):
            extra = f"; {row['seconds'] - plain['seconds']:+.1f} s wall vs `ragops onnx`" if plain else ""
            print(f"redaction in `{row['name']}`: {row['redact_seconds']:.1f} s for {row['documents']} documents = "
                  f"{1000 * row['redact_seconds'] / max(row['documents'], 1):.1f} ms a document "
                  f"({row['redacted']} values redacted){extra}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
