"""Planning a build: what to carry, what to (re)process, what to delete, and what to start from.

Pure functions over listings, manifests and document tables: no store, no model, no Prefect, so every
decision here is tested in milliseconds (tests/index/test_plan.py).

- ``unchanged`` is the one rule for "did this document change?": planning uses it, and so does
  freshness (rag/index/freshness.py), so the two can never disagree.
- ``next_retry`` and ``retry_due`` are the rule for failures that are not a property of the document
  (a parse that timed out or stalled): the failing version is parsed again by the first run after a
  back-off that doubles with each consecutive failure. Other failures wait until the document changes.
- ``choose_base`` picks the build to start from: the live one if it was made with the same model and
  chunking, else the newest such complete build, else nothing (a full build).
- ``plan_build`` compares each source's listing with the base's document table. Unchanged documents
  are *carried* (points copied, nothing parsed); new or changed ones become *work*. Only a complete
  listing deletes: documents it lacks are deleted by not being carried. A source whose listing failed,
  and entries a listing could not read, keep every document as it was.
- ``explain`` says why each document would be parsed or deleted (``ragops reindex --dry-run``).
- ``deleted_at_source`` counts the live build's documents that the listings show were deleted, which
  the gate uses to tell legitimate losses from documents lost on the way.
- A source the base holds documents of but that this run does not list (left out of ``--source``, or
  removed from the configuration) is *kept*, not deleted: leaving a source out says nothing about its
  documents. Only a run told to forget it (``ragops reindex --forget-source NAME``) deletes them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Collection, Literal, Mapping, Sequence

from pydantic import BaseModel, Field

from rag.errors import SourceError
from rag.listing import Listing, Skipped
from rag.models import RETRIED_FAILURES, DocumentRecord, DocumentRef, Manifest, ModelFingerprint

#: entries named in a note; the rest are counted
NOTE_EXAMPLES = 3
#: the first wait before a timed-out or stalled document is parsed again (pipeline.parse_retry_backoff)
RETRY_BACKOFF = timedelta(hours=1)
#: the longest wait: a document that keeps timing out costs a parse_timeout of CPU a week at most
MAX_RETRY_WAIT = timedelta(days=7)


def require_a_listing(listings: Sequence[Listing]) -> None:
    """A run goes on while one source could be listed (the others keep what the base holds of them).

    Raises:
        SourceError: no source could be listed, or none lists a document; the reasons, joined, say
            what to fix.
    """
    if listings and all(not listing.complete for listing in listings):
        raise SourceError("no source could be listed: " + "; ".join(str(x.error) for x in listings))
    if listings and not any(listing.refs or listing.unreadable for listing in listings):
        # Nothing to build from: an empty build would only be rejected by the gate and left behind,
        # and an emptied (unmounted?) folder is more likely a mistake than a wish to delete everything.
        raise SourceError(
            "no documents in any source: " + "; ".join(_why_empty(x) for x in listings)
            + ". Nothing was built and the live build is unchanged; check sources[].path (or the prefix) "
            "and its include/exclude patterns"
        )


def _why_empty(listing: Listing) -> str:
    if listing.error:
        return f"{listing.source} ({listing.uri}) could not be listed: {listing.error}"
    if not listing.skipped:
        return f"{listing.source} ({listing.uri}) is empty"
    reasons = Counter(skipped.reason for skipped in listing.skipped)
    return (f"{listing.source} ({listing.uri}) has {len(listing.skipped)} entries, none indexed ("
            + ", ".join(f"{count} {reason}" for reason, count in reasons.most_common(3)) + ")")


class WorkItem(BaseModel):
    """A listed document that must be fetched and parsed, with what the base holds of it."""

    ref: DocumentRef
    previous: DocumentRecord | None = None
    retry: bool = Field(False, description="The same version again: its last parse timed out or stalled.")

    @property
    def status(self) -> Literal["new", "changed", "retried"]:
        """New to the index, a changed version of a document it holds, or a version parsed again."""
        return "retried" if self.retry else "changed" if self.previous else "new"


class BuildPlan(BaseModel):
    """What a build must do, relative to its base."""

    base: str | None = Field(description="Base build collection; None means everything is new.")
    full: str | None = Field(None, description="Why the build has no base (every document is parsed): None when it has one.")
    carry: list[DocumentRecord] = Field(default_factory=list, description="Copied as they are.")
    work: list[WorkItem] = Field(default_factory=list)
    deleted: list[DocumentRecord] = Field(default_factory=list)
    unchanged: int = Field(0, description="Carried documents that a complete listing saw unchanged.")
    kept: int = Field(
        0, description="Carried documents whose listing failed or that were unreadable: kept as they were."
    )
    listed: int = Field(0, description="Documents the listings returned.")
    unlisted_sources: dict[str, int] = Field(
        default_factory=dict,
        description="Sources the base holds documents of that this run did not list: documents kept, per source.",
    )
    forgotten_sources: dict[str, int] = Field(
        default_factory=dict, description="Sources this run was told to forget: documents deleted, per source."
    )
    notes: list[str] = Field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """False when the base already is what a new build would be."""
        return bool(self.work or self.deleted)

    @property
    def new(self) -> int:
        """Work items the base does not hold."""
        return sum(1 for w in self.work if w.status == "new")

    @property
    def changed(self) -> int:
        """Work items that replace a version the base holds."""
        return sum(1 for w in self.work if w.status == "changed")

    @property
    def retried(self) -> int:
        """Work items whose version did not change: its last parse timed out or stalled (``retry_due``)."""
        return sum(1 for w in self.work if w.status == "retried")


def unchanged(ref: DocumentRef, record: DocumentRecord | None) -> bool:
    """The one rule for "did this document change?", shared by planning and freshness.

    Unchanged when the listing signal equals the version the record holds, or the version that failed
    (a quarantined document is retried only once it changes again).
    """
    if record is None:
        return False
    failed = record.quarantine.signal if record.quarantine else None
    return ref.signal in (record.signal, failed)


def retry_due(ref: DocumentRef, record: DocumentRecord | None, now: datetime) -> bool:
    """The listed version is one whose parse timed out or stalled, and its wait (``next_retry``) is over."""
    quarantine = record.quarantine if record else None
    return (quarantine is not None and quarantine.retry_after is not None and quarantine.signal == ref.signal
            and quarantine.retry_after <= now)


def next_retry(
    previous: DocumentRecord | None, ref: DocumentRef, kind: str, now: datetime, backoff: timedelta
) -> tuple[int, datetime | None]:
    """How many consecutive runs have now failed on this version, and when a run parses it again.

    Only a timeout or a stall (``RETRIED_FAILURES``) is retried without a change: after ``backoff``,
    twice that after a second consecutive failure of the same version, and so on up to
    ``MAX_RETRY_WAIT``. Any other failure returns no time: the version waits until it changes.
    """
    if kind not in RETRIED_FAILURES:
        return 1, None
    before = previous.quarantine if previous else None
    again = before is not None and before.transient and before.signal == ref.signal
    attempts = before.attempts + 1 if again else 1
    wait = min(backoff * 2 ** min(attempts - 1, 20), MAX_RETRY_WAIT)
    return attempts, now + max(wait, timedelta(0))


def covered(doc_id: str, unreadable: set[str]) -> bool:
    """The id is an unreadable entry, or lies under one (an unreadable folder covers its documents)."""
    if not unreadable:
        return False
    parts = doc_id.split("/")
    return any("/".join(parts[:end]) in unreadable for end in range(len(parts), 1, -1))


def choose_base(
    live: str | None, builds: Sequence[Manifest | None], fingerprint: ModelFingerprint, chunking: dict
) -> str | None:
    """The build to start from: the live one if compatible, else the newest compatible complete build.

    Compatible means the same vector space (model fingerprint) and the same chunking settings, so its
    chunks and vectors are exactly what this build would produce for unchanged documents.

    Args:
        live: the collection the alias points at, if any.
        builds: the alias's builds' manifests, oldest first (None for a build without one).
    """
    def fits(manifest: Manifest | None) -> bool:
        return (manifest is not None and manifest.state == "complete"
                and manifest.model.same_space(fingerprint) and manifest.chunking == chunking)

    by_collection = {m.collection: m for m in builds if m is not None}
    if live is not None and fits(by_collection.get(live)):
        return live
    return next((m.collection for m in reversed(builds) if m is not None and m.collection != live and fits(m)), None)


def why_full(
    live: Manifest | None, fingerprint: ModelFingerprint, chunking: dict, *, full_rebuild: bool,
    live_damage: str | None = None,
) -> str:
    """Why a build starts from no base, in one line for the run summary: what differs from the live build.

    Called when ``choose_base`` found no base (or none was wanted): a build of another vector space or
    chunking policy shares no chunk or vector with this one, so every document is parsed again.
    """
    if full_rebuild:
        return "a full rebuild was asked (--full)"
    if live_damage:
        return f"the live build is damaged ({live_damage})"
    if live is None:
        return "the alias has no live build yet"
    differences = []
    if not live.model.same_space(fingerprint):
        keys = ("name", "weights_sha256", "dimension", "normalize", "space", "max_seq_length")
        changed = [f"{key} {getattr(live.model, key)} -> {getattr(fingerprint, key)}"
                   for key in keys if getattr(live.model, key) != getattr(fingerprint, key)]
        differences.append("the model's vector space changed (" + ", ".join(changed) + ")")
    if live.chunking != chunking:
        keys = sorted(set(live.chunking) | set(chunking))
        changed = [f"{key} {live.chunking.get(key)} -> {chunking.get(key)}"
                   for key in keys if live.chunking.get(key) != chunking.get(key)]
        differences.append("the chunking or parsing policy changed (" + ", ".join(changed) + ")")
    if live.state != "complete":
        differences.append(f"the live build is {live.state}")
    return "; ".join(differences) or "no build of the alias fits as a base"


def plan_build(
    listings: Sequence[Listing], base: str | None, base_records: dict[str, DocumentRecord], now: datetime,
    redaction: Mapping[str, str | None] | None = None, forget: Collection[str] = (),
) -> BuildPlan:
    """Compare listings with the base's document table: what to carry, (re)process and delete.

    A document is unchanged by ``unchanged``. Documents of a source whose listing failed are all
    carried. So are documents that a listing reports unreadable (by id, or under an unreadable folder):
    nothing is known about them, so they are kept exactly as the base holds them, never deleted.
    Skipped entries are like absent ones. Both are summed up in ``notes``. Documents of a source this
    run does not list are kept as they were too (``unlisted_sources``), unless the source is named in
    ``forget``: then they are deleted (``forgotten_sources``).

    ``redaction`` maps a source to the id of its redaction policy (``rag.ingest.redaction``; None or absent:
    none). An unchanged document held under another policy is processed again, so changing a source's
    ``redact`` settings re-processes that source's documents, and only those.

    An unchanged version whose parse timed out or stalled is processed again once ``retry_due``; until
    then it is carried, and a note says when it will be.
    """
    redaction = redaction or {}
    plan = BuildPlan(base=base, listed=sum(len(listing.refs) for listing in listings))
    by_source: dict[str, list[DocumentRecord]] = {}
    for record in base_records.values():
        by_source.setdefault(record.source, []).append(record)

    for listing in listings:
        held = by_source.pop(listing.source, [])
        if not listing.complete:
            plan.carry.extend(held)
            plan.kept += len(held)
            plan.notes.append(
                f"source {listing.source!r} could not be listed ({listing.error}); "
                f"kept its {len(held)} documents as they were"
            )
            continue
        listed, repolicied = set(), 0
        retried: list[WorkItem] = []
        waiting: list[DocumentRecord] = []
        for ref in listing.refs:
            listed.add(ref.doc_id)
            previous = base_records.get(ref.doc_id)
            due = retry_due(ref, previous, now)
            if unchanged(ref, previous) and previous.redaction == redaction.get(listing.source) and not due:
                plan.carry.append(previous.model_copy(update={"last_seen": now}))
                plan.unchanged += 1
                if previous.quarantine and previous.quarantine.signal == ref.signal and previous.quarantine.transient:
                    waiting.append(previous)
            else:
                repolicied += unchanged(ref, previous) and not due
                item = WorkItem(ref=ref, previous=previous, retry=due)
                plan.work.append(item)
                if due:
                    retried.append(item)
        plan.notes.extend(_retry_notes(listing.source, retried, waiting))
        if repolicied:
            plan.notes.append(f"source {listing.source!r}: its redaction settings changed; {repolicied} unchanged "
                              "documents are processed again under them")
        unreadable = {entry.doc_id for entry in listing.unreadable}
        unseen = [r for r in held if r.doc_id not in listed]
        kept = [r for r in unseen if covered(r.doc_id, unreadable)]
        plan.carry.extend(kept)  # as they were: not even last_seen moves, they were not seen
        plan.kept += len(kept)
        plan.deleted.extend(r for r in unseen if not covered(r.doc_id, unreadable))
        plan.notes.extend(_listing_notes(listing, len(kept)))
    for source, records in sorted(by_source.items()):  # sources this run does not list
        if source in forget:
            plan.deleted.extend(records)
            plan.forgotten_sources[source] = len(records)
            plan.notes.append(f"source {source!r} forgotten as asked (--forget-source): its {len(records)} "
                              "documents are deleted from this build")
        else:
            # Leaving a source out (a --source run, an edited configuration) says nothing about its documents.
            plan.carry.extend(records)
            plan.kept += len(records)
            plan.unlisted_sources[source] = len(records)
            plan.notes.append(f"source {source!r} is not among this run's sources; kept its {len(records)} documents "
                              f"as they were (to delete them: ragops reindex --forget-source {source})")
    return plan


def deleted_at_source(
    listings: Sequence[Listing], records: dict[str, DocumentRecord], now: datetime, forget: Collection[str] = ()
) -> int:
    """How many documents a build serves that these listings show were deleted at their source.

    The same rules as ``plan_build``: documents of failed listings, unreadable entries and sources this
    run does not list are not deletions; those of a source it was told to forget are.
    """
    plan = plan_build(listings, None, records, now, forget=forget)
    return sum(1 for record in plan.deleted if record.chunks)


def _listing_notes(listing: Listing, kept: int) -> list[str]:
    """One line each for a source's unreadable and skipped entries: how many, and the first few."""
    notes = []
    if listing.unreadable:
        notes.append(
            f"source {listing.source!r}: {len(listing.unreadable)} entries could not be read, so the listing says "
            f"nothing about them; kept {kept} of their documents as they were: {_examples(listing.unreadable)}"
        )
    if listing.skipped:
        notes.append(f"source {listing.source!r}: skipped {len(listing.skipped)} entries: {_examples(listing.skipped)}")
    return notes


