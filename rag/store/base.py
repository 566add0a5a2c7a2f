"""The index store's interface: where builds, their manifests, aliases and tables live.

It knows no backend. Two implement it, picked by ``rag.store.open_store`` from ``StoreSettings``:

- ``rag.store.edge.EdgeStore``: the embedded default (a folder, ``engine: auto`` or ``edge``) on Qdrant
  Edge, one shard per build, the catalog in SQLite; serving processes and builds use it at the same time;
- ``rag.store.qdrant.QdrantStore``: a Qdrant server or cluster (``http(s)://`` locations), or a folder in
  qdrant-client's local mode (``engine: qdrant``; one process at a time, the server API's stand-in in tests).

Everything above this module talks to a store through ``IndexStore`` only: a backend implements the
primitives below, and the rest (document tables, ledgers, locks, listings) is written once here on top
of them. Everything that is not a build's points is a *table*: rows keyed by a string, with a payload
and, in vector tables (the embedding cache, the query log), a vector.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rag.config import StoreSettings
from rag.errors import ConfigError, DamagedBuildError, StoreFullError, VersionError
from rag.models import Chunk, DocumentRecord, Manifest, PromotionEvent, SourceState
from rag.store.names import LOCKS_TABLE, build_of_table, docs_collection, is_build_of, ledger_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """A point read from a build or a table: its id, payload, and (when asked for) vector and score."""

    id: str
    payload: dict
    vector: np.ndarray | None = None
    score: float = 0.0


@dataclass(frozen=True)
class Row:
    """A row to write into a table: keyed by a string, with a payload and, in vector tables, a vector."""

    key: str
    payload: dict
    vector: np.ndarray | None = None


#: payload fields every build indexes, so filtered searches stay fast (Qdrant's keyword and integer
#: indexes; ``doc_id``'s keyword index also serves prefix matches). Created before a build is sealed:
#: indexing a live collection can block its reads (qdrant#4934).
KEYWORD_FIELDS = ("doc_id", "source", "title")
INTEGER_FIELDS = ("page", "chunk_index")
FILTER_FIELDS = KEYWORD_FIELDS + INTEGER_FIELDS


@dataclass(frozen=True)
class Match:
    """Condition: the payload ``field`` equals one of ``values``."""

    field: str
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class Prefix:
    """Condition: the keyword ``field`` starts with ``prefix`` (byte-wise, case-sensitive)."""

    field: str
    prefix: str


@dataclass(frozen=True)
class Between:
    """Condition: the numeric ``field`` lies in ``[gte, lte]`` (an open end is None)."""

    field: str
    gte: float | None = None
    lte: float | None = None


#: a filtered search's conditions: a hit must meet all of them (Qdrant's ``must``)
Condition = Match | Prefix | Between


def parse_manifest(data: dict | None, collection: str) -> Manifest | None:
    """A stored manifest, or None when there is none or it cannot be read (logged: not made by ragops,
    or by a version whose manifests this one cannot read)."""
    if data is None:
        return None
    try:
        return Manifest.model_validate(data)
    except ValueError as exc:
        log.warning("build %s has an unreadable manifest: %s", collection, exc)
        return None


def migration_folders(folder: Path) -> tuple[Path, Path]:
    """Beside a store folder: where ``ragops migrate`` makes the new store, and where it keeps the old one."""
    folder = Path(os.path.abspath(folder))  # "." and "store/" have a name to put a suffix on
    return folder.with_name(folder.name + ".migrating"), folder.with_name(folder.name + ".local-mode")


def is_local_mode(folder: Path) -> bool:
    """True when ``folder`` holds a store made by qdrant-client's local mode (ragops before Edge): what
    ``ragops migrate`` carries over, and what the embedded store refuses to open."""
    return (folder / "meta.json").exists() and (folder / "collection").is_dir()


def refuse_unfinished_migration(settings: StoreSettings) -> None:
    """Refuse an embedded store whose migration was stopped before its new store was put in place.

    While ``<folder>.migrating`` exists the folder holds the old store, or nothing at all (the old one
    moved, the new one not yet in place): a command opening it would see a store that looks empty, or
    create one, and a rerun of the migration would then have to choose between that and the copy.

    Raises:
        ConfigError: a migration of ``settings.location`` is unfinished.
    """
    if settings.is_remote:
        return
    side, _ = migration_folders(Path(settings.location))
    if side.exists():
        raise ConfigError(
            f"the store at {settings.location} is half migrated: a `ragops migrate` stopped before it finished "
            f"(its new store is being made in {side}); run `ragops migrate --store {settings.location}` to finish it"
        )


def require_store(settings: StoreSettings) -> None:
    """Refuse a folder that holds no store (a server is checked when connecting), or a half-migrated one.

    Raises:
        ConfigError: nothing ragops made is at ``settings.location``, or its migration is unfinished.
    """
    refuse_unfinished_migration(settings)
    folder = Path(settings.location)
    if settings.is_remote or (folder / "catalog.sqlite").exists() or (folder / "meta.json").exists():
        return
    raise ConfigError(
        f"no store at {folder}: check --store or store.location (relative paths are relative to the config "
        "file), or run `ragops reindex` to create it"
    )


class IndexStore(ABC):
    """Builds, each carrying its ``Manifest``; serving aliases pointing at them; tables beside them.

    Use ``open_store(settings)`` as a context manager; it picks the backend.
    """

    #: True when ``search_many`` of a build opened with ``prepare_reader`` may run beside any other call
    #: on this store from other threads (a query service then searches without waiting for its other
    #: store work: reading the alias, opening the next build)
    concurrent_searches: bool = False

    #: True when ``move_alias`` and ``delete_build`` write a move's or a deletion's record in the same
    #: transaction as the move or the deletion (the embedded store); otherwise ``rag.index.versions`` records a
    #: move around ``swap_alias`` and records are written right after a deletion (a server)
    atomic_records: bool = False

    #: where the store is, for messages and logs (a server URL's password redacted)
    location: str

    # --- what a backend implements -----------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release everything the store holds open."""

    @abstractmethod
    def collection_names(self) -> list[str]:
        """Every build and table in the store."""

    @abstractmethod
    def exists(self, collection: str) -> bool:
        """True when the build or table exists."""

    @abstractmethod
    def create_build(self, manifest: Manifest) -> None:
        """Create the empty build of ``manifest`` (and its document table).

        Raises:
            VersionError: the build already exists (builds are never overwritten).
        """

    @abstractmethod
    def finish_bulk_load(self, collection: str, *, timeout: float = 600) -> str:
        """Index a fully written build (HNSW, payload indexes); returns its status ("green" when done)."""

    @abstractmethod
    def write_manifest(self, manifest: Manifest) -> None:
        """Replace a build's manifest. With ``atomic_records``, its promotion history stays as stored:
        only ``move_alias`` writes that (a copy read before a move must not erase the move's record)."""

    @abstractmethod
    def read_manifest(self, collection: str) -> Manifest | None:
        """The manifest of a build, or None when it has none (not made by ragops).

        Raises:
            VersionError: the build does not exist.
        """

    def damage(self, collection: str, *, deep: bool = False) -> str | None:
        """Why a finished build cannot be trusted, in a few words; None when it looks as written.

        Checks that its manifest reads, that its files are the ones recorded when it was sealed
        (sizes; contents too with ``deep``), that it holds the points its manifest counts and, with
        ``deep``, that its document table reads. Builds still being written, or failed, are not
        checked. Damage is the answer, never raised; a store that cannot be reached still raises.
        """
        try:
            manifest = self.read_manifest(collection)
            if manifest is None:
                return "its manifest cannot be read"
            if manifest.state not in ("complete", "rejected"):
                return None
            problem = self._damaged_files(collection, deep=deep)
            if problem:
                return problem
            points = self._stored_points(collection)
            if points != manifest.counts.chunks:
                return f"it holds {points} points but its manifest counts {manifest.counts.chunks}"
            if deep:
                self.read_records(collection)
        except (DamagedBuildError, VersionError) as exc:
            return str(exc)
        return None

    def _damaged_files(self, collection: str, *, deep: bool = False) -> str | None:
        """What differs between a build's files and those it was sealed with (the embedded store's
        shards); a server keeps its own files, so nothing by default."""
        return None

    def _stored_points(self, collection: str) -> int:
        """Points the build holds now, counted in the build itself."""
        return self.count(collection)

    @abstractmethod
    def status(self, collection: str) -> str:
        """The build's index status: green (indexed), yellow (indexing), grey or red."""

    @abstractmethod
    def count(self, collection: str) -> int:
        """Exact number of points in a build (or rows in a table)."""

    @abstractmethod
    def _remove_build(self, collection: str, records: Sequence[tuple[str, Row]]) -> None:
        """Delete a build and its document table and write ``records`` (``delete_build`` checked that
        nothing serves it)."""

    @abstractmethod
    def upsert_chunks(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Write chunks and their vectors; idempotent (point ids derive from document id + position)."""

    @abstractmethod
    def write_points(self, collection: str, points: Sequence[Point]) -> None:
        """Write points as read from a build (ids, vectors, payloads), e.g. by a migration."""

    @abstractmethod
    def copy_points(self, source: str, target: str, point_ids: Sequence[str]) -> int:
        """Copy points (vectors and payloads) between builds; returns how many were found and copied."""

    @abstractmethod
    def read_points(self, collection: str, point_ids: Sequence[str], *, fields: bool | list[str] = True) -> list[Point]:
        """Points of a build by id, with their vectors and payload ``fields`` (missing ids are skipped)."""

    @abstractmethod
    def search_many(
        self, collection: str, vectors: np.ndarray, limit: int, *, payload: bool | list[str] = True,
        exact: bool = False, where: Sequence[Condition] = (),
    ) -> list[list[Point]]:
        """Nearest points of a build (or alias) to each vector, best first.

        Args:
            exact: compare with every vector instead of the index: what evaluation uses, so metrics never
                depend on the approximation.
            where: conditions every hit meets (on ``FILTER_FIELDS``, which every build indexes).
        """

    @abstractmethod
    def put_rows(self, table: str, rows: Sequence[Row], *, dimension: int | None = None) -> None:
        """Write rows (replacing rows with the same key), durably, creating the table if needed.

        Args:
            dimension: the table holds vectors of this size (every row then carries one).
        """

    @abstractmethod
    def get_rows(self, table: str, keys: Sequence[str], *, vectors: bool = False) -> dict[str, Point]:
        """The rows of ``keys`` that exist, by key (missing keys are absent from the result)."""

    @abstractmethod
    def delete_rows(self, table: str, keys: Sequence[str]) -> None:
        """Delete the rows of ``keys`` (absent ones are ignored)."""

    @abstractmethod
    def scan_rows(self, table: str, *, vectors: bool = False, fields: bool | list[str] = True) -> Iterator[Point]:
        """Every row of a table, or point of a build (none when it does not exist), page by page."""

    @abstractmethod
    def drop_table(self, table: str) -> int:
        """Delete a whole table; returns how many rows it held (0 when it did not exist)."""

    @abstractmethod
    def alias_target(self, alias: str) -> str | None:
        """The build the alias points at, or None when the alias does not exist."""

    @abstractmethod
    def aliases_of(self, collection: str) -> list[str]:
        """Aliases pointing at the build."""

    @abstractmethod
    def swap_alias(self, alias: str, *, expected: str | None, target: str) -> None:
        """Point ``alias`` at ``target`` if, and only if, it still points at ``expected``.

        Args:
            expected: where the alias must point now; None means "the alias must not exist yet".

        Raises:
            AliasConflictError: the alias points elsewhere; nothing was changed.
            VersionError: the target build does not exist.
        """

    def move_alias(self, alias: str, *, expected: str | None, target: str, event: PromotionEvent,
                   records: Sequence[tuple[str, Row]] = ()) -> Manifest:
        """``swap_alias``, and in the same transaction: ``event`` appended to the target's promotion history
        (any pending event it carries dropped: it is not live, so that move never happened) and
        ``records`` (table, row) written. Only backends with ``atomic_records`` have it.

        Returns:
            The target's manifest as now stored.

        Raises:
            AliasConflictError: the alias points elsewhere; nothing was changed or written.
            VersionError: the target build does not exist.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot record an alias move in its transaction")

    def prepare_reader(self, collection: str) -> Callable[[], None]:
        """Check that ``collection`` (a build or an alias) can be read here, and return the call that opens
        it for reading. That call touches no other state of this store, so a caller that serializes its
        use of the store with a lock may run it outside that lock, beside searches of other builds (on
        Edge it copies a snapshot and loads it: ~100 ms). Backends with nothing to open return a no-op.

        Raises:
            VersionError / StoreLockedError / DamagedBuildError: as a search of it would.
        """
        return lambda: None

    def release(self, collection: str) -> None:
        """Let go of what this process holds open to read a build (a snapshot on Edge; others: nothing).

        Safe beside searches of other builds from other threads (a Retriever releases a retired build
        while the live one answers); not beside a search or an open of the same build."""

    def sync(self, collection: str) -> None:
        """Make everything written to a build or table durable (backends that buffer writes)."""

    def require_space(self) -> None:
        """Raise ``StoreError`` when the store's disk is too full to write a build (embedded stores; a
        server manages its own disk)."""

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let other processes use the store during a long wait (backends that lock it; others: nothing)."""
        yield

    # --- written once, on top of the primitives ---------------------------------------------------

    def delete_build(self, collection: str, *, records: Sequence[tuple[str, Row]] = ()) -> None:
        """Delete a build and its document table, and write ``records`` (table, row): its audit entry, in
        the deletion's transaction with ``atomic_records``, else right after it. Refuses a build an alias
        points at.

        Raises:
            VersionError: an alias points at it (the live build is never deleted).
        """
        aliases = self.aliases_of(collection)
        if aliases:
            raise VersionError(f"refusing to delete {collection}: alias {', '.join(aliases)} points at it")
        self._remove_build(collection, records)

    def list_builds(self, alias: str) -> list[str]:
        """Collections that are builds of ``alias``, oldest first (versions sort by time)."""
        return sorted(n for n in self.collection_names() if is_build_of(alias, n))

    def orphan_tables(self, alias: str) -> list[str]:
        """Document tables of ``alias``'s builds whose build collection is gone, oldest first.

        Only a deletion killed half-way leaves one: ``create_build`` makes the collection before its
        table, and ``delete_build`` deletes the table before the collection.
        """
        names = set(self.collection_names())
        return sorted(
            name for name in names
            if (build := build_of_table(name)) is not None and is_build_of(alias, build) and build not in names
        )

    def delete_orphan_table(self, table: str) -> None:
        """Delete a document table whose build is gone (see ``orphan_tables``).

        Raises:
            VersionError: it is not a document table, or its build still exists.
        """
        build = build_of_table(table)
        if build is None or self.exists(build):
            raise VersionError(f"refusing to delete {table}: it is not the table of a deleted build")
        self.drop_table(table)

    def write_records(self, collection: str, records: Sequence[DocumentRecord]) -> None:
        """Write document records into a build's document table (idempotent, keyed by document id)."""
        self.put_rows(docs_collection(collection), [Row(r.doc_id, r.model_dump(mode="json")) for r in records])

    def read_records(self, collection: str) -> dict[str, DocumentRecord]:
        """A build's document table: document id -> record (empty for builds made before tables)."""
        return {p.payload["doc_id"]: DocumentRecord.model_validate(p.payload)
                for p in self.scan_rows(docs_collection(collection))}

    def read_source_states(self, alias: str) -> dict[str, SourceState]:
        """The alias's freshness ledger: source name -> state (empty before the first run)."""
        return {p.payload["name"]: SourceState.model_validate(p.payload) for p in self.scan_rows(ledger_table(alias))}

    def write_source_states(self, alias: str, states: Sequence[SourceState]) -> None:
        """Record sources' freshness in the alias's ledger (never in a build)."""
        self.put_rows(ledger_table(alias), [Row(f"source:{s.name}", s.model_dump(mode="json")) for s in states])

    def forget_source_states(self, alias: str, names: Sequence[str]) -> None:
        """Remove sources from the alias's freshness ledger (sources the live build no longer holds)."""
        self.delete_rows(ledger_table(alias), [f"source:{name}" for name in names])

    def read_lock(self, alias: str) -> dict | None:
        """The alias's lease record (rag/store/locks.py), or None when nobody holds it."""
        found = self.get_rows(LOCKS_TABLE, [f"lock:{alias}"])
        return found[f"lock:{alias}"].payload or None if found else None

    def write_lock(self, alias: str, holder: dict) -> None:
        """Write (or renew) the alias's lease record."""
        self.put_rows(LOCKS_TABLE, [Row(f"lock:{alias}", holder)])

    def delete_lock(self, alias: str) -> None:
        """Remove the alias's lease record."""
        self.delete_rows(LOCKS_TABLE, [f"lock:{alias}"])

    def tables(self, prefix: str) -> list[str]:
        """Names of the tables (and collections) that start with ``prefix``."""
        return sorted(n for n in self.collection_names() if n.startswith(prefix))

    def point_ids(self, collection: str) -> Iterator[str]:
        """Every point id of a build, page by page."""
        return (p.id for p in self.scan_rows(collection, fields=False))

    def text_hashes(self, collection: str) -> set[str]:
        """Text hashes of every chunk in a build (what its vectors were embedded from)."""
        return {p.payload.get("text_hash", "") for p in self.scan_rows(collection, fields=["text_hash"])}


def is_disk_full(exc: BaseException) -> bool:
    """An OSError or SQLite error that says the disk (or a quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc) or "No space left" in str(exc)


def require_free_space(folder: Path, min_free_mb: int) -> None:
    """Raise ``StoreError`` when the disk holding ``folder`` has less than ``min_free_mb`` MB free.

    A full disk must stop a build with an error, before a write: the embedded engine writes through
    memory maps, and running out of space there kills the process with SIGBUS.
    """
    if min_free_mb <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the folder's own errors are reported by what uses it
    if free < min_free_mb * 1_000_000:
        raise StoreFullError(
            f"the store's disk ({folder}) has {free / 1e6:.1f} MB free, less than store.min_free_mb "
            f"({min_free_mb} MB): no build was started or written further. Free some space (or lower "
            "store.min_free_mb) and run again; the live build is unchanged"
        )
