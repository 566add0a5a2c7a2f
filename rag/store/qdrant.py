"""The index store on qdrant-client: a Qdrant server or cluster, or a local-mode folder.

The server backend of ``rag.store.IndexStore``. Qdrant errors are translated into ``StoreError``s here
and nowhere else (``store_errors``); only the backend's own errors are, so a bug keeps its traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from rag.config import StoreSettings
from rag.errors import AliasConflictError, StoreError, StoreLockedError, VersionError
from rag.failpoints import failpoint
from rag.models import Chunk, Manifest
from rag.secrets import mask, redact_url
from rag.store.base import (
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    Between,
    Condition,
    IndexStore,
    Match,
    Point,
    Prefix,
    Row,
    parse_manifest,
)
from rag.store.names import docs_collection, record_id

log = logging.getLogger(__name__)

#: key under which the manifest lives in a collection's metadata
MANIFEST_KEY = "ragops_manifest"
#: HNSW graph degree restored after a bulk load (Qdrant's default)
HNSW_M = 16


class QdrantStore(IndexStore):
    """Builds as Qdrant collections, each carrying its ``Manifest`` in the collection metadata; aliases
    are Qdrant aliases; tables are side collections. A server, or a folder in qdrant-client's local mode
    (one process at a time; the server API's stand-in in tests).
    """

    def __init__(self, settings: StoreSettings) -> None:
        """Connect to the server or open the local-mode folder of ``settings`` (see ``connect``)."""
        self.client = connect(settings)
        # A server's client is thread-safe (HTTP); qdrant-client's local mode is not.
        self.concurrent_searches = settings.is_remote
        #: where the store is, for messages and logs: a server URL's password is redacted
        self.location = redact_url(settings.location)
        self._settings = settings
        self._tuned: set[int] = set()
        self.tune_embedded()

    def tune_embedded(self) -> None:
        """Make an embedded store's per-collection SQLite files write in WAL mode.

        Why: qdrant-client's local mode commits every point in its own transaction, and with SQLite's
        default rollback journal each commit is an fsync: ~240 points/s on this machine's disk. With
        ``journal_mode=WAL`` and ``synchronous=NORMAL``, each commit stays atomic and survives a killed
        process; only a power loss can drop the latest commits (never corrupt). We measured ~1,800
        points/s. ``sync()`` forces a full checkpoint before a build is recorded as complete, so
        "complete" is always on disk. This reaches into qdrant-client's private attributes (pinned at
        1.20.0); if they move, the getattr chain finds nothing and the defaults stay: slower, not wrong.
        A server store has nothing to tune.
        """
        for connection in self._embedded_connections():
            if id(connection) in self._tuned:
                continue
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._tuned.add(id(connection))

    def sync(self, collection: str) -> None:
        """Make everything written to an embedded collection durable (a full WAL checkpoint, fsynced)."""
        for name, connection in self._embedded_connections(with_names=True):
            if name == collection:
                connection.execute("PRAGMA wal_checkpoint(FULL)")

    def _embedded_connections(self, with_names: bool = False):
        local = getattr(self.client, "_client", None)
        for name, collection in (getattr(local, "collections", None) or {}).items():
            connection = getattr(getattr(collection, "storage", None), "storage", None)
            if connection is not None:
                yield (name, connection) if with_names else connection

    def close(self) -> None:
        """Release the client (and, for an embedded store, its folder lock)."""
        try:
            self.client.close()
        except Exception as exc:  # closing must not hide the error that brought us here
            log.warning("closing the store at %s failed: %s", self.location, _first_line(exc))

    def layout(self) -> dict:
        """Sharding and replication for every collection ragops creates (``create_collection`` kwargs)."""
        settings = self._settings
        return {"replication_factor": settings.replication_factor, "shard_number": settings.shard_number,
                "write_consistency_factor": settings.write_consistency_factor}

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give up an embedded store's folder lock for a ``with`` block (a long wait), then take it back.

        Others (a Retriever, ``ragops status``) can open the store meanwhile. A server store is left
        as it is. Alias moves after the block stay compare-and-swap, so a move made meanwhile is caught.

        Raises:
            StoreLockedError: the store is still held by someone else when the block ends.
        """
        if self._settings.is_remote:
            yield
            return
        self.close()
        try:
            yield
        finally:
            self.client = connect(self._settings)
            self._tuned.clear()
            self.tune_embedded()

    # --- collections -------------------------------------------------------------------------------

    def collection_names(self) -> list[str]:
        """Every collection in the store."""
        with store_errors(f"listing collections in {self.location}"):
            return [c.name for c in self.client.get_collections().collections]

    def exists(self, collection: str) -> bool:
        """True when the collection exists."""
        with store_errors(f"checking collection {collection}"):
            return self.client.collection_exists(collection)

    def create_build(self, manifest: Manifest) -> None:
        """Create the empty collection of a new build, its manifest in the metadata.

        HNSW indexing is deferred (m=0) while the build loads; ``finish_bulk_load`` restores it.

        Raises:
            VersionError: the collection already exists (builds are never overwritten).
        """
        if self.exists(manifest.collection):
            raise VersionError(f"collection {manifest.collection} already exists; builds are never overwritten")
        with store_errors(f"creating collection {manifest.collection}"):
            self.client.create_collection(
                manifest.collection,
                vectors_config=models.VectorParams(
                    size=manifest.model.dimension, distance=models.Distance.COSINE, on_disk=True
                ),
                hnsw_config=models.HnswConfigDiff(m=0),
                metadata={MANIFEST_KEY: manifest.model_dump(mode="json")},
                **self.layout(),
            )
            self._create_table(docs_collection(manifest.collection))
            if self._settings.is_remote:  # local mode has no payload indexes
                for field in KEYWORD_FIELDS:
                    schema = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, prefix=field == "doc_id")
                    self.client.create_payload_index(manifest.collection, field, field_schema=schema)
                for field in INTEGER_FIELDS:
                    self.client.create_payload_index(manifest.collection, field,
                                                     field_schema=models.PayloadSchemaType.INTEGER)
        self.tune_embedded()

    def finish_bulk_load(self, collection: str, *, timeout: float = 600) -> str:
        """Restore HNSW indexing after a bulk load and wait until the collection is green.

        Returns:
            The collection status at the end ("green" unless the timeout passed).
        """
        with store_errors(f"updating collection {collection}"):
            self.client.update_collection(collection, hnsw_config=models.HnswConfigDiff(m=HNSW_M))
        deadline = time.monotonic() + timeout
        status = self.status(collection)
        while status != "green" and time.monotonic() < deadline:
            time.sleep(0.5)
            status = self.status(collection)
        return status

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace a build's manifest in its collection metadata."""
        with store_errors(f"writing the manifest of {manifest.collection}"):
            self.client.update_collection(
                manifest.collection, metadata={MANIFEST_KEY: manifest.model_dump(mode="json")}
            )

    def read_manifest(self, collection: str) -> Manifest | None:
        """The manifest of a build, or None when the collection has none (not made by ragops).

        Raises:
            VersionError: the collection does not exist.
        """
        info = self._info(collection)
        return parse_manifest((info.config.metadata or {}).get(MANIFEST_KEY), collection)

    def status(self, collection: str) -> str:
        """Qdrant's optimisation status of the collection: green, yellow, grey or red."""
        status = self._info(collection).status
        return getattr(status, "value", str(status))

    def count(self, collection: str) -> int:
        """Exact number of points in the collection."""
        with store_errors(f"counting points in {collection}"):
            return self.client.count(collection, exact=True).count

    def _remove_build(self, collection: str, records: Sequence[tuple[str, Row]]) -> None:
        """Delete a build: its document table first, its collection last; then write ``records`` (a server
        has no transaction spanning them: a kill right after the deletion loses them, and a failure to
        write them is logged, not raised, since the deletion happened).

        Why this order: two requests cannot be atomic, and a process killed between them must leave
        something retention finds again. A build whose table went first is still a collection named
        like a build, so ``list_builds`` lists it and the next retention deletes the rest. The other
        order would leave a ``__docs`` table that nothing lists (``orphan_tables`` finds those, for
        stores that a version deleting in that order left behind).
        """
        with store_errors(f"deleting collection {collection}"):
            if self.client.collection_exists(docs_collection(collection)):
                self.client.delete_collection(docs_collection(collection))
            failpoint("retention")
            self.client.delete_collection(collection)
        failpoint("deleted")
        for table, row in records:
            try:
                self.put_rows(table, [row])
            except StoreError as exc:
                log.error("deleted %s, but could not write its record to %s: %s", collection, table, exc)

    def upsert_chunks(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Write chunks and their vectors; idempotent (point ids derive from document id + position)."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            return
        points = [
            models.PointStruct(id=chunk.point_id, vector=vector.tolist(), payload=chunk.payload())
            for chunk, vector in zip(chunks, vectors)
        ]
        with store_errors(f"writing {len(points)} points to {collection}"):
            self.client.upload_points(collection, points, batch_size=256, max_retries=3, wait=True)

    def write_points(self, collection: str, points: Sequence[Point]) -> None:
        structs = [models.PointStruct(id=p.id, vector=p.vector.tolist(), payload=p.payload) for p in points]
        with store_errors(f"writing {len(structs)} points to {collection}"):
            self.client.upload_points(collection, structs, batch_size=256, max_retries=3, wait=True)

    def copy_points(self, source: str, target: str, point_ids: Sequence[str]) -> int:
        """Copy points (vectors and payloads) between builds; returns how many were found and copied."""
        copied = 0
        for start in range(0, len(point_ids), 512):
            ids = list(point_ids[start : start + 512])
            with store_errors(f"reading {len(ids)} points from {source}"):
                records = self.client.retrieve(source, ids, with_payload=True, with_vectors=True)
            points = [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records]
            with store_errors(f"writing {len(points)} points to {target}"):
                self.client.upload_points(target, points, batch_size=256, max_retries=3, wait=True)
            copied += len(points)
        return copied

    # --- tables: rows keyed by a string, with a payload and (in vector tables) a vector -------------
    # The embedding cache, query log, parse journal, ledger, locks and document tables are tables.

    def put_rows(self, table: str, rows: Sequence[Row], *, dimension: int | None = None) -> None:
        """Write rows (replacing rows with the same key), durably, creating the table if needed.

        Args:
            dimension: the table holds vectors of this size (every row then carries one).
        """
        if not rows:
            return
        if dimension is None:
            self._create_table(table)
        else:
            self.ensure_vector_collection(table, dimension, on_disk=True)
        points = [models.PointStruct(id=record_id(r.key), payload=r.payload,
                                     vector={} if r.vector is None else r.vector.tolist()) for r in rows]
        with store_errors(f"writing {len(points)} rows to {table}"):
            self.client.upload_points(table, points, batch_size=256, max_retries=3, wait=True)

    def get_rows(self, table: str, keys: Sequence[str], *, vectors: bool = False) -> dict[str, Point]:
        """The rows of ``keys`` that exist (missing keys are absent from the result)."""
        if not keys or not self.exists(table):
            return {}
        by_id = {record_id(key): key for key in keys}
        found: dict[str, Point] = {}
        ids = list(by_id)
        for start in range(0, len(ids), 1024):
            with store_errors(f"reading {table}"):
                records = self.client.retrieve(table, ids[start : start + 1024], with_payload=True,
                                               with_vectors=vectors)
            found.update((by_id[str(r.id)], _point(r)) for r in records)
        return found

    def delete_rows(self, table: str, keys: Sequence[str]) -> None:
        """Delete the rows of ``keys`` (absent ones are ignored)."""
        if not keys or not self.exists(table):
            return
        ids = [record_id(key) for key in keys]
        for start in range(0, len(ids), 1024):
            with store_errors(f"deleting rows of {table}"):
                self.client.delete(table, models.PointIdsList(points=ids[start : start + 1024]), wait=True)

    def scan_rows(self, table: str, *, vectors: bool = False, fields: bool | list[str] = True) -> Iterator[Point]:
        """Every row of a table (none when it does not exist), page by page."""
        if not self.exists(table):
            return
        offset = None
        while True:
            with store_errors(f"reading {table}"):
                page, offset = self.client.scroll(table, limit=1024, offset=offset, with_payload=fields,
                                                  with_vectors=vectors)
            yield from (_point(p) for p in page)
            if offset is None:
                return

    def drop_table(self, table: str) -> int:
        """Delete a whole table; returns how many rows it held (0 when it did not exist)."""
        if not self.exists(table):
            return 0
        rows = self.count(table)
        with store_errors(f"deleting {table}"):
            self.client.delete_collection(table)
        return rows

    def ensure_vector_collection(self, name: str, dimension: int, *, on_disk: bool = False) -> None:
        """Create a side collection of plain vectors (looked up by id or read in order, never searched,
        so without an HNSW graph) unless it exists."""
        if self.exists(name):
            return
        with store_errors(f"creating collection {name}"):
            self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE, on_disk=on_disk),
                hnsw_config=models.HnswConfigDiff(m=0),
                **self.layout(),
            )
        self.tune_embedded()

    def _create_table(self, name: str) -> None:
        with store_errors(f"creating collection {name}"):
            if not self.client.collection_exists(name):
                self.client.create_collection(name, vectors_config={}, **self.layout())
        self.tune_embedded()

    def read_points(self, collection: str, point_ids: Sequence[str], *, fields: bool | list[str] = True) -> list[Point]:
        """Points of a build by id, with their vectors and payload ``fields`` (missing ids are skipped)."""
        with store_errors(f"reading {len(point_ids)} points of {collection}"):
            records = self.client.retrieve(collection, list(point_ids), with_payload=fields, with_vectors=True)
        return [_point(r) for r in records]

    def search_many(
        self, collection: str, vectors: np.ndarray, limit: int, *, payload: bool | list[str] = True,
        exact: bool = False, where: Sequence[Condition] = (),
    ) -> list[list[Point]]:
        """Nearest points to each vector, in batched requests; one list of hits per vector, best first."""
        params = models.SearchParams(exact=True) if exact else None
        conditions = _qdrant_filter(where)
        results: list[list[Point]] = []
        for start in range(0, len(vectors), 64):
            requests = [
                models.QueryRequest(query=vector.tolist(), limit=limit, with_payload=payload, params=params,
                                    filter=conditions)
                for vector in vectors[start : start + 64]
            ]
            with store_errors(f"searching {collection}"):
                responses = self.client.query_batch_points(collection, requests=requests)
            results.extend([_point(p) for p in response.points] for response in responses)
        return results

    def _info(self, collection: str) -> models.CollectionInfo:
        if not self.exists(collection):
            raise VersionError(f"collection {collection} does not exist in {self.location}; see `ragops status`")
        with store_errors(f"reading collection {collection}"):
            return self.client.get_collection(collection)

    # --- aliases -----------------------------------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        """The collection the alias points at, or None when the alias does not exist."""
        with store_errors(f"reading aliases in {self.location}"):
            for description in self.client.get_aliases().aliases:
                if description.alias_name == alias:
                    return description.collection_name
        return None

    def aliases_of(self, collection: str) -> list[str]:
        """Aliases pointing at the collection."""
        with store_errors(f"reading aliases in {self.location}"):
            return sorted(
                a.alias_name for a in self.client.get_aliases().aliases if a.collection_name == collection
            )

    def swap_alias(self, alias: str, *, expected: str | None, target: str) -> None:
        """Point ``alias`` at ``target`` if, and only if, it still points at ``expected``.

        The move itself is one ``update_collection_aliases`` request (delete + create), which Qdrant
        applies atomically: readers see the old or the new build, never neither. Qdrant has no
        server-side compare-and-swap, so the check is a read just before that request; the window
        between them is closed by running one run per alias at a time (the alias's lock, rag/store/locks.py).

        Args:
            expected: where the alias must point now; None means "the alias must not exist yet".

        Raises:
            AliasConflictError: the alias points elsewhere; nothing was changed.
            VersionError: the target collection does not exist.
        """
        if not self.exists(target):
            raise VersionError(f"cannot point alias {alias!r} at {target}: no such collection")
        current = self.alias_target(alias)
        if current != expected:
            raise AliasConflictError(
                f"alias {alias!r} points at {current or 'nothing'} but this run expected "
                f"{expected or 'no alias'}: someone else moved it; the alias was left untouched. "
                "Check `ragops status`, then re-run"
            )
        operations: list = []
        if current is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
            )
        )
        with store_errors(f"moving alias {alias!r} to {target}"):
            self.client.update_collection_aliases(change_aliases_operations=operations)


