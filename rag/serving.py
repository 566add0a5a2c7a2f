"""Serving: search the live build through its alias, with the model that build was embedded with.

Example:
    >>> from rag.serving import Retriever
    >>> with Retriever(alias="docs", store=".ragops/qdrant") as retriever:
    ...     for hit in retriever.search("how do I roll back a promotion?", k=3):
    ...         print(f"{hit.score:.3f} {hit.doc_id} p.{hit.page} ({hit.version})")
    0.612 demo/operations-handbook.pdf p.2 (20261122-101500)
"""

from __future__ import annotations

import logging
from datetime import timedelta

from rag.config import StoreSettings
from rag.embedding import Embedder, load_embedder_for
from rag.errors import VersionError
from rag.models import Hit
from rag.names import version_of
from rag.querylog import QueryLog
from rag.store import IndexStore

log = logging.getLogger(__name__)


class Retriever:
    """Searches whatever build the alias points at, following promotions and rollbacks.

    Each ``search`` resolves the alias first and then queries that collection, so one answer comes from
    exactly one build and names it. If the alias has moved to a build embedded with a different model,
    the model is reloaded from the new build's manifest: queries never land in the wrong vector space.

    An embedded store is locked while a Retriever is open: close it (or use ``with``) before a reindex,
    or serve from a Qdrant server.
    """

    def __init__(
        self,
        alias: str,
        store: str | StoreSettings = ".ragops/qdrant",
        *,
        device: str = "cpu",
        batch_size: int = 32,
        log_queries: bool = False,
        query_log_max_age: timedelta = timedelta(days=30),
    ) -> None:
        """
        Args:
            alias: the serving alias (``Settings.alias``).
            store: a folder (embedded Qdrant), a server URL, or full ``StoreSettings`` (with an API key).
            device: torch device for query embeddings.
            batch_size: queries embedded per forward pass in ``search_many``.
            log_queries: record each query's embedding (not its text) in the alias's query log, so
                ``ragops drift`` can tell when what users ask moves (``rag.querylog``).
            query_log_max_age: logged embeddings older than this are deleted as new ones arrive.

        Raises:
            StoreError / StoreLockedError: the store cannot be opened.
        """
        settings = store if isinstance(store, StoreSettings) else StoreSettings(location=str(store))
        self.alias = alias
        self.device = device
        self.batch_size = batch_size
        self.log_queries = log_queries
        self.query_log_max_age = query_log_max_age
        self._opened = IndexStore.open(settings)
        self.store = self._opened.__enter__()
        self._embedder: Embedder | None = None
        self._embedder_collection: str | None = None  # builds never change model: cache per collection

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store (releases an embedded store's lock)."""
        self._opened.__exit__(None, None, None)

    def live_collection(self) -> str:
        """The collection the alias points at now.

        Raises:
            VersionError: the alias does not exist.
        """
        target = self.store.alias_target(self.alias)
        if target is None:
            raise VersionError(
                f"alias {self.alias!r} does not exist in {self.store.location}; run `ragops reindex` first "
                "(or check --alias and --store)"
            )
        return target

    def search(self, text: str, k: int = 5) -> list[Hit]:
        """The ``k`` chunks nearest to ``text`` in the live build, best first."""
        return self.search_many([text], k)[0]

    def search_many(self, texts: list[str], k: int = 5) -> list[list[Hit]]:
        """``search`` for several queries at once, all answered by the same build."""
        if k < 1:
            raise ValueError("k must be at least 1")
        collection = self.live_collection()
        embedder = self._embedder_for(collection)
        vectors = embedder.embed(texts)
        if self.log_queries:
            QueryLog(self.store, self.alias, embedder.fingerprint).record(vectors, max_age=self.query_log_max_age)
        version = version_of(collection)
        results = []
        for vector in vectors:
            points = self.store.search(collection, vector, k)
            results.append([_hit(point, version) for point in points])
        return results

    def _embedder_for(self, collection: str) -> Embedder:
        if self._embedder is not None and collection == self._embedder_collection:
            return self._embedder
        manifest = self.store.read_manifest(collection)
        if manifest is None:
            raise VersionError(f"live collection {collection} has no ragops manifest; cannot tell its model")
        if self._embedder is None or not self._embedder.fingerprint.same_space(manifest.model):
            log.info("loading the model of build %s", manifest.version)
            self._embedder = load_embedder_for(manifest.model, batch_size=self.batch_size, device=self.device)
        self._embedder_collection = collection
        return self._embedder


def _hit(point, version: str) -> Hit:
    payload = point.payload or {}
    return Hit(
        score=float(point.score),
        doc_id=payload.get("doc_id", ""),
        source_uri=payload.get("source_uri", ""),
        chunk_index=int(payload.get("chunk_index", 0)),
        title=payload.get("title"),
        page=payload.get("page"),
        text=payload.get("text", ""),
        version=version,
    )
