"""The embedded store's catalog: manifests, aliases with their history, and every table, in SQLite.

Why SQLite in WAL mode: several processes (a build, a serving app, ``ragops status``) use one store at
once. WAL lets readers read while one writer writes, and neither waits for the other; writers take
turns (``busy_timeout``). Every write is one transaction, so a killed process leaves either all of it
or none of it. ``synchronous=FULL``: a commit is on disk before the call returns, because the store
records what is done (a complete build, a promotion) and nothing may be recorded before it is durable.

The alias move is a true compare-and-swap: the check and the move happen in one ``BEGIN IMMEDIATE``
transaction, which no other writer can interleave. What the move's history is made of (the promotion
event on the incoming build's manifest, the ``alias_moves`` row, the audit entry) is written in that same
transaction, and a build's deletion with its audit entry: a kill leaves all of it or none of it, and a
process that loses the race writes nothing. Nothing else writes a build's promotion history
(``write_manifest`` keeps the stored one), so no stale copy of a manifest can erase a move's record.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rag.errors import AliasConflictError, DamagedBuildError, StoreError, StoreFullError, StoreLockedError
from rag.models import utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (collection TEXT PRIMARY KEY, manifest TEXT NOT NULL,
                                   sealed INTEGER NOT NULL DEFAULT 0, points INTEGER NOT NULL DEFAULT 0,
                                   files TEXT);
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, target TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alias_moves (id INTEGER PRIMARY KEY AUTOINCREMENT, alias TEXT NOT NULL,
                                        previous TEXT, target TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, dimension INTEGER);
CREATE TABLE IF NOT EXISTS rows (tbl TEXT NOT NULL, key TEXT NOT NULL, payload TEXT NOT NULL, vector BLOB,
                                 PRIMARY KEY (tbl, key)) WITHOUT ROWID;
"""
#: how long a writer waits for another writer's transaction before giving up
BUSY_TIMEOUT_MS = 30_000

#: a row written with a move or a deletion, in its transaction: (table, key, payload)
TableRow = tuple[str, str, dict]


