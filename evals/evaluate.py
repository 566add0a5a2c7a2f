"""Measure a build's retrieval on a golden set: embed the queries, search the build, score the rankings.

Stages, kept apart as in sentence-transformers' InformationRetrievalEvaluator:

1. ``retrieve``: embed queries and take the top ``search_depth`` chunks of each from one collection.
   Chunks map to their documents, and a document ranks by its best chunk (its score is that chunk's).
2. ``score_rankings``: pure; rankings + judgements in, the IR metrics of ``evals.metrics`` (trec_eval
   definitions) and RAGAS' context metrics out, per query and averaged.
3. ``evaluate_build``: a golden set against one build, resolved against the build's document table,
   with the LLM-judged metrics when an endpoint is configured. It reads the store and never writes.

Queries are embedded with ``query_embedder``'s choice: ``evaluation.query_model`` when set (the model
your applications embed queries with), else the model the build's manifest records (as ``rag.serving``
does). A build embedded with another model than its queries then scores as badly as it would serve.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from evals.context_metrics import ContextSample, score_contexts
from evals.golden import GoldenSet, resolve_qrels
from evals.metrics import compute_metrics, rank
from evals.models import EvaluationReport, QueryResult
from rag.config import HEADLINE_METRICS, EmbeddingSettings, EvaluationSettings
from rag.embed.embedder import Embedder, load_embedder, load_embedder_for
from rag.errors import VersionError
from rag.models import EvaluationRecord, Manifest, utc_now
from rag.store import IndexStore
from rag.store.names import version_of

log = logging.getLogger(__name__)

#: per-query rows list this many retrieved documents
SHOWN_DOCUMENTS = 10


@dataclass
class Retrieved:
    """What one query retrieved from a build."""

    documents: list[tuple[str, float]]  # (doc id, best chunk score), best first
    contexts: list[str] = field(default_factory=list)  # chunk texts, best first


def retrieve(
    store: IndexStore, collection: str, texts: Sequence[str], embedder: Embedder, depth: int, contexts: int = 0
) -> list[Retrieved]:
    """Embed ``texts`` and search ``collection``; each query's documents ranked by their best chunk.

    Args:
        depth: chunks retrieved per query (documents beyond them are not ranked at all).
        contexts: how many top chunk texts to keep per query (for text-based metrics).
    """
    vectors = embedder.embed(list(texts))
    fields = ["doc_id", "text"] if contexts else ["doc_id"]
    results = []
    # Exact: metrics must not depend on the index's approximation (serving uses the index).
    for hits in store.search_many(collection, vectors, depth, payload=fields, exact=True):
        best: dict[str, float] = {}
        for hit in hits:  # best first: the first chunk of a document is its best
            best.setdefault((hit.payload or {}).get("doc_id", str(hit.id)), float(hit.score))
        texts_kept = [(hit.payload or {}).get("text", "") for hit in hits[:contexts]]
        results.append(Retrieved(documents=list(best.items()), contexts=texts_kept))
    return results


def score_rankings(
    queries: Mapping[str, str],
    retrieved: Mapping[str, Retrieved],
    qrels: Mapping[str, Mapping[str, int]],
    settings: EvaluationSettings,
    reference_contexts: Mapping[str, list[str] | None] | None = None,
) -> tuple[dict[str, float], list[QueryResult]]:
    """Every metric per query and its mean over the queries that have one.

    Returns:
        (means, per-query rows). IR metrics are averaged over queries with a relevant document (all of
        a golden set's); a RAGAS metric over the queries it applies to.
    """
    ranked = {qid: r.documents for qid, r in retrieved.items()}
    ir = compute_metrics(ranked, qrels, settings.k_values)
    scored = list(ir["per_query"])
    rankings = {qid: rank(retrieved[qid].documents) for qid in scored}  # the order the metrics saw
    samples = []
    for qid in scored:
        top_docs = rankings[qid][: settings.context_k]
        relevant = [doc for doc, grade in qrels[qid].items() if grade >= 1]
        references = (reference_contexts or {}).get(qid)
        samples.append(ContextSample(top_docs, relevant, retrieved[qid].contexts[: settings.context_k], references))
    ragas_rows = score_contexts(samples) if samples else []

    rows = []
    for qid, ragas_row in zip(scored, ragas_rows):
        metrics: dict[str, float | None] = {**ir["per_query"][qid], **ragas_row}
        rows.append(
            QueryResult(query_id=qid, query=queries.get(qid, ""), relevant=dict(qrels[qid]),
                        retrieved=rankings[qid][:SHOWN_DOCUMENTS], metrics=metrics)
        )
    return mean_metrics(rows), rows


def mean_metrics(rows: Sequence[QueryResult]) -> dict[str, float]:
    """Mean of each metric over the rows where it is not None (metrics with no value are left out)."""
    names = dict.fromkeys(name for row in rows for name in row.metrics)
    means = {}
    for name in names:
        values = [value for row in rows if (value := row.metrics.get(name)) is not None]
        if values:
            means[name] = sum(values) / len(values)
    return means


def evaluate_build(
    store: IndexStore,
    collection: str,
    golden: GoldenSet,
    settings: EvaluationSettings,
    embedder: Embedder,
    *,
    strict: bool = True,
) -> EvaluationReport:
    """Score one build (a collection or an alias) on a golden set. Reads only.

    Args:
        embedder: the query model (see ``query_embedder``).
        strict: refuse a golden set naming documents the build does not serve (``resolve_qrels``).

    Raises:
        GoldenSetError: (strict) the golden set names documents the build does not serve.
        VersionError: the collection does not exist.
    """
    started = time.perf_counter()
    records = store.read_records(collection)
    qrels, missing = resolve_qrels(golden, records, strict=strict)
    queries = {q.id: q.query for q in golden.queries}
    results = retrieve(store, collection, list(queries.values()), embedder, settings.search_depth,
                       contexts=settings.context_k)
    retrieved = dict(zip(queries, results))
    references = {q.id: q.reference_contexts for q in golden.queries}
    means, rows = score_rankings(queries, retrieved, qrels, settings, references)

    advisory: dict[str, float] = {}
    if settings.llm is not None:
        from evals.judge import JudgeSample, judge

        samples = [
            JudgeSample(q.id, q.query, retrieved[q.id].contexts[: settings.context_k], q.reference_answer)
            for q in golden.queries
        ]
        judged = judge(samples, settings.llm, embedder.embed)
        for row in rows:
            row.metrics.update(judged.get(row.query_id, {}))
        advisory = {name: value for name, value in mean_metrics(rows).items() if name not in means}

    fingerprint = embedder.fingerprint
    record = EvaluationRecord(
        version=version_of(collection),
        golden=golden.path,
        golden_sha256=golden.sha256,
        queries=len(rows),
        query_model=fingerprint.label,
        metrics=means,
        advisory=advisory,
        evaluated_at=utc_now(),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "evaluated %s on %d golden queries: %s", version_of(collection), len(rows),
        ", ".join(f"{name} {means[name]:.4f}" for name in HEADLINE_METRICS if name in means),
    )
    return EvaluationReport(collection=collection, record=record, per_query=rows, missing=missing)


class QueryEmbedders:
    """The query model for each build, loaded once per vector space (models take seconds to load).

    Args:
        settings: the evaluation settings (``query_model``).
        embedding: the embedding settings (device, batch size, dtype for ``query_model``).
        loaded: an embedder already in memory (the build's), reused when it is the one needed.
    """

    def __init__(self, settings: EvaluationSettings, embedding: EmbeddingSettings, loaded: Embedder | None = None):
        self.settings = settings
        self.embedding = embedding
        self._loaded = [loaded] if loaded is not None else []

    def for_build(self, manifest: Manifest | None) -> Embedder:
        """The model to embed queries for this build with."""
        if self.settings.query_model:
            wanted = self.embedding.model_copy(update={"model": self.settings.query_model})
            for embedder in self._loaded:
                if embedder.fingerprint.name == wanted.model:
                    return embedder
            embedder = load_embedder(wanted)
        else:
            if manifest is None:
                raise VersionError("the build has no ragops manifest, so its model is unknown; set "
                                   "evaluation.query_model")
            for embedder in self._loaded:
                if embedder.fingerprint.same_space(manifest.model):
                    return embedder
            embedder = load_embedder_for(manifest.model, backend=self.embedding.backend,
                                         batch_size=self.embedding.batch_size, device=self.embedding.device,
                                         onnx_cache=self.embedding.onnx_cache)
        self._loaded.append(embedder)
        return embedder
