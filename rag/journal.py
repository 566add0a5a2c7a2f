"""Documents being parsed, recorded before parsing: a document that a run died on is recognised.

The parsing sandbox (rag/sandbox.py) contains what a document can do to its parser. What it cannot
contain is the run itself dying while a document is parsed (the OOM killer picking the run, a kill -9
of a run that looked stuck). Each such death leaves the document's entry here, with the version
(listing signal) being parsed and how many runs died on it; after ``pipeline.max_parse_attempts`` of
them, the next run quarantines that version instead of parsing it once more. One death is forgiven:
it is as likely the operator's kill as the document's fault.

Entries live in the alias's ``_ragops_parsing__<alias>`` table, keyed by document id, and are removed
once the document's parse ended either way.
"""

from __future__ import annotations

from rag.models import DocumentRef, utc_now
from rag.store import IndexStore, record_id, store_errors

#: per-alias table of documents being parsed
JOURNAL_PREFIX = "_ragops_parsing__"


class ParseJournal:
    """The alias's record of documents being parsed (``begin`` before, ``end`` after)."""

    def __init__(self, store: IndexStore, alias: str) -> None:
        self.store = store
        self.table = JOURNAL_PREFIX + alias
        self._ready = False

    def begin(self, ref: DocumentRef) -> int:
        """Record that ``ref`` is being parsed; returns how many earlier runs died parsing this version."""
        from qdrant_client import models

        self._ensure()
        point_id = record_id(ref.doc_id)
        with store_errors(f"reading {self.table}"):
            found = self.store.client.retrieve(self.table, [point_id], with_payload=True)
        entry = found[0].payload if found else None
        deaths = entry["attempts"] if entry and entry.get("signal") == ref.signal else 0
        payload = {"doc_id": ref.doc_id, "signal": ref.signal, "attempts": deaths + 1,
                   "started_at": utc_now().isoformat()}
        with store_errors(f"writing {self.table}"):
            self.store.client.upsert(self.table, [models.PointStruct(id=point_id, vector={}, payload=payload)],
                                     wait=True)
        return deaths

    def end(self, ref: DocumentRef) -> None:
        """The parse of ``ref`` ended (parsed, or quarantined with a reason): forget it."""
        from qdrant_client import models

        self._ensure()
        with store_errors(f"writing {self.table}"):
            self.store.client.delete(self.table, models.PointIdsList(points=[record_id(ref.doc_id)]), wait=True)

    def _ensure(self) -> None:
        if not self._ready:
            self.store.ensure_table(self.table)
            self._ready = True
