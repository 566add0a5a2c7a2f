"""Freshness: how far the live index lags behind each source.

Definitions (docs/incremental.md#freshness):
- A source is **in sync** when its last complete listing matches the live build's document table: no
  new, changed or deleted document is missing from it. A changed document whose new version is
  quarantined counts as synced: it was processed and failed, and ``status`` lists it.
- **synced_through** is the time up to which the live build reflects the source. When in sync, that
  is the last complete listing. Otherwise it is the modification time of the oldest change the live
  build misses (for a deletion, the previous complete listing). A failed listing changes nothing: we
  cannot know.
- **staleness** = now - synced_through. A source breaches when staleness > ``max_staleness``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Sequence

from pydantic import BaseModel

from rag.config import FolderSource, S3Source
from rag.errors import FreshnessBreach
from rag.index.plan import covered, unchanged
from rag.listing import Listing
from rag.models import DocumentRecord, SourceState
from rag.store import IndexStore


class SourceFreshness(BaseModel):
    """A source's freshness now: its recorded state, its staleness and limit."""

    state: SourceState
    staleness_seconds: float | None
    max_staleness_seconds: float | None
    breach: bool
    message: str


def update_source_state(
    previous: SourceState | None,
    source: FolderSource | S3Source,
    listing: Listing,
    live_records: dict[str, DocumentRecord],
) -> SourceState:
    """The source's freshness after a run, from its listing and the live build's document table."""
    state = previous.model_copy() if previous else SourceState(name=source.name, kind=source.kind, uri=source.uri)
    state.kind, state.uri = source.kind, source.uri
    held = {doc_id: r for doc_id, r in live_records.items() if r.source == source.name}
    state.documents = sum(1 for r in held.values() if r.chunks)
    state.quarantined = sum(1 for r in held.values() if r.quarantine)
    state.last_listing_at = listing.listed_at
    state.last_listing_error = listing.error
    if not listing.complete:
        return state

    previous_complete = state.last_complete_listing_at
    state.last_complete_listing_at = listing.listed_at
    change_times: list[datetime] = []
    listed = set()
    for ref in listing.refs:
        listed.add(ref.doc_id)
        if not unchanged(ref, held.get(ref.doc_id)):
            change_times.append(datetime.fromtimestamp(ref.modified, tz=timezone.utc))
    # An unreadable entry's documents were kept as they were: not a change the live build misses.
    unreadable = {entry.doc_id for entry in listing.unreadable}
    deleted = [doc_id for doc_id in held if doc_id not in listed and not covered(doc_id, unreadable)]
    state.unsynced = len(change_times) + len(deleted)
    if deleted:  # when it went is unknown: after the previous complete listing, which still had it
        change_times.append(previous_complete or listing.listed_at)
    if change_times:
        state.oldest_unsynced_change = min(change_times)
        state.synced_through = min(state.oldest_unsynced_change, state.synced_through or listing.listed_at)
    else:
        state.oldest_unsynced_change = None
        state.last_sync_at = listing.listed_at
        state.synced_through = listing.listed_at
    return state


def assess(
    states: dict[str, SourceState], sources: Sequence[FolderSource | S3Source], now: datetime
) -> list[SourceFreshness]:
    """Staleness and breaches at ``now`` of every configured source, then of recorded ones not configured
    that the live build still holds documents of (those have no limit; a recorded source the live build
    holds nothing of is history, not a source)."""
    results = []
    limits = {source.name: source.max_staleness for source in sources}
    known = {source.name: source for source in sources}
    names = list(known) + [name for name in sorted(states)
                           if name not in known and (states[name].documents or states[name].quarantined)]
    for name in names:
        source = known.get(name)
        state = states.get(name) or SourceState(
            name=name, kind=source.kind, uri=source.uri  # type: ignore[union-attr]  # no state: a configured source
        )
        limit: timedelta | None = limits.get(name)
        staleness = (now - state.synced_through).total_seconds() if state.synced_through else None
        breach = limit is not None and (staleness is None or staleness > limit.total_seconds())
        if staleness is None:
            message = "never synced"
        elif state.unsynced:
            message = f"{state.unsynced} change(s) not in the live index, oldest from {_ago(staleness)}"
        else:
            message = f"in sync as of {_ago(staleness)}"
        if state.last_listing_error:
            message += f"; last listing failed: {state.last_listing_error}"
        if breach:
            over = _human(limit.total_seconds())  # type: ignore[union-attr]  # a breach has a limit
            message += f"; BREACH: over max_staleness {over}"
        results.append(
            SourceFreshness(
                state=state,
                staleness_seconds=staleness,
                max_staleness_seconds=limit.total_seconds() if limit else None,
                breach=breach,
                message=message,
            )
        )
    return results


def _ago(seconds: float) -> str:
    return f"{_human(seconds)} ago"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def record_freshness(
    store: IndexStore, alias: str, sources: Sequence[FolderSource | S3Source], listings: Sequence[Listing]
) -> list[SourceState]:
    """Update and write each source's freshness from this run's listings and the live build's table.

    A recorded source this run did not list stays in the ledger while the live build holds documents of
    it (its counts are brought up to date; it is not synced by this run), and is removed once the live
    build holds nothing of it: a rejected ``--source`` run, or a forgotten source, leaves no phantom.

    Returns:
        The sources' states, as written to the alias's freshness ledger.
    """
    live = store.alias_target(alias)
    live_records = store.read_records(live) if live else {}
    known = store.read_source_states(alias)
    states = [update_source_state(known.get(source.name), source, listing, live_records)
              for source, listing in zip(sources, listings)]
    held = Counter(r.source for r in live_records.values())
    listed = {source.name for source in sources}
    kept = [state.model_copy(update={"documents": sum(1 for r in live_records.values() if r.source == name and r.chunks),
                                     "quarantined": sum(1 for r in live_records.values()
                                                        if r.source == name and r.quarantine)})
            for name, state in known.items() if name not in listed and held[name]]
    store.write_source_states(alias, states + kept)
    store.forget_source_states(alias, [name for name in known if name not in listed and not held[name]])
    return states


def breach(assessed: Sequence[SourceFreshness], details: dict | None = None) -> FreshnessBreach | None:
    """The one error for sources over their ``max_staleness`` (None when none is): one line naming each."""
    over = [f"{s.state.name}: {s.message}" for s in assessed if s.breach]
    if not over:
        return None
    return FreshnessBreach("freshness limit breached: " + " | ".join(over), details=details)


def read_freshness(
    store: IndexStore, alias: str, sources: Sequence[FolderSource | S3Source], now: datetime
) -> list[SourceFreshness]:
    """Each source's freshness at ``now``, from the ledger the last reindex wrote (no listing is done)."""
    return assess(store.read_source_states(alias), sources, now)
