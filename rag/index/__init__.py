"""The index room: an alias's builds, from what to build to the alias that serves one.

- ``plan``: pure planning from listings and the base's document table: what to carry, (re)process or
  delete, which build to start from, when to retry a failure;
- ``build``: a build's life: plan against the store, begin, carry unchanged documents, finish or fail;
- ``batches``: a batch of work: fetch, parse, redact, chunk, embed the cache misses, write points and records;
- ``progress``: what a running build reports: batch reports, running totals, the progress line;
- ``versions``: the gate's verdict on a candidate, promotion (compare-and-swap), rollback, retention;
- ``result``: a run's result, pure: counts, outcome after the gate, summary, refusal;
- ``freshness``: per-source freshness from listings and the live build's document table;
- ``cache``: the embedding cache (model fingerprint + chunk text hash -> vector) and its pruning;
- ``journal``: documents being parsed, so a version that runs died on is quarantined, not retried forever;
- ``audit``: the append-only audit trail per alias.

Nothing here loads a model or imports unstructured, torch or a Qdrant client: the store and the model
are handed in (``rag.store.open_store``, ``rag.embed.load_embedder``).

The public names below are imported from their module on first use: importing one module of the room
(serving imports ``rag.index.versions``) then loads neither the others nor the ingest room they use.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the public names, by the module of this room that defines each
_HOMES = {
    "plan": ("BuildPlan", "explain", "plan_build", "WorkItem"),
    "build": ("begin_build", "carry_documents", "fail_build", "failing_on_error", "finish_build", "plan_against_store",
              "StartingPoint"),
    "batches": ("index_batches", "prepare_batch", "PreparedBatch", "write_batch"),
    "progress": ("BatchReport", "BuildProgress"),
    "versions": ("apply_retention", "list_versions", "promote", "promote_version", "record_verdict", "rollback"),
    "result": ("Outcome",),
    "freshness": ("read_freshness", "record_freshness"),
    "cache": ("EmbeddingCache", "prune_caches"),
    "journal": ("ParseJournal",),
    "audit": ("read_trail",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME, key=str.lower)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rag.index.{_HOME[name]}"), name)
    globals()[name] = value
    return value
