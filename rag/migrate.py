"""Carry a store made by an earlier ragops (qdrant-client's local mode) over to Qdrant Edge.

Everything is copied: every build (points with their vectors and payloads, manifest, document table),
every alias, the embedding caches, freshness ledgers, query logs and parse journals. The old folder is
first renamed to ``<folder>.local-mode`` and kept; the new store is built at the original path, and a
``done`` row is written last. A migration killed at any point is rerun the same way: it finds the
renamed folder and no ``done`` row, removes the half-made store, and starts the copy again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from rag.config import StoreSettings
from rag.errors import ConfigError
from rag.names import (
    AUDIT_PREFIX,
    CACHE_PREFIX,
    JOURNAL_PREFIX,
    LEDGER_PREFIX,
    LOCKS_TABLE,
    QUERY_LOG_PREFIX,
    docs_collection,
)
from rag.store import IndexStore, Point, Row
from rag.store_edge import is_local_mode

log = logging.getLogger(__name__)

MIGRATION_TABLE = "_ragops_migration"
PAGE = 2048


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


def backup_of(folder: Path) -> Path:
    """Where a migration keeps the old store."""
    return folder.with_name(folder.name + ".local-mode")


def migrate_store(location: str) -> Migration:
    """Migrate the local-mode store at ``location`` to Qdrant Edge, in place (the old one kept beside it).

    Raises:
        ConfigError: there is nothing to migrate at ``location``, or a backup already exists beside a
            store that is still in local mode.
    """
    folder = Path(location)
    backup = backup_of(folder)
    if is_local_mode(folder):
        if backup.exists():
            raise ConfigError(f"{backup} already exists: move it away, then run `ragops migrate` again")
        folder.rename(backup)  # one rename: the old store is whole at one of its two paths
    elif not backup.exists():
        if (folder / "catalog.sqlite").exists():
            return Migration(store=str(folder), backup="", already_done=True)
        raise ConfigError(f"no store from an earlier ragops at {folder}: nothing to migrate")
    elif (folder / "catalog.sqlite").exists():
        with IndexStore.open(StoreSettings(location=str(folder), engine="edge")) as new:
            if new.get_rows(MIGRATION_TABLE, ["done"]):
                return Migration(store=str(folder), backup=str(backup), already_done=True)
        shutil.rmtree(folder)  # a migration killed half-way: start again from the backup
    report = Migration(store=str(folder), backup=str(backup))
    with IndexStore.open(StoreSettings(location=str(backup), engine="qdrant")) as old, \
            IndexStore.open(StoreSettings(location=str(folder), engine="edge")) as new:
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
        for name in names:
            kind = next((prefix for prefix in _KEYS if name.startswith(prefix)), None)
            if kind is not None:
                report.tables[name] = _copy_table(old, new, name, _KEYS[kind])
            elif name.startswith("_ragops_") and name != LOCKS_TABLE:
                report.skipped.append(name)
        new.put_rows(MIGRATION_TABLE, [Row("done", report.model_dump(mode="json"))])  # last: the migration is done
    log.info("migrated %d builds and %d tables from %s", len(report.builds), len(report.tables), backup)
    return report


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