class Catalog:
    """One connection to ``catalog.sqlite``; every method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._add_files_column()
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()  # a handle left open would keep the file (and its mount) busy
            raise StoreError(f"cannot open the store catalog {path}: {exc}") from None

    def _add_files_column(self) -> None:
        """Stores made before sealed builds' file lists were recorded get the column (empty: unchecked)."""
        if "files" in {row[1] for row in self._db.execute("PRAGMA table_info(builds)")}:
            return
        try:
            self._db.execute("ALTER TABLE builds ADD COLUMN files TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it meanwhile
                raise

    def close(self) -> None:
        """Close the connection (committed work is already on disk)."""
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front: what the transaction reads cannot change under it.
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, *args: object) -> list[tuple]:
        with self._errors():
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as the store's (a full disk, a lock held past the busy timeout, a file that cannot
        be written, a failed constraint); the transaction is rolled back, so nothing was changed."""
        try:
            yield
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # our SQL is wrong: a bug, with its traceback
        except sqlite3.DatabaseError as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _store_error(exc, self.path) from None

    # --- builds ------------------------------------------------------------------------------------

    def builds(self) -> list[str]:
        """Every build's collection name."""
        return [name for (name,) in self._all("SELECT collection FROM builds ORDER BY collection")]

    def add_build(self, collection: str, manifest: dict) -> bool:
        """Record a new build; False when one of that name exists (builds are never overwritten)."""
        with self._write() as db:
            cursor = db.execute("INSERT OR IGNORE INTO builds (collection, manifest) VALUES (?, ?)",
                                (collection, json.dumps(manifest)))
            return cursor.rowcount == 1

    def manifest(self, collection: str) -> dict | None:
        """A build's manifest as stored, or None when there is no such build.

        Raises:
            DamagedBuildError: the stored manifest is not JSON.
        """
        found = self._all("SELECT manifest FROM builds WHERE collection = ?", collection)
        return _json(found[0][0], f"the manifest of build {collection}") if found else None

    def has_build(self, collection: str) -> bool:
        """Whether a build of that name is recorded (readable or not)."""
        return bool(self._all("SELECT 1 FROM builds WHERE collection = ?", collection))

    def write_manifest(self, collection: str, manifest: dict) -> None:
        """Replace a build's manifest, but for its promotion history: the stored one is kept.

        Why: a caller's copy may have been read before an alias move onto the build; writing it back
        would erase that move's record. Only ``swap_alias`` writes promotions, in the move's transaction.
        """
        with self._write() as db:
            found = db.execute("SELECT manifest FROM builds WHERE collection = ?", (collection,)).fetchone()
            if found is None:
                return
            stored = _json(found[0], f"the manifest of build {collection}")
            kept = {**manifest, "promotions": stored.get("promotions", [])}
            db.execute("UPDATE builds SET manifest = ? WHERE collection = ?", (json.dumps(kept), collection))

    def seal(self, collection: str, points: int, files: dict[str, list]) -> None:
        """Record that a build's shard is sealed (indexed, flushed, immutable) with ``points`` points and
        these ``files`` (relative path -> [size, hash]), against which it is checked later."""
        with self._write() as db:
            db.execute("UPDATE builds SET sealed = 1, points = ?, files = ? WHERE collection = ?",
                       (points, json.dumps(files), collection))

    def sealed_files(self, collection: str) -> dict[str, list] | None:
        """The files recorded when the build was sealed (None: not sealed, or sealed before they were)."""
        found = self._all("SELECT files FROM builds WHERE collection = ?", collection)
        return _json(found[0][0], f"the file list of build {collection}") if found and found[0][0] else None

    def sealed(self, collection: str) -> tuple[bool, int]:
        """(sealed?, points at sealing) of a build."""
        found = self._all("SELECT sealed, points FROM builds WHERE collection = ?", collection)
        return (bool(found[0][0]), int(found[0][1])) if found else (False, 0)

    def delete_build(self, collection: str, tables: Sequence[str], rows: Sequence[TableRow] = ()) -> None:
        """Forget a build and its tables, and write ``rows`` (its audit entry), in one transaction: no
        orphaned table is ever left, and no deletion without its record."""
        with self._write() as db:
            db.execute("DELETE FROM builds WHERE collection = ?", (collection,))
            for table in tables:
                db.execute("DELETE FROM rows WHERE tbl = ?", (table,))
                db.execute("DELETE FROM tables WHERE name = ?", (table,))
            _insert(db, rows)

    # --- aliases -----------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """Alias -> the build it points at."""
        return dict(self._all("SELECT name, target FROM aliases"))

    def swap_alias(self, alias: str, *, expected: str | None, target: str,
                   record: Callable[[dict], dict] | None = None, rows: Sequence[TableRow] = ()) -> dict | None:
        """Point ``alias`` at ``target`` only if it points at ``expected`` now, atomically, and log the move;
        in the same transaction, ``record`` rewrites the target's manifest (the move's promotion event)
        and ``rows`` are written (its audit entry).

        Returns:
            The target's manifest as written by ``record`` (None without ``record``).

        Raises:
            AliasConflictError: the alias points elsewhere; nothing was changed or written.
        """
        with self._write() as db:
            found = db.execute("SELECT target FROM aliases WHERE name = ?", (alias,)).fetchone()
            current = found[0] if found else None
            if current != expected:
                raise AliasConflictError(
                    f"alias {alias!r} points at {current or 'nothing'} but this run expected "
                    f"{expected or 'no alias'}: someone else moved it; the alias was left untouched. "
                    "Check `ragops status`, then re-run"
                )
            manifest = None
            if record is not None:
                stored = db.execute("SELECT manifest FROM builds WHERE collection = ?", (target,)).fetchone()
                manifest = record(_json(stored[0], f"the manifest of build {target}") if stored else {})
                db.execute("UPDATE builds SET manifest = ? WHERE collection = ?", (json.dumps(manifest), target))
                if current is not None:
                    _confirm_last_promotion(db, current)
            db.execute("INSERT INTO aliases (name, target) VALUES (?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET target = excluded.target", (alias, target))
            db.execute("INSERT INTO alias_moves (alias, previous, target, at) VALUES (?, ?, ?, ?)",
                       (alias, current, target, utc_now().isoformat()))
            _insert(db, rows)
            return manifest

    def alias_moves(self, alias: str) -> list[tuple[str | None, str, str]]:
        """(previous, target, at) of every move of ``alias``, oldest first."""
        return [tuple(row) for row in self._all(
            "SELECT previous, target, at FROM alias_moves WHERE alias = ? ORDER BY id", alias)]

    # --- tables ------------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Every table's name."""
        return [name for (name,) in self._all("SELECT name FROM tables ORDER BY name")]

    def has_table(self, table: str) -> bool:
        return bool(self._all("SELECT 1 FROM tables WHERE name = ?", table))

    def ensure_table(self, table: str, dimension: int | None = None) -> None:
        """Create a table (a vector table when ``dimension`` is given) unless it exists."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO tables (name, dimension) VALUES (?, ?)", (table, dimension))

    def put_rows(self, table: str, rows: Sequence[tuple[str, dict, np.ndarray | None]], dimension: int | None) -> None:
        """Write rows (replacing those with the same key) and create the table if needed, in one transaction."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO tables (name, dimension) VALUES (?, ?)", (table, dimension))
            db.executemany(
                "INSERT OR REPLACE INTO rows (tbl, key, payload, vector) VALUES (?, ?, ?, ?)",
                [(table, key, json.dumps(payload), _blob(vector)) for key, payload, vector in rows],
            )

    def get_rows(self, table: str, keys: Sequence[str], vectors: bool) -> dict[str, tuple[dict, np.ndarray | None]]:
        """key -> (payload, vector) of the ``keys`` that exist."""
        found: dict[str, tuple[dict, np.ndarray | None]] = {}
        column = "vector" if vectors else "NULL"
        for start in range(0, len(keys), 500):  # SQLite binds at most 999 parameters per statement
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, payload, vector in self._all(
                f"SELECT key, payload, {column} FROM rows WHERE tbl = ? AND key IN ({marks})", table, *chunk
            ):
                found[key] = (_json(payload, f"row {key!r} of {table}"), _array(vector))
        return found

    def delete_rows(self, table: str, keys: Sequence[str]) -> None:
        """Delete the rows of ``keys`` (absent ones are ignored)."""
        with self._write() as db:
            db.executemany("DELETE FROM rows WHERE tbl = ? AND key = ?", [(table, key) for key in keys])

    def scan_rows(self, table: str, vectors: bool) -> Iterator[tuple[str, dict, np.ndarray | None]]:
        """Every row of a table, by key, a page at a time (a long scan holds no lock between pages)."""
        column = "vector" if vectors else "NULL"
        after = ""
        while True:
            page = self._all(f"SELECT key, payload, {column} FROM rows WHERE tbl = ? AND key > ? "
                             "ORDER BY key LIMIT 1000", table, after)
            for key, payload, vector in page:
                yield key, _json(payload, f"row {key!r} of {table}"), _array(vector)
            if len(page) < 1000:
                return
            after = page[-1][0]

    def count_rows(self, table: str) -> int:
        return int(self._all("SELECT COUNT(*) FROM rows WHERE tbl = ?", table)[0][0])

    def drop_table(self, table: str) -> None:
        """Delete a table and its rows."""
        with self._write() as db:
            db.execute("DELETE FROM rows WHERE tbl = ?", (table,))
            db.execute("DELETE FROM tables WHERE name = ?", (table,))


