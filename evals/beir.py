"""BEIR-format datasets: load one, index it through the build pipeline, and score it.

A BEIR dataset is a folder with ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header
line). Line endings may be LF or CRLF.

Three steps, which ``ragops bench beir`` (ragops/cli/bench.py) runs in order, with the configured
model and a store of its own:

- ``load_beir`` reads the folder and one split of its judgements into a ``BeirDataset``;
- ``index_beir`` embeds one vector per document, ``title + " " + text`` truncated at the model's
  ``max_seq_length`` (256 tokens for all-MiniLM-L6-v2), exactly as MTEB does, so the figures are
  comparable with MTEB's published ones. The vectors go into a new, complete build collection through
  the same ``IndexStore`` calls as a reindex;
- ``evaluate_beir`` scores the judged queries with the same ``evals.evaluate`` functions as a golden
  set, into an ``EvaluationReport``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from evals.evaluate import retrieve, score_rankings
from evals.models import EvaluationReport
from rag.config import EvaluationSettings
from rag.embed.embedder import Embedder
from rag.errors import GoldenSetError
from rag.index.versions import new_version
from rag.models import Chunk, Counts, EvaluationRecord, Manifest, utc_now
from rag.store import IndexStore
from rag.store.names import collection_name, docs_collection, version_of

log = logging.getLogger(__name__)

#: documents embedded and written per batch (progress is reported per batch)
BATCH = 256


@dataclass
class BeirDataset:
    """A BEIR dataset's split: the corpus, the queries that have judgements, and the judgements."""

    name: str
    path: Path
    corpus: dict[str, str]  # doc id => title + " " + text
    queries: dict[str, str]  # query id => text (only queries judged in the split)
    qrels: dict[str, dict[str, int]]  # query id => {doc id: relevance}


def load_beir(path: Path | str, split: str = "test") -> BeirDataset:
    """Read a BEIR dataset folder and one split of its judgements.

    Raises:
        GoldenSetError: a file is missing or a line is malformed (named with its line number).
    """
    root = Path(path)
    qrels_file = root / "qrels" / f"{split}.tsv"
    for required in (root / "corpus.jsonl", root / "queries.jsonl", qrels_file):
        if not required.is_file():
            splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
            raise GoldenSetError(
                f"{required} does not exist; a BEIR dataset has corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
                + (f" (splits here: {', '.join(splits)})" if splits else "")
            )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open(encoding="utf-8", newline="") as handle:  # csv handles LF and CRLF alike
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (number == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # blank line, or the header
            try:
                query_id, doc_id, score = (cell.strip() for cell in row)
                qrels.setdefault(query_id, {})[doc_id] = int(score)
            except ValueError:
                raise GoldenSetError(f"{qrels_file}, line {number}: expected query-id, corpus-id, score") from None
    corpus = {
        str(doc["_id"]): f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()
        for doc in _jsonl(root / "corpus.jsonl")
    }
    all_queries = {str(q["_id"]): str(q["text"]) for q in _jsonl(root / "queries.jsonl")}
    unknown = [qid for qid in qrels if qid not in all_queries]
    if unknown:
        raise GoldenSetError(f"{qrels_file} judges queries missing from queries.jsonl: {', '.join(unknown[:5])}")
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(name=root.name, path=root, corpus=corpus, queries=queries, qrels=qrels)


def index_beir(
    store: IndexStore, alias: str, dataset: BeirDataset, embedder: Embedder,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Write one vector per document into a new, complete build of ``alias``; returns its manifest."""
    version = new_version(store, alias)
    manifest = Manifest(
        alias=alias, version=version, collection=collection_name(alias, version), created_at=utc_now(),
        model=embedder.fingerprint, chunking={"mode": "one vector per document", "max_tokens": embedder.max_tokens},
        sources=[{"name": dataset.name, "kind": "beir", "uri": dataset.path.resolve().as_uri()}],
    )
    store.create_build(manifest)
    ids = list(dataset.corpus)
    uri = (dataset.path / "corpus.jsonl").resolve().as_uri()
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        chunks = [Chunk(doc_id=doc_id, chunk_index=0, text=dataset.corpus[doc_id], source_uri=f"{uri}#{doc_id}",
                        source=dataset.name) for doc_id in batch]
        store.upsert_chunks(manifest.collection, chunks, embedder.embed([c.text for c in chunks]))
        if progress:
            progress(start + len(batch), len(ids))
    status = store.finish_bulk_load(manifest.collection)
    store.sync(manifest.collection)
    store.sync(docs_collection(manifest.collection))
    manifest.counts = Counts(documents_seen=len(ids), documents_indexed=len(ids), documents_new=len(ids),
                             chunks=len(ids), chunks_embedded=len(ids))
    manifest.state, manifest.completed_at = ("complete" if status == "green" else "failed"), utc_now()
    store.write_manifest(manifest)
    return manifest


def evaluate_beir(
    store: IndexStore, collection: str, dataset: BeirDataset, settings: EvaluationSettings, embedder: Embedder
) -> EvaluationReport:
    """Score a build on the dataset's judged queries with the same metrics as a golden set."""
    started = time.perf_counter()
    results = retrieve(store, collection, list(dataset.queries.values()), embedder, settings.search_depth)
    means, rows = score_rankings(dataset.queries, dict(zip(dataset.queries, results)), dataset.qrels, settings)
    record = EvaluationRecord(
        version=version_of(collection), golden=str(dataset.path), golden_sha256="", queries=len(rows),
        query_model=embedder.fingerprint.label,
        metrics=means, evaluated_at=utc_now(), seconds=round(time.perf_counter() - started, 3),
    )
    return EvaluationReport(collection=collection, record=record, per_query=rows)


def _jsonl(file: Path):
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise GoldenSetError(f"{file}, line {number}: not valid JSON ({exc.msg})") from None
