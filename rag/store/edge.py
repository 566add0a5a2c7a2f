"""The embedded store on Qdrant Edge: one shard per build, everything else in a SQLite catalog.

Layout of ``store.location``::

    catalog.sqlite                    manifests, aliases and their history, every table (rag/store/catalog.py)
    builds/<collection>/              a build's Edge shard, written only by the run that builds it
    readers/<pid>-<token>/<collection>/   one process's snapshot of a sealed build

Why snapshots: Edge admits one open handle per shard directory, so a serving process holding a build
would block every other reader. A build is *sealed* once written (indexed, flushed, closed, then opened
and closed once more so the files Edge rewrites on a first reopen are settled); nobody opens a sealed
shard's directory again. A reader opens its own snapshot instead: hard links to the large files
(vectors, payload pages, the HNSW graph), which Edge only reads, and copies of the small state files,
which it may rewrite. The copies keep the files' holes: Edge preallocates most of its small files
(1 MB flag and tracker files, 2 MB index pages) and writes a few pages of each, so a dense copy
cost 29 MB of disk per reader of an 81-chunk build whose shard allocates 0.4 MB, and 66 MB at 100k
chunks; a sparse one costs what the small files hold: 0.2 MB and 26 MB (docs/benchmarks.md). A build
deleted meanwhile stays readable by whoever is on it (its linked files live until the last snapshot
is removed). The Edge API is used in this module only; its types never leave it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rag.config import StoreSettings
from rag.errors import ConfigError, DamagedBuildError, StoreError, StoreFullError, StoreLockedError, VersionError
from rag.failpoints import failpoint
from rag.models import Chunk, Manifest, PromotionEvent
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
    is_disk_full,
    is_local_mode,
    migration_folders,
    parse_manifest,
    require_free_space,
)
from rag.store.catalog import Catalog
from rag.store.names import MIGRATION_TABLE, docs_collection

log = logging.getLogger(__name__)

#: files at least this large are hard-linked into a snapshot; smaller ones are copied
LINK_AT_BYTES = 4 * 1024 * 1024
#: HNSW parameters of every build (Qdrant's defaults)
HNSW_M, HNSW_EF_CONSTRUCT, FULL_SCAN_THRESHOLD = 16, 100, 10_000
WRITE_BATCH = 256


class EdgeStore(IndexStore):
    """Builds as Edge shards, manifests, aliases and tables in SQLite (see the module docstring)."""

    concurrent_searches = True  # a shard answers searches from several threads at once (Rust, read-only)
    atomic_records = True  # moves and deletions are recorded in their catalog transaction

    def __init__(self, settings: StoreSettings) -> None:
        self.root = Path(settings.location)
        self.location = str(self.root)
        if is_local_mode(self.root):
            raise ConfigError(
                f"the store at {self.root} was made by an earlier ragops (qdrant-client's local mode): run "
                f"`ragops migrate --store {self.root}` to carry it over (or keep it with store.engine: qdrant)"
            )
        try:
            (self.root / "builds").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.root.is_dir():
                raise StoreError(f"cannot create the store folder {self.root}: {exc.strerror}") from None
        _require_writable(self.root)
        _require_catalog(self.root)
        self._catalog = Catalog(self.root / "catalog.sqlite")
        self._refuse_unfinished_copy()
        self._min_free_mb = settings.min_free_mb
        self._writing: dict[str, object] = {}  # builds this process writes: collection -> open shard
        self._reading: dict[str, object] = {}  # sealed builds this process reads: collection -> snapshot
        self._readers = self.root / "readers" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _clear_dead_readers(self.root / "readers")

    def _refuse_unfinished_copy(self) -> None:
        """Refuse a store an earlier release's ``ragops migrate`` made in place and did not finish.

        That release renamed the old store to ``<folder>.local-mode`` and copied into the folder itself,
        writing its "done" row last; killed in between, the folder held a store that looked empty, and
        its rerun deleted it with whatever had been built in it since.
        """
        _, backup = migration_folders(self.root)
        if backup.exists() and not self._catalog.get_rows(MIGRATION_TABLE, ["done"], False):
            self._catalog.close()
            raise ConfigError(
                f"the store at {self.root} is half migrated: a `ragops migrate` of an earlier ragops stopped "
                f"before it finished (the old store is kept at {backup}), and builds may have been made in it "
                f"since. Move {self.root} away (keep it if it holds such builds), then run "
                f"`ragops migrate --store {self.root}` to migrate {backup} again"
            )

    def require_space(self) -> None:
        require_free_space(self.root, self._min_free_mb)

    def close(self) -> None:
        for shard in [*self._writing.values(), *self._reading.values()]:
            try:
                shard.close()
            except Exception as exc:  # closing must not hide the error that brought us here
                log.warning("closing a shard in %s failed: %s", self.location, exc)
        self._writing.clear()
        self._reading.clear()
        shutil.rmtree(self._readers, ignore_errors=True)
        self._catalog.close()

    # --- builds ------------------------------------------------------------------------------------

    def collection_names(self) -> list[str]:
        return sorted({*self._catalog.builds(), *self._catalog.tables()})

    def exists(self, collection: str) -> bool:
        return self._catalog.has_build(collection) or self._catalog.has_table(collection)

    def create_build(self, manifest: Manifest) -> None:
        import qdrant_edge as edge

        # The catalog row first: a run killed before its shard exists leaves a build that retention lists.
        if not self._catalog.add_build(manifest.collection, manifest.model_dump(mode="json")):
            raise VersionError(f"collection {manifest.collection} already exists; builds are never overwritten")
        self._catalog.ensure_table(docs_collection(manifest.collection))
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=manifest.model.dimension, distance=edge.Distance.Cosine),
            hnsw_config=edge.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                             full_scan_threshold=FULL_SCAN_THRESHOLD),
            # A build is durable when it is sealed (flush); a killed build is never resumed, so no WAL.
            wal_enabled=False,
        )
        with _edge_errors(f"creating the shard of {manifest.collection}"):
            shard = edge.EdgeShard.create(str(self._shard_dir(manifest.collection)), config)
            for field in KEYWORD_FIELDS:
                params = edge.KeywordIndexParams(prefix=True) if field == "doc_id" else edge.PayloadSchemaType.Keyword
                shard.update(edge.UpdateOperation.create_field_index(field, params))
            for field in INTEGER_FIELDS:
                shard.update(edge.UpdateOperation.create_field_index(field, edge.PayloadSchemaType.Integer))
        self._writing[manifest.collection] = shard

    def finish_bulk_load(self, collection: str, *, timeout: float = 600) -> str:
        """Seal a build: build HNSW and payload indexes, flush, close, settle; record its point count."""
        import qdrant_edge as edge

        sealed, _ = self._catalog.sealed(collection)
        if sealed:
            return "green"
        shard = self._writer(collection)
        with _edge_errors(f"indexing {collection}"):
            shard.optimize()
            shard.flush()
            points = shard.count(edge.CountRequest(exact=True))
            shard.close()
            del self._writing[collection]
            edge.EdgeShard.load(str(self._shard_dir(collection))).close()  # settle what a reopen rewrites
        self._catalog.seal(collection, points, _inventory(self._shard_dir(collection)))
        return "green"

    def write_manifest(self, manifest: Manifest) -> None:
        self._catalog.write_manifest(manifest.collection, manifest.model_dump(mode="json"))

    def read_manifest(self, collection: str) -> Manifest | None:
        if not self._catalog.has_build(collection):
            raise VersionError(f"collection {collection} does not exist in {self.location}; see `ragops status`")
        try:
            data = self._catalog.manifest(collection)
        except DamagedBuildError as exc:
            log.warning("%s", exc)
            return None
        return parse_manifest(data, collection)

    def status(self, collection: str) -> str:
        if self._catalog.sealed(collection)[0]:
            return "green"
        return "yellow" if collection in self._writing else "grey"

    def count(self, collection: str) -> int:
        import qdrant_edge as edge

        if self._catalog.has_table(collection):
            return self._catalog.count_rows(collection)
        if collection in self._writing:
            with _edge_errors(f"counting points in {collection}"):
                return self._writing[collection].count(edge.CountRequest(exact=True))
        return self._catalog.sealed(collection)[1]

    def _remove_build(self, collection: str, records: Sequence[tuple[str, Row]]) -> None:
        # The shard first, the catalog row (with the deletion's record) last: killed in between, the row
        # still lists the build, and the next retention deletes and records it.
        shard = self._writing.pop(collection, None) or self._reading.pop(collection, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._shard_dir(collection), ignore_errors=True)
        failpoint("retention")
        self._catalog.delete_build(collection, [docs_collection(collection)],
                                   [(table, row.key, row.payload) for table, row in records])
        failpoint("deleted")

    def upsert_chunks(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self._write_points(collection, [(c.point_id, v, c.payload()) for c, v in zip(chunks, vectors)])

    def write_points(self, collection: str, points: Sequence[Point]) -> None:
        self._write_points(collection, [(p.id, p.vector, p.payload) for p in points])

    def copy_points(self, source: str, target: str, point_ids: Sequence[str]) -> int:
        copied = 0
        for start in range(0, len(point_ids), 512):
            points = self.read_points(source, point_ids[start : start + 512])
            self._write_points(target, [(p.id, p.vector, p.payload) for p in points])
            copied += len(points)
        return copied

    def read_points(self, collection: str, point_ids: Sequence[str], *, fields: bool | list[str] = True) -> list[Point]:
        shard = self._reader(collection)
        with _edge_errors(f"reading {len(point_ids)} points of {collection}"):
            records = shard.retrieve(list(point_ids), with_payload=fields, with_vector=True)
        return [_point(r) for r in records]

    def search_many(
        self, collection: str, vectors: np.ndarray, limit: int, *, payload: bool | list[str] = True,
        exact: bool = False, where: Sequence[Condition] = (),
    ) -> list[list[Point]]:
        import qdrant_edge as edge

        shard = self._reader(collection)
        params = edge.SearchParams(exact=True) if exact else None
        conditions = _edge_filter(where)
        results = []
        with _edge_errors(f"searching {collection}"):
            for vector in vectors:
                hits = shard.search(edge.SearchRequest(query=edge.Query.Nearest(vector.tolist()), limit=limit,
                                                       params=params, with_payload=payload, filter=conditions))
                results.append([_point(h) for h in hits])
        return results

    def _damaged_files(self, collection: str, *, deep: bool = False) -> str | None:
        recorded = self._catalog.sealed_files(collection)
        if recorded is None:  # sealed before file lists were recorded, or never sealed: nothing to compare
            return None
        return _compare_files(self._shard_dir(collection), recorded, deep=deep)

    def _stored_points(self, collection: str) -> int:
        import qdrant_edge as edge

        try:
            with _edge_errors(f"counting points in {collection}"):
                return self._reader(collection).count(edge.CountRequest(exact=True))
        except (StoreLockedError, StoreFullError):  # the build is not the problem
            raise
        except StoreError as exc:  # on this machine's disk, a shard that does not open is a damaged one
            raise DamagedBuildError(f"build {collection} cannot be opened: {exc}") from None

    def release(self, collection: str) -> None:
        shard = self._reading.pop(collection, None)
        if shard is not None:
            shard.close()
            shutil.rmtree(self._readers / collection, ignore_errors=True)

    # --- tables ------------------------------------------------------------------------------------

    def put_rows(self, table: str, rows: Sequence[Row], *, dimension: int | None = None) -> None:
        if rows:
            with _edge_errors(f"writing {len(rows)} rows to {table}"):
                self._catalog.put_rows(table, [(r.key, r.payload, r.vector) for r in rows], dimension)

    def get_rows(self, table: str, keys: Sequence[str], *, vectors: bool = False) -> dict[str, Point]:
        with _edge_errors(f"reading {table}"):
            found = self._catalog.get_rows(table, list(keys), vectors)
        return {key: Point(id=key, payload=payload, vector=vector) for key, (payload, vector) in found.items()}

    def delete_rows(self, table: str, keys: Sequence[str]) -> None:
        if keys:
            with _edge_errors(f"deleting rows of {table}"):
                self._catalog.delete_rows(table, list(keys))

    def scan_rows(self, table: str, *, vectors: bool = False, fields: bool | list[str] = True) -> Iterator[Point]:
        if self._catalog.has_build(table):
            yield from self._scan_build(table, vectors=vectors, fields=fields)
            return
        for key, payload, vector in self._catalog.scan_rows(table, vectors):
            if isinstance(fields, list):
                payload = {k: v for k, v in payload.items() if k in fields}
            yield Point(id=key, payload=payload if fields is not False else {}, vector=vector)

    def drop_table(self, table: str) -> int:
        rows = self._catalog.count_rows(table)
        self._catalog.drop_table(table)
        return rows

    # --- aliases -----------------------------------------------------------------------------------

    def alias_target(self, alias: str) -> str | None:
        return self._catalog.aliases().get(alias)

    def aliases_of(self, collection: str) -> list[str]:
        return sorted(alias for alias, target in self._catalog.aliases().items() if target == collection)

    def swap_alias(self, alias: str, *, expected: str | None, target: str) -> None:
        """The check and the move are one SQLite transaction: a true compare-and-swap."""
        if not self._catalog.has_build(target):
            raise VersionError(f"cannot point alias {alias!r} at {target}: no such collection")
        self._catalog.swap_alias(alias, expected=expected, target=target)

    def move_alias(self, alias: str, *, expected: str | None, target: str, event: PromotionEvent,
                   records: Sequence[tuple[str, Row]] = ()) -> Manifest:
        """The check, the move, its promotion event and its records: one SQLite transaction."""
        if not self._catalog.has_build(target):
            raise VersionError(f"cannot point alias {alias!r} at {target}: no such collection")

        def record(stored: dict) -> dict:  # inside the transaction: the manifest as it is now
            manifest = Manifest.model_validate(stored)
            history = [e for e in manifest.promotions if not e.pending] + [event]
            return manifest.model_copy(update={"promotions": history}).model_dump(mode="json")

        written = self._catalog.swap_alias(alias, expected=expected, target=target, record=record,
                                           rows=[(table, row.key, row.payload) for table, row in records])
        return Manifest.model_validate(written)

    # --- shards ------------------------------------------------------------------------------------

    def _shard_dir(self, collection: str) -> Path:
        return self.root / "builds" / collection

    def _writer(self, collection: str):
        """The open shard of a build this process writes (reopened if this process created it earlier)."""
        import qdrant_edge as edge

        if collection in self._writing:
            return self._writing[collection]
        if not self._catalog.has_build(collection):
            raise VersionError(f"collection {collection} does not exist in {self.location}")
        if self._catalog.sealed(collection)[0]:
            raise VersionError(f"build {collection} is complete; complete builds are never written to")
        with _edge_errors(f"opening the shard of {collection}"):
            self._writing[collection] = edge.EdgeShard.load(str(self._shard_dir(collection)))
        return self._writing[collection]

    def _reader(self, collection: str):
        """A shard to read ``collection`` (a build or an alias) from: ours if we write it, else a snapshot."""
        # An open build is found without the catalog: a search then touches no SQLite (whose busy
        # handler can sleep 5-20 ms while a build in another process commits) and nothing but the shard.
        for open_shards in (self._reading, self._writing):
            shard = open_shards.get(collection)
            if shard is not None:
                return shard
        collection = self.alias_target(collection) or collection
        if collection in self._writing:
            return self._writing[collection]
        if collection not in self._reading:
            self.prepare_reader(collection)()
        return self._reading[collection]

    def prepare_reader(self, collection: str) -> Callable[[], None]:
        collection = self.alias_target(collection) or collection
        if collection in self._writing or collection in self._reading:
            return lambda: None  # open already
        if not self._catalog.has_build(collection):
            raise VersionError(f"collection {collection} does not exist in {self.location}; see `ragops status`")
        if not self._catalog.sealed(collection)[0]:
            raise StoreLockedError(
                f"build {collection} is still being written (or its run was killed); it can be read once complete"
            )
        problem = self._damaged_files(collection)
        if problem:
            raise DamagedBuildError(f"build {collection} is damaged: {problem}")

        def open_snapshot() -> None:  # files and the new shard only: no catalog, no other shard
            import qdrant_edge as edge

            snapshot = self._readers / collection
            with _edge_errors(f"opening a snapshot of {collection}"):
                _snapshot(self._shard_dir(collection), snapshot)
                self._reading[collection] = edge.EdgeShard.load(str(snapshot))

        return open_snapshot

    def _write_points(self, collection: str, points: list[tuple[str, np.ndarray, dict]]) -> None:
        import qdrant_edge as edge

        shard = self._writer(collection)
        for start in range(0, len(points), WRITE_BATCH):
            batch = [edge.Point(id=pid, vector=np.asarray(v, dtype=np.float32).tolist(), payload=payload)
                     for pid, v, payload in points[start : start + WRITE_BATCH]]
            with _edge_errors(f"writing {len(batch)} points to {collection}"):
                shard.update(edge.UpdateOperation.upsert_points(batch))

    def _scan_build(self, collection: str, *, vectors: bool, fields: bool | list[str]) -> Iterator[Point]:
        import qdrant_edge as edge

        shard = self._reader(collection)
        offset = None
        while True:
            with _edge_errors(f"reading {collection}"):
                page, offset = shard.scroll(edge.ScrollRequest(offset=offset, limit=1024, with_payload=fields,
                                                               with_vector=vectors))
            yield from (_point(r) for r in page)
            if offset is None:
                return


def _require_writable(root: Path) -> None:
    """Refuse a store this process cannot write, with why and what to do (SQLite's own words, "unable
    to open database file", say neither)."""
    if os.access(root, os.W_OK) and os.access(root / "builds", os.W_OK):
        return
    raise StoreError(
        f"the store at {root} is read-only here (a read-only mount, or no write permission for this user), "
        "and ragops writes to its store even to read it: the catalog's write-ahead log and each reader's "
        "snapshot of a build (readers/) live in it. Make the folder writable for this user, or copy the "
        "store to a writable folder (cp -a) and point --store at the copy"
    )


def _require_catalog(root: Path) -> None:
    """Refuse a catalog emptied to 0 bytes beside builds: opening it would make an empty store and leave
    every build's shard orphaned, with every manifest, alias and table gone unnoticed."""
    catalog = root / "catalog.sqlite"
    try:
        empty = catalog.stat().st_size == 0
        shards = sorted(p.name for p in (root / "builds").iterdir()) if empty else []
    except OSError:  # no catalog yet: a new store
        return
    if shards:
        raise StoreError(
            f"the store's catalog {catalog} is empty (0 bytes) while builds/ holds {len(shards)} build(s) "
            f"({', '.join(shards[:3])}{', ...' if len(shards) > 3 else ''}): it was truncated or replaced, and "
            "with it every manifest, alias, audit entry and table. ragops will not use it as a new store. "
            "Restore catalog.sqlite (with its -wal file) from a backup; or move the folder aside and run "
            "`ragops reindex` to build a new store"
        )


def _snapshot(master: Path, target: Path) -> None:
    """A reader's own copy of a sealed shard: large files hard-linked, small ones copied."""
    if target.exists():
        shutil.rmtree(target)
    copied: list[Path] = []
    for folder, _, files in os.walk(master):
        destination = target / Path(folder).relative_to(master)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            source = Path(folder) / name
            if source.stat().st_size >= LINK_AT_BYTES:
                try:
                    os.link(source, destination / name)
                    continue
                except OSError:  # another filesystem, or links not allowed: copy instead
                    pass
            _sparse_copy(source, destination / name)
            copied.append(destination / name)
    # Write the copies out now, while other threads run (os.fsync lets go of the GIL): otherwise the
    # engine's load, and later its close, wait for them while holding the GIL, and every thread of a
    # query service stops for ~30 ms each time (measured: 29-32 ms -> 23 ms to load, 31-37 -> 13-17 to close).
    for path in copied:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


#: the sparse copy reads this much at a time, and leaves each page of zeros in it a hole
_COPY_READ, _PAGE = 1 << 20, 4096


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy a file with its holes left holes, and its pages of zeros too: byte for byte the same to a
    reader, but disk is allocated only for data (``shutil.copy2`` writes every hole out as zeros)."""
    zero_page = bytes(_PAGE)
    with open(source, "rb") as reading, open(target, "wb") as writing:
        src, dst = reading.fileno(), writing.fileno()
        size = os.fstat(src).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src, offset, os.SEEK_DATA)
                end = os.lseek(src, start, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole from offset to the end
                    break
                start, end = offset, size  # no hole support here: read it all, zero pages still skipped
            for position in range(start, end, _COPY_READ):
                data = memoryview(os.pread(src, min(_COPY_READ, end - position), position))
                run = None  # where the current run of non-zero pages starts in data
                for page in range(0, len(data) + _PAGE, _PAGE):
                    zero = page >= len(data) or data[page:page + _PAGE] == zero_page[:len(data[page:page + _PAGE])]
                    if not zero and run is None:
                        run = page
                    elif zero and run is not None:
                        os.pwrite(dst, data[run:page], position + run)
                        run = None
            offset = end
        os.ftruncate(dst, size)
    shutil.copystat(source, target)


def _inventory(shard: Path) -> dict[str, list]:
    """Every file of a sealed shard: relative path -> [size, sha256], to check it against later."""
    return {str(path.relative_to(shard)): [path.stat().st_size, _sha256(path)]
            for path in sorted(shard.rglob("*")) if path.is_file()}


def _compare_files(shard: Path, recorded: dict[str, list], *, deep: bool) -> str | None:
    """What differs between a shard's files and those recorded at sealing (sizes; contents with
    ``deep``), in a few words; None when nothing does."""
    for name, (size, digest) in recorded.items():
        path = shard / name
        try:
            found = path.stat().st_size
        except OSError:
            return f"its file {name} is missing"
        if found != size:
            return f"its file {name} has {found} bytes, {size} when it was sealed"
        if deep and _sha256(path) != digest:
            return f"its file {name} was overwritten after it was sealed"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _clear_dead_readers(readers: Path) -> None:
    """Remove snapshots left by processes that died without closing their store."""
    if not readers.is_dir():
        return
    for entry in readers.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _point(record) -> Point:
    vector = record.vector
    if isinstance(vector, dict):  # a named-vectors record: ours have one unnamed vector
        vector = vector.get("")
    return Point(id=str(record.id), payload=record.payload or {}, score=float(getattr(record, "score", 0.0) or 0.0),
                 vector=None if vector is None else np.asarray(vector, dtype=np.float32))


@contextmanager
def _edge_errors(action: str) -> Iterator[None]:
    """Edge's own errors (plain ``Exception``s from the engine), the disk's and SQLite's, as StoreErrors.

    A bug in our call raises a specific exception type (TypeError, ValueError…) and keeps its traceback.
    """
    try:
        yield
    except (StoreError, VersionError):
        raise
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc):
            raise StoreFullError(f"{action} failed: the store's disk is full ({exc}). What was written before is "
                                 "intact: free some space and run again") from exc
        raise StoreError(f"{action} failed: {exc}") from exc
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        message = " ".join(str(exc).split())[:300]
        if "WouldBlock" in message:
            raise StoreLockedError(f"{action} failed: the shard is open in another process ({message})") from exc
        raise StoreError(f"{action} failed: {message}") from exc


def _edge_filter(where: Sequence[Condition]):
    """Edge's filter for ``where`` (None when there is no condition)."""
    import qdrant_edge as edge

    if not where:
        return None
    must = []
    for condition in where:
        if isinstance(condition, Match):
            must.append(edge.FieldCondition(condition.field, match=edge.MatchAny(list(condition.values))))
        elif isinstance(condition, Prefix):
            must.append(edge.FieldCondition(condition.field, match=edge.MatchPrefix(condition.prefix)))
        elif isinstance(condition, Between):
            must.append(edge.FieldCondition(condition.field, range=edge.RangeFloat(gte=condition.gte,
                                                                                  lte=condition.lte)))
        else:
            raise TypeError(f"not a search condition: {condition!r}")
    return edge.Filter(must=must)