def _retry_notes(source: str, retried: Sequence[WorkItem], waiting: Sequence[DocumentRecord]) -> list[str]:
    """A line for the documents parsed again this run, and one for those that wait for a later run."""
    notes = []
    if retried:
        attempts = [(w.ref.doc_id,
                     f"attempt {w.previous.quarantine.attempts + 1}")  # type: ignore[union-attr]  # all quarantined
                    for w in retried]
        notes.append(f"source {source!r}: parsing {len(retried)} unchanged documents again, as their last parse "
                     f"timed out or stalled: {_examples(attempts)}")
    if waiting:
        times = [(r.doc_id,
                  f"after {r.quarantine.retry_after:%Y-%m-%d %H:%M} UTC")  # type: ignore[union-attr]  # all quarantined
                 for r in waiting]
        notes.append(f"source {source!r}: {len(waiting)} documents whose parse timed out or stalled wait for a "
                     f"later run (pipeline.parse_retry_backoff): {_examples(times)}")
    return notes


def _examples(entries: Sequence[Skipped | tuple[str, str]]) -> str:
    """The first few entries as "id (why)", and how many more."""
    pairs = [(e.doc_id, e.reason) if isinstance(e, Skipped) else e for e in entries]
    shown = "; ".join(f"{doc_id} ({why})" for doc_id, why in pairs[:NOTE_EXAMPLES])
    more = len(entries) - NOTE_EXAMPLES
    return shown + (f"; and {more} more" if more > 0 else "")


