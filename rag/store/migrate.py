"""Carry a store made by an earlier ragops (qdrant-client's local mode) over to Qdrant Edge.

Everything is copied: every build (points with their vectors and payloads, manifest, document table),
every alias, the embedding caches, freshness ledgers, query logs and parse journals.

The new store is made beside the old one, in ``<folder>.migrating``; its ``done`` row is written last.
Then the old folder is renamed to ``<folder>.local-mode`` (kept) and the new one renamed into place:
the folder holds the old store or the whole new one, never a part of it. While ``<folder>.migrating``
exists every command refuses the folder with one line naming ``ragops migrate``
(``rag.store.refuse_unfinished_migration``), so nothing is built in a half-made store, and a rerun
after a kill at any point goes on from where the kill left it: a copy without its ``done`` row is
started again (nobody else writes there), a finished one is only put in place. The migration holds
the old store open (local mode admits one process) and the lock of every alias it has (rag/store/locks.py),
so no reindex, promotion or rollback of it, and no second migration, runs meanwhile.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from pydantic import BaseModel

from rag.config import StoreSettings
from rag.errors import ConfigError
from rag.failpoints import failpoint
from rag.store import IndexStore, Point, Row, is_local_mode, migration_folders, open_store
from rag.store.locks import LOCK_FOLDER, AliasLock
from rag.store.names import (
    AUDIT_PREFIX,
    CACHE_PREFIX,
    JOURNAL_PREFIX,
    LEDGER_PREFIX,
    LOCKS_TABLE,
    MIGRATION_TABLE,
    QUERY_LOG_PREFIX,
    docs_collection,
)

log = logging.getLogger(__name__)

PAGE = 2048
#: attempts at taking hold of the old store, each after another migration moved it meanwhile
ATTEMPTS = 3


class Migration(BaseModel):
    """What a migration carried over (``ragops migrate --json``)."""

    store: str
    backup: str
    already_done: bool = False
    builds: dict[str, int] = {}
    aliases: dict[str, str] = {}
    tables: dict[str, int] = {}
    skipped: list[str] = []


#: how each kind of table keys its rows (the old store kept only a hash of the key)
_KEYS: dict[str, Callable[[Point], str]] = {
    CACHE_PREFIX: lambda p: p.payload["text_hash"],
    LEDGER_PREFIX: lambda p: f"source:{p.payload['name']}",
    QUERY_LOG_PREFIX: lambda p: p.payload.get("id", p.id),
    JOURNAL_PREFIX: lambda p: p.payload["doc_id"],
    AUDIT_PREFIX: lambda p: f"{p.payload['at']}-{p.id}",  # unique, and sorts by time as the originals did
}


def migrate_store(location: str) -> Migration:
    """Migrate the local-mode store at ``location`` to Qdrant Edge, in place (the old one kept beside it).

    Safe to rerun after a kill at any point: it finishes what the killed run began, and never deletes
    a store at ``location`` (the only thing it deletes is its own unfinished copy).

    Raises:
        ConfigError: there is nothing to migrate at ``location``; a backup already exists beside a store
            that is still in local mode; or something else is in the way (the message says what to move).
        StoreLockedError: another process has the old store open.
    """
    folder = Path(location)
    for _ in range(ATTEMPTS):
        old = _old_store(folder)
        if isinstance(old, Migration):
            return old
        with _holding(old) as source:
            if _old_store(folder) == old:  # still there: nobody can move it now
                return _migrate(folder, old, source)
        # another `ragops migrate` moved it while this one waited for the locks: look again
    raise ConfigError(f"the store at {folder} kept moving while `ragops migrate` waited for it; run it again")


def _old_store(folder: Path) -> Path | Migration:
    """Where the local-mode store to migrate is now (the folder, or the backup once moved there), or the
    answer when there is none (already migrated).

    Raises:
        ConfigError: nothing to migrate, or a state ``ragops migrate`` must not resolve by itself.
    """
    side, backup = migration_folders(folder)
    if is_local_mode(folder):
        if backup.exists():
            raise ConfigError(f"{backup} already exists: move it away, then run `ragops migrate` again")
        return folder
    if is_local_mode(backup) and not _is_store(folder):
        return backup  # moved aside by a run killed before its copy was in place (or by an earlier release)
    if side.exists():
        raise ConfigError(f"{side} is left from a migration, but neither {folder} nor {backup} holds the store "
                          f"it copies: move {side} away, then run `ragops migrate` again")
    if (folder / "catalog.sqlite").exists():
        with open_store(StoreSettings(location=str(folder), engine="edge"), create=False):
            pass  # refuses a store an earlier release's migration left half made
        return Migration(store=str(folder), backup=str(backup) if backup.exists() else "", already_done=True)
    raise ConfigError(f"no store from an earlier ragops at {folder}: nothing to migrate")


def _is_store(folder: Path) -> bool:
    return (folder / "catalog.sqlite").exists() or (folder / "meta.json").exists()


@contextmanager
def _holding(old: Path) -> Iterator[IndexStore]:
    """The old store, open (local mode admits no other process), with every alias's lock held.

    The aliases are those with a lock file (every run that ever wrote one has one) and those in the
    store; the locks are taken first, waiting for a run holding one to finish.
    """
    settings = StoreSettings(location=str(old), engine="qdrant")
    run = f"ragops migrate (pid {os.getpid()})"
    with ExitStack() as held:
        locked: set[str] = set()

        def lock(aliases: set[str]) -> None:
            for alias in sorted(aliases - locked):  # always in the same order: two migrations cannot deadlock
                held.enter_context(AliasLock(settings, alias).held(run=run, report=log.warning))
                locked.add(alias)

        lock({path.stem for path in (old / LOCK_FOLDER).glob("*.lock")})
        # open_store would refuse the folder while its copy is unfinished: the migration is what finishes it
        source = held.enter_context(open_store(settings, migrating=True))
        lock({alias for name in source.collection_names() if not name.startswith("_ragops_")
              for alias in source.aliases_of(name)})
        yield source


def _migrate(folder: Path, old: Path, source: IndexStore) -> Migration:
    """Copy ``source`` (at ``old``) into the side folder unless a finished copy is there, then put it in place."""
    side, backup = migration_folders(folder)
    report = _finished_copy(side) if side.exists() else None
    if report is None:
        shutil.rmtree(side, ignore_errors=True)  # a copy killed half-way: only migrations write there
        report = Migration(store=str(folder), backup=str(backup))
        with open_store(StoreSettings(location=str(side), engine="edge")) as new:
            _copy(source, new, report)
            new.put_rows(MIGRATION_TABLE, [Row("done", report.model_dump(mode="json"))])  # last: the copy is whole
        log.info("migrated %d builds and %d tables from %s", len(report.builds), len(report.tables), old)
    failpoint("migrate-done")
    if old == folder:
        folder.rename(backup)  # one rename: the old store is whole at one of its two paths
        failpoint("migrate-moved")
    _clear_way(folder)
    side.rename(folder)  # one rename: the new store appears whole, with its done row
    return report


def _finished_copy(side: Path) -> Migration | None:
    """The report of a finished copy in ``side`` (None: it has no done row, or it cannot be read)."""
    if not (side / "catalog.sqlite").exists():
        return None
    try:
        with open_store(StoreSettings(location=str(side), engine="edge"), create=False) as new:
            done = new.get_rows(MIGRATION_TABLE, ["done"]).get("done")
    except Exception as exc:  # a copy that cannot be read is made again
        log.warning("the unfinished copy in %s cannot be read (%s): copying again", side, exc)
        return None
    return Migration.model_validate(done.payload) if done else None


def _clear_way(folder: Path) -> None:
    """Make room for the new store at ``folder``: a lock folder a refused command made there goes.

    Raises:
        ConfigError: something else was put at ``folder`` while the store was away.
    """
    if not folder.exists():
        return
    found = sorted(os.listdir(folder))
    if set(found) <= {LOCK_FOLDER}:
        shutil.rmtree(folder)
        return
    raise ConfigError(f"{folder} was made while its migration was stopped and holds {', '.join(found[:5])}: "
                      f"move it away, then run `ragops migrate --store {folder}` again to put the new store there")


def _copy(old: IndexStore, new: IndexStore, report: Migration) -> None:
    """Every build, alias and table of ``old`` into ``new``, noted in ``report``."""
    names = old.collection_names()
    for name in names:
        if name.startswith("_ragops_") or name.endswith("__docs"):
            continue
        manifest = old.read_manifest(name)
        if manifest is None:
            report.skipped.append(name)  # not made by ragops
            continue
        report.builds[name] = _copy_build(old, new, manifest)
        for alias in old.aliases_of(name):
            new.swap_alias(alias, expected=None, target=name)
            report.aliases[alias] = name
        failpoint("migrate-copy")
    for name in names:
        kind = next((prefix for prefix in _KEYS if name.startswith(prefix)), None)
        if kind is not None:
            report.tables[name] = _copy_table(old, new, name, _KEYS[kind])
        elif name.startswith("_ragops_") and name not in (LOCKS_TABLE, MIGRATION_TABLE):
            report.skipped.append(name)


def _copy_build(old: IndexStore, new: IndexStore, manifest) -> int:
    new.create_build(manifest)
    batch: list[Point] = []
    for point in old.scan_rows(manifest.collection, vectors=True):
        batch.append(point)
        if len(batch) >= PAGE:
            new.write_points(manifest.collection, batch)
            batch = []
    new.write_points(manifest.collection, batch)
    records = [Row(p.payload["doc_id"], p.payload) for p in old.scan_rows(docs_collection(manifest.collection))]
    new.put_rows(docs_collection(manifest.collection), records)
    new.finish_bulk_load(manifest.collection)  # sealed like any build: indexed, immutable
    new.write_manifest(manifest)
    return new.count(manifest.collection)


def _copy_table(old: IndexStore, new: IndexStore, name: str, key: Callable[[Point], str]) -> int:
    rows = [Row(key(p), {**p.payload, "id": key(p)} if name.startswith(QUERY_LOG_PREFIX) else p.payload, p.vector)
            for p in old.scan_rows(name, vectors=True)]
    dimension = len(rows[0].vector) if rows and rows[0].vector is not None else None
    for start in range(0, len(rows), PAGE):
        new.put_rows(name, rows[start : start + PAGE], dimension=dimension)
    return len(rows)
