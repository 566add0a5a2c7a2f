"""Planning and freshness share one "did this document change?" rule (rag.listing.unchanged): pure, fast
tests with no model, no store and no Prefect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rag.build import Listing, plan_build
from rag.config import FolderSource
from rag.freshness import update_source_state
from rag.listing import Skipped, covered, unchanged
from rag.models import DocumentRecord, DocumentRef, Quarantine

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
EARLIER = NOW - timedelta(hours=1)


def _ref(name: str, signal: str) -> DocumentRef:
    return DocumentRef(doc_id=f"kb/{name}", source="kb", uri=f"file:///kb/{name}", size=1, modified=EARLIER.timestamp(),
                       signal=signal)


def _record(name: str, signal: str, *, failed_signal: str | None = None, chunks: int = 2) -> DocumentRecord:
    quarantine = Quarantine(stage="parse", reason="bad", signal=failed_signal, since=EARLIER) if failed_signal else None
    return DocumentRecord(doc_id=f"kb/{name}", source="kb", uri=f"file:///kb/{name}", signal=signal, modified=0,
                          first_seen=EARLIER, last_seen=EARLIER, chunks=chunks, quarantine=quarantine)


def _listing(refs, unreadable=(), error=None) -> Listing:
    return Listing(source="kb", kind="folder", uri="file:///kb", listed_at=NOW, refs=list(refs),
                   unreadable=[Skipped(doc_id=d, reason="broken link") for d in unreadable], error=error)


BASE = {r.doc_id: r for r in [
    _record("same.md", "s1"),
    _record("edited.md", "e1"),
    _record("failing.md", "f1", failed_signal="f2"),      # good version f1 kept, version f2 failed
    _record("gone.md", "g1"),
    _record("share/manual.md", "m1"),                      # behind a folder link that is unmounted now
]}
LISTED = [_ref("same.md", "s1"), _ref("edited.md", "e2"), _ref("failing.md", "f2"), _ref("new.md", "n1")]


def test_every_fate_of_a_document_in_one_plan() -> None:
    plan = plan_build([_listing(LISTED, unreadable=["kb/share"])], "kb__v1", BASE, NOW)
    assert sorted(r.doc_id for r in plan.carry) == ["kb/failing.md", "kb/same.md", "kb/share/manual.md"]
    assert {w.ref.doc_id: w.status for w in plan.work} == {"kb/edited.md": "changed", "kb/new.md": "new"}
    assert [r.doc_id for r in plan.deleted] == ["kb/gone.md"]
    assert (plan.unchanged, plan.kept) == (2, 1)
    assert any("could not be read" in note and "kb/share" in note for note in plan.notes)


def test_a_failed_listing_keeps_everything_and_deletes_nothing() -> None:
    plan = plan_build([_listing([], error="folder missing")], "kb__v1", BASE, NOW)
    assert len(plan.carry) == len(BASE) == plan.kept and not plan.deleted and not plan.work


def test_planning_and_freshness_agree_on_what_changed() -> None:
    listing = _listing(LISTED, unreadable=["kb/share"])
    plan = plan_build([listing], "kb__v1", BASE, NOW)
    state = update_source_state(None, FolderSource(path="/kb", name="kb"), listing, BASE)
    # The live build misses exactly what the plan has to do: the edit, the new file, the deletion.
    assert state.unsynced == len(plan.work) + len(plan.deleted) == 3
    assert [unchanged(ref, BASE.get(ref.doc_id)) for ref in LISTED] == [True, False, True, False]


def test_an_unreadable_folder_covers_its_documents_only() -> None:
    assert covered("kb/share/manual.md", {"kb/share"}) and covered("kb/share", {"kb/share"})
    assert not covered("kb/shared.md", {"kb/share"}) and not covered("kb/share/x", set())