class PlannedDocument(BaseModel):
    """One document a run would parse or delete, and why (``ragops reindex --dry-run``)."""

    doc_id: str
    source: str
    action: Literal["parse", "delete"]
    why: str


def explain(plan: BuildPlan) -> list[PlannedDocument]:
    """Each document the plan parses or deletes, with the reason a person can check.

    Parsed documents have their chunks embedded only where the embedding cache lacks their text, which
    only parsing tells: a touched file (same text) is parsed and embeds nothing.
    """
    rows = []
    for item in plan.work:
        ref, previous = item.ref, item.previous
        if previous is None:
            why = "new" if plan.base else "full build (no base)"
        elif item.retry:
            reason = previous.quarantine.reason  # type: ignore[union-attr]  # a retried item's previous is quarantined
            why = f"its last parse timed out or stalled ({reason}); retried"
        elif unchanged(ref, previous):
            why = "its source's redaction settings changed"
        elif previous.quarantine:
            why = f"changed since its version was quarantined ({previous.quarantine.reason})"
        else:
            why = f"changed: listing signal {previous.signal} -> {ref.signal}"
        rows.append(PlannedDocument(doc_id=ref.doc_id, source=ref.source, action="parse", why=why))
    for record in plan.deleted:
        why = (f"source {record.source!r} forgotten (--forget-source)" if record.source in plan.forgotten_sources
               else f"absent from the complete listing of source {record.source!r}")
        rows.append(PlannedDocument(doc_id=record.doc_id, source=record.source, action="delete", why=why))
    return rows
