"""What a connector hands the build: the documents it listed, and the entries it did not list, with why.

``SourceListing`` is what a connector lists; ``Listing`` is one source's listing in a run (complete, or
failed with the reason), which the build plans from (rag/index/plan.py).

Two kinds of entries are not listed, and the build treats them differently:

- **skipped**: deliberately not indexed (a symbolic link not followed, a link leaving the source root,
  a named pipe). It is as if the entry were not there: a document the base build held under its id is
  deleted.
- **unreadable**: the entry is there but its state cannot be known (a broken link, a stat that fails).
  The listing is incomplete for that entry, so whatever the base build held under its id (or, for a
  folder, under it) is kept exactly as it was, never deleted.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from rag.models import DocumentRef


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


class Listing(BaseModel):
    """One source's listing in a run: complete, or failed with the reason.

    A complete listing may still be incomplete for single entries: those in ``unreadable`` (and, for
    a folder, everything under it) keep what the base holds of them.
    """

    source: str
    kind: str
    uri: str
    listed_at: datetime
    refs: list[DocumentRef] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list, description="Entries not indexed on purpose, with why.")
    unreadable: list[Skipped] = Field(
        default_factory=list, description="Entries whose state is unknown: their documents are kept, not deleted."
    )
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Only a complete listing may delete documents."""
        return self.error is None
