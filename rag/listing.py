"""What a connector hands the build: the documents it listed, and the entries it did not list, with why.

Two kinds of entries are not listed, and the build treats them differently:

- **skipped**: deliberately not indexed (a symbolic link not followed, a link leaving the source root,
  a named pipe). It is as if the entry were not there: a document the base build held under its id is
  deleted.
- **unreadable**: the entry is there but its state cannot be known (a broken link, a stat that fails).
  The listing is incomplete for that entry, so whatever the base build held under its id (or, for a
  folder, under it) is kept exactly as it was, never deleted.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from rag.models import DocumentRecord, DocumentRef


class Skipped(BaseModel):
    """An entry of a source that the listing does not include, and why."""

    doc_id: str = Field(description="The id the entry has (or would have) as a document; for a folder, its prefix.")
    reason: str = Field(description="Why it is not listed, in a few words.")


class SourceListing(BaseModel):
    """A source's complete listing: the documents, plus the entries skipped or unreadable, with reasons."""

    refs: list[DocumentRef] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list, description="Not indexed on purpose.")
    unreadable: list[Skipped] = Field(
        default_factory=list, description="Present but unreadable: what the base holds of them is kept."
    )


def unchanged(ref: DocumentRef, record: DocumentRecord | None) -> bool:
    """The one rule for "did this document change?", shared by planning and freshness.

    Unchanged when the listing signal equals the version the record holds, or the version that failed
    (a quarantined document is retried only once it changes again).
    """
    if record is None:
        return False
    failed = record.quarantine.signal if record.quarantine else None
    return ref.signal in (record.signal, failed)


def covered(doc_id: str, unreadable: set[str]) -> bool:
    """The id is an unreadable entry, or lies under one (an unreadable folder covers its documents)."""
    if not unreadable:
        return False
    parts = doc_id.split("/")
    return any("/".join(parts[:end]) in unreadable for end in range(len(parts), 1, -1))
