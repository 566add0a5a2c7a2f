"""The Retriever: search the live build through its alias, with the model that build was embedded with.

Example:
    >>> from rag.config import Settings
    >>> from rag.serving import Retriever
    >>> with Retriever.from_settings(Settings.load("ragops.yaml")) as retriever:
    ...     for hit in retriever.search("how do I roll back a promotion?", k=3):
    ...         print(f"{hit.score:.3f} {hit.doc_id} p.{hit.page} ({hit.version})")
    0.612 demo/operations-handbook.pdf p.2 (20261122-101500)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence

from rag.config import EmbeddingSettings, Settings, StoreSettings
from rag.embed.embedder import Embedder, load_embedder_for
from rag.errors import RagopsError, VersionError
from rag.models import Hit, Manifest
from rag.serving.batcher import EncodeBatcher
from rag.serving.querylog import QueryLogWriter
from rag.store import Condition, IndexStore, open_store
from rag.store.names import collection_name, version_of

log = logging.getLogger(__name__)

#: pinned builds (``version=``) kept open besides the live one; the least recently used is let go
PINNED_OPEN = 2
#: batch sizes a newly loaded model embeds once before it serves (concurrent queries form batches)
WARM_BATCHES = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class _Live:
    """What a search uses, swapped as one reference: one build, its manifest, and its model."""

    collection: str
    version: str
    manifest: Manifest
    embedder: Embedder


@dataclass(frozen=True)
class Switch:
    """One move of the alias that a Retriever followed: when it saw it, and when searches moved over."""

    version: str
    previous: str
    noticed_at: float
    switched_at: float


@dataclass(frozen=True)
class Answer:
    """Hits of one or more queries, all from one build and embedded with its model."""

    collection: str
    version: str
    manifest: Manifest
    hits: list[list[Hit]]
    truncated: list[bool]


class Retriever:
    """Searches whatever build the alias points at, following promotions and rollbacks made anywhere.

    A background thread reads the alias every ``follow_every`` seconds. When it has moved, the thread
    opens the new build, loads its model if it differs, warms both with one search, and only then
    switches: searches never wait for a build to open, each answer comes wholly from one build, and
    the answer names it. The previous build is let go one interval later (a search that started on it
    finishes on it), so the Retriever holds only the live build open (and, when asked for one by
    ``version``, up to two pinned builds).

    On the embedded store (Qdrant Edge) a Retriever blocks nobody: builds, promotions, rollbacks and
    every ``ragops`` command run beside it.
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
        query_log_sample: float = 1.0,
        query_log_queue: int = 1024,
        follow_every: float = 2.0,
        embedding: EmbeddingSettings | None = None,
        threads: int | None = None,
        passes: int = 1,
    ) -> None:
        """
        Args:
            alias: the serving alias (``Settings.alias``).
            store: a folder (embedded store), a server URL, or full ``StoreSettings`` (with an API key).
            device: torch device for query embeddings.
            batch_size: queries embedded per forward pass in ``search_many``.
            log_queries: record query embeddings (never their text) in the alias's query log, so
                ``ragops drift`` can tell when what users ask moves (``rag.serving.querylog``). Written by a
                background thread: a search never waits for it.
            query_log_max_age: logged embeddings older than this are deleted as new ones arrive.
            query_log_sample: the share of queries logged (0 to 1).
            query_log_queue: queries waiting to be logged at most; past it new ones are dropped and counted.
            follow_every: seconds between two reads of the alias (0 never follows: the build at opening).
            embedding: the backend and ONNX cache to query with (``embedding.backend``; default onnx).
                The model is always the one the live build records, not ``embedding.model``.
            threads: intra-op threads of the query encoder (None: one per core).
            passes: forward passes run at once (onnx backend), each on the thread of a search that
                leads it: a query arriving while another is embedded starts on a free core.

        Raises:
            StoreError / StoreLockedError: the store cannot be opened.
            VersionError: the alias does not exist.
        """
        settings = store if isinstance(store, StoreSettings) else StoreSettings(location=str(store))
        self.alias = alias
        self.device = device
        self.batch_size = batch_size
        self.follow_every = follow_every
        self.embedding = embedding or EmbeddingSettings()
        self.threads = threads
        self.passes = max(1, passes)
        self._opened = open_store(settings, create=False)
        self.store = self._opened.__enter__()
        self._store_lock = threading.Lock()  # one store, used by searches and the background threads
        self._pin_lock = threading.Lock()
        self._pinned: OrderedDict[str, _Live] = OrderedDict()
        self._encoders: dict[int, EncodeBatcher] = {}  # by id(embedder): concurrent queries share passes
        self._encoders_lock = threading.Lock()
        self._stop = threading.Event()
        self.switches: list[Switch] = []  # every followed move, oldest first (times are time.time())
        self.last_follow_error: str | None = None
        try:
            self._live = self._prepare(self.live_collection(), previous=None)
        except BaseException:
            self._opened.__exit__(None, None, None)
            raise
        self.query_log = (QueryLogWriter(settings, self.store, self._store_lock, alias, sample=query_log_sample,
                                         capacity=query_log_queue, max_age=query_log_max_age)
                          if log_queries else None)
        self._follower: threading.Thread | None = None
        if follow_every > 0:
            self._follower = threading.Thread(target=self._follow, name=f"follow-{alias}", daemon=True)
            self._follower.start()

    @classmethod
    def from_settings(cls, settings: Settings, *, log_queries: bool = False, **overrides: Any) -> Retriever:
        """The Retriever ``settings`` describe: its alias and store, the embedding backend and device,
        ``serve``'s encoder threads and follow interval, and, when ``log_queries``, the query log as
        ``serve.query_log_sample`` (0 logs none), ``serve.query_log_queue`` and ``drift.query_log_max_age``
        say.

        Args:
            settings: the loaded settings (``Settings.load()``).
            log_queries: this process records its queries for ``ragops drift`` (the query service does).
            overrides: constructor arguments that differ for this caller (``passes``, ``threads``, ...).

        Raises:
            StoreError / StoreLockedError: the store cannot be opened.
            VersionError: the alias does not exist.
        """
        serve = settings.serve
        arguments: dict[str, Any] = dict(
            alias=settings.alias, store=settings.store, device=settings.embedding.device,
            embedding=settings.embedding, threads=serve.threads, follow_every=serve.follow_every,
            log_queries=log_queries and serve.query_log_sample > 0, query_log_sample=serve.query_log_sample,
            query_log_queue=serve.query_log_queue, query_log_max_age=settings.drift.query_log_max_age,
        )
        return cls(**{**arguments, **overrides})

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop following, write what the query log holds, and close the store."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
        if self.query_log is not None:
            self.query_log.close()
        for encoder in self._encoders.values():
            encoder.close()
        with self._store_lock:
            self._opened.__exit__(None, None, None)

    @property
    def version(self) -> str:
        """The version answering searches now."""
        return self._live.version

    @property
    def manifest(self) -> Manifest:
        """The manifest of the build answering searches now."""
        return self._live.manifest

    @contextmanager
    def reading(self) -> Iterator[IndexStore]:
        """The store, for a read beside the searches (manifests, the ledger), under the Retriever's lock."""
        with self._store_lock:
            yield self.store

    def live_collection(self) -> str:
        """The collection the alias points at now, read from the store.

        Raises:
            VersionError: the alias does not exist.
        """
        with self._store_lock:
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
        return self.answer(texts, k).hits

    def answer(
        self, texts: Sequence[str], k: int = 5, *, where: Sequence[Condition] = (), version: str | None = None
    ) -> Answer:
        """Hits of each text, best first, from one build: the live one, or the kept build ``version``.

        Args:
            where: conditions every hit meets (``rag.store.Match``, ``Prefix``, ``Between`` on indexed fields).
            version: a complete build of this alias to answer from instead of the live one.

        Raises:
            ValueError: ``k`` below 1, or a text with a lone surrogate (not valid Unicode).
            VersionError: the alias has no complete build ``version``.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        for text in texts:  # a lone surrogate (from JSON's \\ud800 escapes) breaks the tokenizer
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"query {text[:40]!r}… holds a lone surrogate: it is not text") from None
        live = self._live if version in (None, self._live.version) else self._pin(version)
        vectors, tokens = self._encoder(live.embedder).embed(list(texts))
        if live is self._live and self.store.concurrent_searches:  # opened by _prepare, released an interval late
            results = self.store.search_many(live.collection, vectors, k, where=where)
        else:
            with self._store_lock:
                results = self.store.search_many(live.collection, vectors, k, where=where)
        if self.query_log is not None and live is self._live:
            self.query_log.offer(live.manifest.model, vectors)
        return Answer(
            collection=live.collection, version=live.version, manifest=live.manifest,
            hits=[[_hit(point, live.version) for point in points] for points in results],
            truncated=[count > live.embedder.max_tokens for count in tokens],
        )

    def _encoder(self, embedder: Embedder) -> EncodeBatcher:
        with self._encoders_lock:
            encoder = self._encoders.get(id(embedder))
            if encoder is None:
                encoder = self._encoders[id(embedder)] = EncodeBatcher(
                    embedder, lanes=self.passes if embedder.reentrant else 1)
            return encoder

    def _drop_unused_encoders(self) -> None:
        """Stop the batchers of models no open build uses any more (after a model migration)."""
        with self._pin_lock:  # no pin is being prepared meanwhile
            used = {id(self._live.embedder)} | {id(p.embedder) for p in self._pinned.values()}
            with self._encoders_lock:
                unused = [self._encoders.pop(key) for key in list(self._encoders) if key not in used]
        for encoder in unused:
            encoder.close()

    def _pin(self, version: str) -> _Live:
        """The kept build ``version``, opened (and its model loaded) on first use.

        Checked against the store at every use, not only the first: a build deleted since (by retention,
        by any process) is let go and answers no more, though this process still holds a snapshot of it.
        """
        collection = collection_name(self.alias, version)
        with self._pin_lock:
            pinned = self._pinned.get(version)
            if pinned is not None:
                with self._store_lock:  # one catalog read: ~7 us (docs/serving.md, "Pinned versions")
                    kept = self.store.exists(collection)
                if kept:
                    self._pinned.move_to_end(version)
                    return pinned
                self._let_go(version)
                raise self._unknown(version, "it was deleted")
            with self._store_lock:
                kept = collection in self.store.list_builds(self.alias)
                manifest = self.store.read_manifest(collection) if kept else None
            if manifest is None or manifest.state != "complete":
                raise self._unknown(version, f"it is {manifest.state}" if manifest else "no such build is kept")
            pinned = self._prepare(collection, previous=self._live)
            self._pinned[version] = pinned
            while len(self._pinned) > PINNED_OPEN:
                self._let_go(next(iter(self._pinned)))
            return pinned

    def _unknown(self, version: str, why: str) -> VersionError:
        return VersionError(f"alias {self.alias!r} has no complete version {version!r} ({why}); "
                            "`ragops status` lists the kept builds")

    def _let_go(self, version: str) -> None:
        """Stop holding the pinned build ``version`` open (under the pin lock): its snapshot goes, unless it
        is the live build."""
        dropped = self._pinned.pop(version)
        if dropped.collection != self._live.collection:
            with self._store_lock:
                self.store.release(dropped.collection)

    def _forget_deleted_pins(self) -> None:
        """Let go of pinned builds deleted from the store: on Edge this process's snapshot of one still holds
        its files (hard links), which must go with the build even when no request asks for it again."""
        with self._pin_lock:
            for version, pinned in list(self._pinned.items()):
                with self._store_lock:
                    kept = self.store.exists(pinned.collection)
                if not kept:
                    self._let_go(version)
                    log.info("build %s of alias %s was deleted: no longer answering for it", version, self.alias)

    def _follow(self) -> None:
        retired: str | None = None
        while not self._stop.wait(self.follow_every):
            if retired is not None:  # a search that began on it has had an interval to finish
                # Under the pin lock (no pin opens it meanwhile), not the store lock: closing a snapshot and
                # deleting its files took ~50 ms on an idle machine, which every search of the live build waited out.
                with self._pin_lock:
                    if retired not in {p.collection for p in self._pinned.values()}:
                        self.store.release(retired)
                self._drop_unused_encoders()
                retired = None
            try:
                self._forget_deleted_pins()
                target = self.live_collection()
                if target != self._live.collection:
                    noticed, previous = time.time(), self._live
                    with self._pin_lock:  # one preparation at a time: a pin may want the same build
                        self._live = self._prepare(target, previous=previous)
                    self.switches.append(Switch(self._live.version, previous.version, noticed, time.time()))
                    retired = previous.collection
                    log.info("alias %s moved: now serving %s (was %s)", self.alias, self._live.version,
                             previous.version)
                self.last_follow_error = None
            except RagopsError as exc:  # the store briefly unavailable, the alias gone: keep serving
                self.last_follow_error = str(exc)
                log.warning("following alias %s: %s; still serving %s", self.alias, exc, self._live.version)

    def _prepare(self, collection: str, previous: _Live | None) -> _Live:
        """Open ``collection`` and its model and warm both, without touching what searches use now."""
        with self._store_lock:
            manifest = self.store.read_manifest(collection)
            if manifest is None:
                raise VersionError(f"live collection {collection} has no ragops manifest; cannot tell its model")
            open_reader = self.store.prepare_reader(collection)
        # Outside the store lock: on Edge this copies and loads a snapshot (~100 ms), which every search
        # of the live build would otherwise wait out at each promotion or rollback.
        open_reader()
        if previous is not None and previous.embedder.fingerprint.same_space(manifest.model):
            embedder = previous.embedder
        else:
            log.info("loading the model of build %s", manifest.version)
            embedder = load_embedder_for(
                manifest.model, backend=self.embedding.backend, batch_size=self.batch_size, device=self.device,
                threads=self.threads, onnx_cache=self.embedding.onnx_cache,
            )
        encoder = self._encoder(embedder)  # the batcher: one thread at a time uses the tokenizer
        if embedder is not (previous.embedder if previous else None):
            for size in WARM_BATCHES:  # the first pass at each batch shape is slow; serve none of them
                encoder.embed([f"warm up query number {n}" for n in range(size)])
        warm, _ = encoder.embed(["warm up"])
        with self._store_lock:
            self.store.search_many(collection, warm, 1)
        return _Live(collection=collection, version=version_of(collection), manifest=manifest, embedder=embedder)


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
