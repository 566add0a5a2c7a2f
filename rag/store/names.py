"""Every name ragops gives to what it keeps in a store, in one place.

A build is ``<alias>__<version>`` and its document table ``<alias>__<version>__docs``. Per-alias tables
that are not builds start with ``_ragops_``; aliases cannot start with "_", so they never clash with a
build. Rows in tables are keyed by strings; ``record_id`` turns a key into the id a backend stores.
"""

from __future__ import annotations

import hashlib
import uuid

from rag.models import ModelFingerprint

SEPARATOR = "__"
DOCS_SUFFIX = "__docs"
CACHE_PREFIX = "_ragops_cache__"
LEDGER_PREFIX = "_ragops_ledger__"
QUERY_LOG_PREFIX = "_ragops_queries__"
JOURNAL_PREFIX = "_ragops_parsing__"
AUDIT_PREFIX = "_ragops_audit__"
#: ``ragops migrate``'s record in the store it made; its "done" row is written last (rag/store/migrate.py)
MIGRATION_TABLE = "_ragops_migration"
#: one lease record per alias (server stores; embedded stores lock a file instead, rag/store/locks.py)
LOCKS_TABLE = "_ragops_locks"
# Record ids are UUIDv5 of the record's key in this namespace.
_RECORD_NAMESPACE = uuid.UUID("0b5c8a52-31c6-4c43-8f55-4a1d7b8f1e21")


def collection_name(alias: str, version: str) -> str:
    """Physical collection of a build: ``<alias>__<version>``."""
    return f"{alias}{SEPARATOR}{version}"


def version_of(collection: str) -> str:
    """The version part of a build's collection name."""
    return collection.split(SEPARATOR, 1)[1] if SEPARATOR in collection else collection


def is_build_of(alias: str, name: str) -> bool:
    """True when ``name`` is a build of ``alias`` (not its document table, not another alias's build)."""
    prefix = alias + SEPARATOR
    return name.startswith(prefix) and SEPARATOR not in name[len(prefix) :]


def docs_collection(collection: str) -> str:
    """The document table that belongs to a build."""
    return collection + DOCS_SUFFIX


def build_of_table(table: str) -> str | None:
    """The build a document table belongs to, or None when ``table`` is not a document table."""
    return table[: -len(DOCS_SUFFIX)] if table.endswith(DOCS_SUFFIX) else None


def fingerprint_key(fingerprint: ModelFingerprint) -> str:
    """Short key of everything that decides the vector space (not the install path)."""
    # The space, not the backend: torch and onnx float32 vectors are interchangeable, so they share caches.
    # "reference" is spelled float32 and the other spaces by their dtype, so keys made before backends existed hold.
    space = "float32" if fingerprint.space == "reference" else fingerprint.space
    parts = [fingerprint.weights_sha256, space, str(fingerprint.normalize),
             str(fingerprint.max_seq_length), str(fingerprint.dimension)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cache_table(alias: str, fingerprint: ModelFingerprint) -> str:
    """The alias's embedding cache for one model."""
    return f"{cache_tables_of(alias)}{fingerprint_key(fingerprint)}"


def cache_tables_of(alias: str) -> str:
    """Prefix shared by every embedding cache of ``alias``."""
    return f"{CACHE_PREFIX}{alias}{SEPARATOR}"


def query_log_table(alias: str, fingerprint: ModelFingerprint) -> str:
    """The alias's query log for one model (vectors of different models are not comparable)."""
    return f"{QUERY_LOG_PREFIX}{alias}{SEPARATOR}{fingerprint_key(fingerprint)}"


def ledger_table(alias: str) -> str:
    """The alias's freshness ledger: one row per source."""
    return LEDGER_PREFIX + alias


def journal_table(alias: str) -> str:
    """The alias's record of documents being parsed (rag/index/journal.py)."""
    return JOURNAL_PREFIX + alias


def audit_table(alias: str) -> str:
    """The alias's audit trail (rag/index/audit.py): append-only, never pruned."""
    return AUDIT_PREFIX + alias


def record_id(key: str) -> str:
    """Deterministic id of a record (document, source, cached vector) in its table.

    Never raises: a key with lone surrogates (an undecodable file name) hashes by its escaped bytes;
    any other key hashes exactly as before.
    """
    return str(uuid.uuid5(_RECORD_NAMESPACE, key.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")))
