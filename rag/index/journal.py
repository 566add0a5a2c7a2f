"""Documents being parsed and chunked, recorded before parsing: a document that a run died on is recognised.

The parsing sandbox (rag/ingest/sandbox.py) contains what a document can do to its parser. What it cannot
contain is the run itself dying while a document is parsed or chunked (the OOM killer picking the run,
a kill -9 of a run that looked stuck). Each such death leaves the document's entry here, with the version
(listing signal) being parsed and how many runs died on it; after ``pipeline.max_parse_attempts`` of
them, the next run quarantines that version instead of parsing it once more. One death is forgiven:
it is as likely the operator's kill as the document's fault.

Entries live in the alias's journal table (``rag.store.names.journal_table``), keyed by document id, and are removed
once the document's parse and chunking ended either way.
"""

from __future__ import annotations

from rag.models import DocumentRef, utc_now
from rag.store import IndexStore, Row
from rag.store.names import journal_table


class ParseJournal:
    """The alias's record of documents being parsed (``begin`` before, ``end`` after)."""

    def __init__(self, store: IndexStore, alias: str) -> None:
        self.store = store
        self.table = journal_table(alias)

    def begin(self, ref: DocumentRef) -> int:
        """Record that ``ref`` is being parsed; returns how many earlier runs died parsing this version."""
        found = self.store.get_rows(self.table, [ref.doc_id]).get(ref.doc_id)
        entry = found.payload if found else None
        deaths = entry["attempts"] if entry and entry.get("signal") == ref.signal else 0
        payload = {"doc_id": ref.doc_id, "signal": ref.signal, "attempts": deaths + 1,
                   "started_at": utc_now().isoformat()}
        self.store.put_rows(self.table, [Row(ref.doc_id, payload)])
        return deaths

    def end(self, ref: DocumentRef) -> None:
        """The parse of ``ref`` ended (parsed, or quarantined with a reason): forget it."""
        self.store.delete_rows(self.table, [ref.doc_id])