def _confirm_last_promotion(db: sqlite3.Connection, collection: str) -> None:
    """Confirm a pending last promotion event of the build the alias leaves: it was live, so that move
    happened (a run of an earlier ragops, which recorded moves in steps, died before confirming it)."""
    found = db.execute("SELECT manifest FROM builds WHERE collection = ?", (collection,)).fetchone()
    try:
        manifest = json.loads(found[0]) if found else None
        last = manifest["promotions"][-1] if manifest and manifest.get("promotions") else None
    except (TypeError, ValueError, KeyError):
        return  # an unreadable manifest is named where it is read; the move does not depend on it
    if isinstance(last, dict) and last.get("pending"):
        last["pending"] = False
        db.execute("UPDATE builds SET manifest = ? WHERE collection = ?", (json.dumps(manifest), collection))


def _insert(db: sqlite3.Connection, rows: Sequence[TableRow]) -> None:
    """Write vectorless ``rows`` inside the caller's transaction, creating their tables if needed."""
    for table, key, payload in rows:
        db.execute("INSERT OR IGNORE INTO tables (name, dimension) VALUES (?, NULL)", (table,))
        db.execute("INSERT OR REPLACE INTO rows (tbl, key, payload, vector) VALUES (?, ?, ?, NULL)",
                   (table, key, json.dumps(payload)))


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _json(text: str, what: str):
    """A stored JSON value; a value that is not JSON (an overwritten row) is damage, named."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise DamagedBuildError(f"{what} is damaged (not JSON: {exc})") from None


def _store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """The ``StoreError`` an SQLite error on the catalog at ``path`` stands for."""
    text = str(exc)
    if "disk is full" in text:
        return StoreFullError(f"writing the store's catalog failed: the disk is full ({exc}). Nothing was "
                              "changed: free some space and run again")
    if "locked" in text or "busy" in text:
        return StoreLockedError(
            f"the store's catalog {path} stayed locked by another process's write for "
            f"{BUSY_TIMEOUT_MS / 1000:g} s ({exc}); nothing was changed. Find the process holding it (`fuser "
            f"{path}` names it), let it finish or stop it, and run again", transient=True)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StoreError(f"the store's catalog {path} cannot be written ({exc}): ragops writes to its store "
                          "even to read it (the catalog's write-ahead log, readers' snapshots). Give this user "
                          "write access to the store folder, or copy the store somewhere writable")
    return StoreError(f"the store's catalog {path} failed ({exc}); nothing was changed")

