"""A small complete build made by hand (real points, vectors written directly: no model, no Prefect), for
tests of what happens around builds: promotion, rollback, retention, drift, the store's history."""

from __future__ import annotations

import numpy as np

from rag.index import build
from rag.index.progress import BuildProgress
from rag.models import Chunk, Counts, Manifest, ModelFingerprint, utc_now
from rag.store import IndexStore
from rag.store.names import collection_name

#: the model hand-made builds claim: 4 dimensions, no weights anywhere
FINGERPRINT = ModelFingerprint(
    name="test", path="/nowhere", weights_sha256="0" * 64, dimension=4, normalize=True, dtype="float32",
    max_seq_length=16,
)


def complete_build(store: IndexStore, alias: str, version: str, chunks: int = 2) -> str:
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
    progress = BuildProgress(counts=Counts(documents_seen=chunks, documents_indexed=chunks, chunks=chunks))
    build.finish_build(store, manifest, progress)
    return manifest.collection