def connect(settings: StoreSettings) -> QdrantClient:
    """A client for the server or the local-mode folder of ``settings``, checked to answer."""
    if settings.is_remote:
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        try:
            client = QdrantClient(url=settings.location, api_key=api_key, timeout=settings.timeout)
            client.get_collections()  # fail here, with a clear message, rather than mid-build
        except Exception as exc:
            # The client's error may quote the URL or the key it was given.
            reason = mask(_first_line(exc), [api_key])
            raise StoreError(
                f"cannot reach Qdrant at {redact_url(settings.location)}: {reason}; check store.location "
                "and store.api_key (RAGOPS_STORE__API_KEY)", transient=_transient(exc),
            ) from None
        return client
    path = Path(settings.location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store folder {path}: {exc.strerror}") from None
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StoreLockedError(
                f"the store at {path} is in use by another ragops process (an embedded store admits one "
                "at a time); wait for it to finish, or run a Qdrant server and set store.location to its URL"
            ) from None
        raise StoreError(f"cannot open the store at {path}: {_first_line(exc)}") from None


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn qdrant-client and transport errors into StoreError naming what we were doing.

    The one place Qdrant errors are translated; modules that talk to the client directly use it too.
    """
    try:
        yield
    except _BACKEND_ERRORS as exc:
        raise StoreError(f"{action} failed: {_first_line(exc)}", transient=_transient(exc)) from exc
    except ValueError as exc:
        # qdrant-client's local mode reports a missing collection (deleted meanwhile) as a ValueError;
        # any other ValueError is a bug in our call and keeps its traceback.
        if "not found" not in str(exc):
            raise
        raise StoreError(f"{action} failed: {_first_line(exc)}") from exc


#: what the backend itself raises: the server's answers, the transport, the disk, local mode's SQLite
_BACKEND_ERRORS = (UnexpectedResponse, ResponseHandlingException, httpx.HTTPError, OSError, sqlite3.Error)


#: HTTP statuses that say "later", not "never": throttling and a server briefly unavailable
_RETRYABLE_STATUS = {408, 429, 502, 503, 504}


def _transient(exc: BaseException) -> bool:
    """A network failure, a timeout or a "try later" status: the same call may well succeed soon.

    Anything else (a bad request, a missing collection, a bug in our call, an embedded store's disk
    error) would fail the same way again, so it is not retried.
    """
    if isinstance(exc, (httpx.TransportError, ResponseHandlingException, TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, UnexpectedResponse) and exc.status_code in _RETRYABLE_STATUS


def _point(record) -> Point:
    vector = getattr(record, "vector", None)
    return Point(id=str(record.id), payload=record.payload or {}, score=float(getattr(record, "score", 0.0) or 0.0),
                 vector=None if vector is None or isinstance(vector, dict) else np.asarray(vector, dtype=np.float32))


def _first_line(exc: BaseException) -> str:
    # Transport errors can quote the request URL, credentials included.
    text = redact_url(" ".join(str(exc).split()))
    return (text or type(exc).__name__)[:300]


def _qdrant_filter(where: Sequence[Condition]) -> models.Filter | None:
    """qdrant-client's filter for ``where`` (None when there is no condition)."""
    if not where:
        return None
    must: list[models.Condition] = []
    for condition in where:
        if isinstance(condition, Match):
            must.append(models.FieldCondition(key=condition.field, match=models.MatchAny(any=list(condition.values))))
        elif isinstance(condition, Prefix):
            must.append(models.FieldCondition(key=condition.field, match=models.MatchPrefix(prefix=condition.prefix)))
        elif isinstance(condition, Between):
            must.append(models.FieldCondition(key=condition.field, range=models.Range(gte=condition.gte,
                                                                                     lte=condition.lte)))
        else:
            raise TypeError(f"not a search condition: {condition!r}")
    return models.Filter(must=must)
