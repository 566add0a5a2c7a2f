"""Planning and freshness share one "did this document change?" rule (rag.index.plan.unchanged): pure, fast
tests with no model, no store and no Prefect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rag.config import FolderSource
from rag.errors import FreshnessBreach, SourceError
from rag.index import result
from rag.index.freshness import assess, breach, update_source_state
from rag.index.plan import (
    choose_base,
    covered,
    deleted_at_source,
    next_retry,
    plan_build,
    require_a_listing,
    unchanged,
)
from rag.listing import Listing, Skipped
from rag.models import (
    DocumentRecord,
    DocumentRef,
    Manifest,
    ModelFingerprint,
    Quarantine,
    SourceState,
)

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


def test_a_run_needs_one_listed_source_and_names_why_none_was() -> None:
    require_a_listing([_listing([], error="folder missing"), _listing(LISTED)])  # one is enough
    with pytest.raises(SourceError, match="no source could be listed: folder missing; access denied"):
        require_a_listing([_listing([], error="folder missing"), _listing([], error="access denied")])


def test_sources_that_list_no_document_build_nothing_and_say_why() -> None:
    empty = _listing([])
    only_skipped = _listing([]).model_copy(update={"source": "docs", "skipped": [
        Skipped(doc_id="docs/a.exe", reason="unsupported file type"),
        Skipped(doc_id="docs/b.exe", reason="unsupported file type")]})
    with pytest.raises(SourceError, match=r"no documents in any source: kb \(file:///kb\) is empty; docs "
                                          r"\(file:///kb\) has 2 entries, none indexed \(2 unsupported file type\)"
                                          r"\. Nothing was built and the live build is unchanged"):
        require_a_listing([empty, only_skipped])
    require_a_listing([empty, _listing(LISTED)])  # one source with documents is enough
    require_a_listing([_listing([], unreadable=["kb/share"])])  # unknown, not empty: the base keeps them


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


# --- planning: every fate of a document -------------------------------------------------------------


def _other(name: str, signal: str = "o1") -> DocumentRecord:
    """A record of source "old", which the configuration no longer has."""
    return DocumentRecord(doc_id=f"old/{name}", source="old", uri=f"file:///old/{name}", signal=signal, modified=0,
                          first_seen=EARLIER, last_seen=EARLIER, chunks=1)


def test_counts_of_a_plan_add_up() -> None:
    plan = plan_build([_listing(LISTED, unreadable=["kb/share"])], "kb__v1", BASE, NOW)
    assert plan.base == "kb__v1"
    assert (plan.listed, plan.new, plan.changed, plan.unchanged, plan.kept) == (4, 1, 1, 2, 1)
    assert len(plan.deleted) == 1 and plan.has_changes
    # every base record and every listed document has exactly one fate
    fates = [r.doc_id for r in plan.carry] + [w.ref.doc_id for w in plan.work] + [r.doc_id for r in plan.deleted]
    assert sorted(fates) == sorted(set(BASE) | {r.doc_id for r in LISTED})


def test_a_changed_document_is_work_with_the_version_the_base_holds() -> None:
    plan = plan_build([_listing(LISTED)], "kb__v1", BASE, NOW)
    edited = next(w for w in plan.work if w.ref.doc_id == "kb/edited.md")
    assert edited.status == "changed" and edited.previous == BASE["kb/edited.md"] and edited.ref.signal == "e2"
    new = next(w for w in plan.work if w.ref.doc_id == "kb/new.md")
    assert new.status == "new" and new.previous is None


def test_carried_documents_were_seen_now_and_kept_ones_were_not() -> None:
    plan = plan_build([_listing(LISTED, unreadable=["kb/share"])], "kb__v1", BASE, NOW)
    carried = {r.doc_id: r for r in plan.carry}
    assert carried["kb/same.md"].last_seen == NOW
    assert carried["kb/share/manual.md"].last_seen == EARLIER  # unreadable: not seen, kept exactly as it was
    assert carried["kb/share/manual.md"] == BASE["kb/share/manual.md"]
    assert BASE["kb/same.md"].last_seen == EARLIER  # the base's table is not changed by planning


def test_a_source_left_out_of_the_run_keeps_its_documents() -> None:
    """Leaving a source out (a --source run, an edited configuration) says nothing about its documents."""
    base = {**BASE, "old/a.md": _other("a.md"), "old/b.md": _other("b.md")}
    plan = plan_build([_listing(LISTED, unreadable=["kb/share"])], "kb__v1", base, NOW)
    assert sorted(r.doc_id for r in plan.deleted) == ["kb/gone.md"]
    assert sorted(r.doc_id for r in plan.carry if r.source == "old") == ["old/a.md", "old/b.md"]
    assert plan.unlisted_sources == {"old": 2} and not plan.forgotten_sources
    assert any("ragops reindex --forget-source old" in note for note in plan.notes)


def test_a_source_forgotten_on_purpose_deletes_its_documents() -> None:
    base = {**BASE, "old/a.md": _other("a.md"), "old/b.md": _other("b.md")}
    plan = plan_build([_listing(LISTED, unreadable=["kb/share"])], "kb__v1", base, NOW, forget={"old"})
    assert sorted(r.doc_id for r in plan.deleted) == ["kb/gone.md", "old/a.md", "old/b.md"]
    assert not any(r.source == "old" for r in plan.carry)
    assert plan.forgotten_sources == {"old": 2} and not plan.unlisted_sources


def test_a_quarantined_document_is_retried_only_once_its_signal_moves_again() -> None:
    same = plan_build([_listing([_ref("failing.md", "f2")])], "kb__v1", BASE, NOW)
    assert [r.doc_id for r in same.carry] == ["kb/failing.md"] and not same.work
    assert same.carry[0].quarantine == BASE["kb/failing.md"].quarantine  # still quarantined, still its good version
    moved = plan_build([_listing([_ref("failing.md", "f3")])], "kb__v1", BASE, NOW)
    assert [(w.ref.doc_id, w.status) for w in moved.work] == [("kb/failing.md", "changed")]
    assert moved.work[0].previous == BASE["kb/failing.md"]
    # back to the version the build holds: unchanged as well
    back = plan_build([_listing([_ref("failing.md", "f1")])], "kb__v1", BASE, NOW)
    assert not back.work and back.unchanged == 1


def _timed_out(name: str, *, kind: str = "timeout", attempts: int = 1, retry_after: datetime | None = NOW,
               chunks: int = 2) -> DocumentRecord:
    """A record whose good version g1 is kept while version t2 failed with ``kind``."""
    record = _record(name, "g1", failed_signal="t2", chunks=chunks)
    quarantine = record.quarantine.model_copy(update={"kind": kind, "attempts": attempts, "retry_after": retry_after})
    return record.model_copy(update={"quarantine": quarantine})


def test_a_timed_out_version_is_carried_until_its_back_off_ends_then_parsed_again() -> None:
    base = {"kb/slow.md": _timed_out("slow.md", retry_after=NOW + timedelta(minutes=30))}
    listed = [_ref("slow.md", "t2")]  # the version that timed out, unchanged
    waiting = plan_build([_listing(listed)], "kb__v1", base, NOW)
    assert [r.doc_id for r in waiting.carry] == ["kb/slow.md"] and not waiting.has_changes
    assert waiting.carry[0].quarantine == base["kb/slow.md"].quarantine  # its good version g1 stays served
    (note,) = waiting.notes
    assert "1 documents whose parse timed out or stalled wait for a later run" in note
    assert "kb/slow.md (after 2026-12-02 12:30 UTC)" in note

    due = plan_build([_listing(listed)], "kb__v1", base, NOW + timedelta(minutes=30))
    (item,) = due.work
    assert item.status == "retried" and item.previous == base["kb/slow.md"] and item.ref.signal == "t2"
    assert (due.retried, due.changed, due.new, due.unchanged) == (1, 0, 0, 0) and due.has_changes
    assert any("parsing 1 unchanged documents again" in n and "kb/slow.md (attempt 2)" in n for n in due.notes)
    assert result.planned_counts(due).documents_retried == 1

    moved = plan_build([_listing([_ref("slow.md", "t3")])], "kb__v1", base, NOW)  # a new version: changed, at once
    assert [w.status for w in moved.work] == ["changed"]


@pytest.mark.parametrize("kind", ["error", "memory", "crash"])
def test_failures_of_the_document_itself_wait_until_it_changes(kind: str) -> None:
    base = {"kb/bad.md": _timed_out("bad.md", kind=kind, retry_after=None)}
    a_year_later = plan_build([_listing([_ref("bad.md", "t2")])], "kb__v1", base, NOW + timedelta(days=365))
    assert not a_year_later.work and a_year_later.unchanged == 1 and not a_year_later.notes


def test_the_back_off_doubles_for_each_consecutive_failure_of_a_version_up_to_a_week() -> None:
    hour = timedelta(hours=1)
    ref = _ref("slow.md", "t2")
    assert next_retry(None, ref, "timeout", NOW, hour) == (1, NOW + hour)
    assert next_retry(_timed_out("slow.md", attempts=1), ref, "stalled", NOW, hour) == (2, NOW + 2 * hour)
    assert next_retry(_timed_out("slow.md", attempts=3), ref, "timeout", NOW, hour) == (4, NOW + 8 * hour)
    assert next_retry(_timed_out("slow.md", attempts=40), ref, "timeout", NOW, hour) == (41, NOW + timedelta(days=7))
    # another version starts afresh, and so does a document whose last failure was not a timeout
    assert next_retry(_timed_out("slow.md", attempts=3), _ref("slow.md", "t3"), "timeout", NOW, hour) == (1, NOW + hour)
    assert next_retry(_timed_out("slow.md", kind="crash", retry_after=None), ref, "timeout", NOW, hour)[0] == 1
    for kind in ("error", "memory", "crash"):
        assert next_retry(_timed_out("slow.md", attempts=3), ref, kind, NOW, hour) == (1, None)


def test_a_timeout_recorded_before_failures_had_kinds_is_retried_by_the_next_run() -> None:
    """Stores written before this rule hold timeouts as a reason only: they are due at once."""
    old = {"stage": "parse", "reason": "parsing took longer than 300s (pipeline.parse_timeout); not indexed",
           "signal": "t2", "since": EARLIER.isoformat()}
    quarantine = Quarantine.model_validate(old)
    assert quarantine.kind == "timeout" and quarantine.retry_after == EARLIER
    corrupt = Quarantine.model_validate({**old, "reason": "PDFSyntaxError: no /Root object"})
    assert corrupt.kind == "error" and corrupt.retry_after is None
    record = _record("pep-0713.rst", "g1", failed_signal="t2").model_copy(update={"quarantine": quarantine})
    plan = plan_build([_listing([_ref("pep-0713.rst", "t2")])], "kb__v1", {record.doc_id: record}, NOW)
    assert [w.status for w in plan.work] == ["retried"]


def test_a_document_waiting_for_its_retry_is_in_sync() -> None:
    """Freshness shares ``unchanged``: a failed version was processed, waiting to retry it is no lag."""
    base = {"kb/slow.md": _timed_out("slow.md", retry_after=NOW + timedelta(hours=1))}
    listing = _listing([_ref("slow.md", "t2")])
    state = update_source_state(None, FolderSource(path="/kb", name="kb"), listing, base)
    assert state.unsynced == 0 and state.quarantined == 1 and state.synced_through == NOW


def test_an_unreadable_document_id_keeps_its_record() -> None:
    listed = [r for r in LISTED if r.doc_id != "kb/same.md"]
    plan = plan_build([_listing(listed, unreadable=["kb/same.md", "kb/share"])], "kb__v1", BASE, NOW)
    assert "kb/same.md" in {r.doc_id for r in plan.carry}
    assert "kb/same.md" not in {r.doc_id for r in plan.deleted}
    assert plan.kept == 2 and plan.unchanged == 1


def test_skipped_entries_are_deleted_like_absent_ones() -> None:
    listing = _listing([r for r in LISTED if r.doc_id != "kb/same.md"], unreadable=["kb/share"])
    listing.skipped = [Skipped(doc_id="kb/same.md", reason="too large")]
    plan = plan_build([listing], "kb__v1", BASE, NOW)
    assert sorted(r.doc_id for r in plan.deleted) == ["kb/gone.md", "kb/same.md"]
    assert any("skipped 1 entries" in note and "kb/same.md (too large)" in note for note in plan.notes)


def test_a_failed_listing_is_noted_with_its_error() -> None:
    plan = plan_build([_listing([], error="folder missing")], "kb__v1", BASE, NOW)
    assert plan.listed == 0 and plan.unchanged == 0 and plan.kept == 5 and not plan.has_changes
    assert plan.notes == ["source 'kb' could not be listed (folder missing); kept its 5 documents as they were"]
    assert all(r.last_seen == EARLIER for r in plan.carry)


def test_nothing_to_do_when_every_listed_document_is_unchanged() -> None:
    base = {k: v for k, v in BASE.items() if k in ("kb/same.md", "kb/failing.md")}
    plan = plan_build([_listing([_ref("same.md", "s1"), _ref("failing.md", "f2")])], "kb__v1", base, NOW)
    assert not plan.has_changes and plan.unchanged == 2 and (plan.new, plan.changed) == (0, 0)


def test_without_a_base_everything_listed_is_new() -> None:
    plan = plan_build([_listing(LISTED)], None, {}, NOW)
    assert plan.base is None and plan.new == 4 and plan.changed == 0 and not plan.carry and not plan.deleted


def test_notes_name_the_first_few_entries_and_count_the_rest() -> None:
    listing = _listing(LISTED, unreadable=[f"kb/bad{i}" for i in range(5)])
    plan = plan_build([listing], None, {}, NOW)
    (note,) = plan.notes
    assert note.startswith("source 'kb': 5 entries could not be read")
    assert "kb/bad2 (broken link); and 2 more" in note and "kb/bad3" not in note


# --- the base a build starts from ---------------------------------------------------------------------

FINGERPRINT = ModelFingerprint(name="all-MiniLM-L6-v2", path="/models/minilm", weights_sha256="a" * 64, dimension=384,
                               normalize=True, dtype="float32", max_seq_length=256)
CHUNKING = {"max_tokens": 96, "overlap": 16}


def _manifest(version: str, state: str = "complete", *, weights: str = "a" * 64, chunking: dict | None = None,
              path: str = "/models/minilm") -> Manifest:
    model = FINGERPRINT.model_copy(update={"weights_sha256": weights, "path": path})
    return Manifest(alias="kb", version=version, collection=f"kb__{version}", state=state, created_at=EARLIER,
                    model=model, chunking=CHUNKING if chunking is None else chunking, sources=[])


def test_a_compatible_live_build_is_the_base_even_when_a_newer_one_exists() -> None:
    builds = [_manifest("v1"), _manifest("v2"), _manifest("v3")]
    assert choose_base("kb__v2", builds, FINGERPRINT, CHUNKING) == "kb__v2"


def test_a_live_build_of_another_model_falls_back_to_the_newest_compatible_build() -> None:
    builds = [_manifest("v1"), _manifest("v2"), _manifest("v3", weights="b" * 64)]
    assert choose_base("kb__v3", builds, FINGERPRINT, CHUNKING) == "kb__v2"


def test_a_live_build_with_other_chunking_falls_back_to_the_newest_compatible_build() -> None:
    builds = [_manifest("v1"), _manifest("v2", chunking={"max_tokens": 128, "overlap": 16}), _manifest("v3")]
    assert choose_base("kb__v2", builds, FINGERPRINT, CHUNKING) == "kb__v3"
    assert choose_base("kb__v3", builds[:2], FINGERPRINT, CHUNKING) == "kb__v1"


def test_another_model_folder_with_the_same_weights_is_compatible() -> None:
    assert choose_base("kb__v1", [_manifest("v1", path="/elsewhere")], FINGERPRINT, CHUNKING) == "kb__v1"


def test_builds_that_are_not_complete_are_never_a_base() -> None:
    builds = [_manifest("v1"), _manifest("v2", "building"), _manifest("v3", "failed"), _manifest("v4", "rejected")]
    assert choose_base(None, builds, FINGERPRINT, CHUNKING) == "kb__v1"
    assert choose_base("kb__v4", builds, FINGERPRINT, CHUNKING) == "kb__v1"
    assert choose_base(None, builds[1:], FINGERPRINT, CHUNKING) is None


def test_no_compatible_build_means_no_base() -> None:
    builds = [_manifest("v1", weights="b" * 64), _manifest("v2", chunking={})]
    assert choose_base("kb__v2", builds, FINGERPRINT, CHUNKING) is None
    assert choose_base(None, [], FINGERPRINT, CHUNKING) is None


def test_builds_without_a_manifest_are_skipped() -> None:
    assert choose_base(None, [_manifest("v1"), None], FINGERPRINT, CHUNKING) == "kb__v1"
    assert choose_base("kb__v2", [None, _manifest("v1"), None], FINGERPRINT, CHUNKING) == "kb__v1"
    assert choose_base(None, [None], FINGERPRINT, CHUNKING) is None


# --- deletions at the source, for the gate ------------------------------------------------------------


def test_only_a_complete_listing_shows_deletions() -> None:
    listing = _listing([_ref("same.md", "s1")])
    assert deleted_at_source([listing], BASE, NOW) == 4  # edited, failing, gone, share/manual
    assert deleted_at_source([_listing([], error="folder missing")], BASE, NOW) == 0


def test_unreadable_documents_are_not_deletions() -> None:
    listing = _listing(LISTED, unreadable=["kb/share"])
    assert deleted_at_source([listing], BASE, NOW) == 1  # gone.md only
    assert deleted_at_source([_listing(LISTED)], BASE, NOW) == 2  # share/manual.md is gone too


def test_documents_the_build_never_served_are_not_counted_as_deleted() -> None:
    never = _record("never.md", "x1", failed_signal="x1", chunks=0)  # quarantined at its first version
    records = {**BASE, never.doc_id: never}
    listing = _listing(LISTED, unreadable=["kb/share"])
    assert deleted_at_source([listing], records, NOW) == 1
    assert deleted_at_source([listing], {never.doc_id: never}, NOW) == 0


def test_documents_of_a_source_left_out_are_deletions_only_when_forgotten() -> None:
    """So the gate's document-loss check protects the documents of a source a run leaves out."""
    records = {**BASE, "old/a.md": _other("a.md")}
    assert deleted_at_source([_listing(LISTED, unreadable=["kb/share"])], records, NOW) == 1
    assert deleted_at_source([_listing(LISTED, unreadable=["kb/share"])], records, NOW, forget={"old"}) == 2


# --- freshness ----------------------------------------------------------------------------------------

SOURCE = FolderSource(path="/kb", name="kb")
LIVE = {r.doc_id: r for r in [_record("same.md", "s1"), _record("failing.md", "f1", failed_signal="f2")]}


def _state(**fields) -> SourceState:
    return SourceState(name="kb", kind="folder", uri=SOURCE.uri, **fields)


def test_a_source_in_sync_is_synced_through_its_listing() -> None:
    previous = _state(last_complete_listing_at=EARLIER, synced_through=EARLIER - timedelta(days=1), unsynced=2,
                      oldest_unsynced_change=EARLIER - timedelta(days=1))
    listing = _listing([_ref("same.md", "s1"), _ref("failing.md", "f2")])
    state = update_source_state(previous, SOURCE, listing, LIVE)
    assert (state.synced_through, state.last_sync_at, state.last_complete_listing_at, state.last_listing_at) == (
        NOW, NOW, NOW, NOW)
    assert state.oldest_unsynced_change is None and state.unsynced == 0
    assert (state.documents, state.quarantined) == (2, 1)  # a quarantined new version counts as synced
    assert previous.unsynced == 2  # the previous state is not changed


def test_a_change_the_live_build_misses_is_unsynced_from_its_modification_time() -> None:
    changed_at = NOW - timedelta(hours=3)
    ref = _ref("new.md", "n1").model_copy(update={"modified": changed_at.timestamp()})
    state = update_source_state(None, SOURCE, _listing([_ref("same.md", "s1"), _ref("failing.md", "f2"), ref]), LIVE)
    assert state.unsynced == 1
    assert state.oldest_unsynced_change == changed_at and state.synced_through == changed_at
    assert state.last_sync_at is None and state.last_complete_listing_at == NOW


def test_a_quarantined_document_that_changed_again_is_unsynced() -> None:
    state = update_source_state(None, SOURCE, _listing([_ref("same.md", "s1"), _ref("failing.md", "f3")]), LIVE)
    assert state.unsynced == 1 and state.oldest_unsynced_change == EARLIER


def test_an_unsynced_source_keeps_the_older_synced_through() -> None:
    long_ago = NOW - timedelta(days=2)
    previous = _state(last_complete_listing_at=EARLIER, synced_through=long_ago)
    state = update_source_state(previous, SOURCE, _listing([_ref("same.md", "s2"), _ref("failing.md", "f2")]), LIVE)
    assert state.oldest_unsynced_change == EARLIER and state.synced_through == long_ago


def test_a_deletion_is_unsynced_from_the_previous_complete_listing() -> None:
    previous_listing = NOW - timedelta(minutes=30)
    previous = _state(last_complete_listing_at=previous_listing, synced_through=previous_listing)
    state = update_source_state(previous, SOURCE, _listing([_ref("same.md", "s1")]), LIVE)  # failing.md deleted
    assert state.unsynced == 1
    assert state.oldest_unsynced_change == previous_listing == state.synced_through
    assert state.last_complete_listing_at == NOW
    # with no earlier complete listing, it is this one
    first = update_source_state(None, SOURCE, _listing([_ref("same.md", "s1")]), LIVE)
    assert first.oldest_unsynced_change == NOW and first.unsynced == 1


def test_an_unreadable_entry_is_not_a_deletion_the_live_build_misses() -> None:
    state = update_source_state(None, SOURCE, _listing([_ref("same.md", "s1")], unreadable=["kb/failing.md"]), LIVE)
    assert state.unsynced == 0 and state.synced_through == NOW


def test_a_failed_listing_changes_nothing_but_records_its_error() -> None:
    previous = _state(last_listing_at=EARLIER, last_complete_listing_at=EARLIER, last_sync_at=EARLIER,
                      synced_through=EARLIER, unsynced=1, oldest_unsynced_change=EARLIER)
    state = update_source_state(previous, SOURCE, _listing([], error="folder missing"), LIVE)
    assert state.last_listing_error == "folder missing" and state.last_listing_at == NOW
    assert (state.last_complete_listing_at, state.last_sync_at, state.synced_through) == (EARLIER,) * 3
    assert (state.unsynced, state.oldest_unsynced_change) == (1, EARLIER)
    # the next complete listing clears the error
    assert update_source_state(state, SOURCE, _listing([_ref("same.md", "s1"), _ref("failing.md", "f2")]),
                               LIVE).last_listing_error is None


def test_other_sources_documents_do_not_count() -> None:
    records = {**LIVE, "old/a.md": _other("a.md")}
    state = update_source_state(None, SOURCE, _listing([_ref("same.md", "s1"), _ref("failing.md", "f2")]), records)
    assert state.documents == 2 and state.unsynced == 0


LIMITED = FolderSource(path="/kb", name="kb", max_staleness=timedelta(hours=1))


def test_a_source_breaches_only_when_staler_than_its_limit() -> None:
    at_limit = assess({"kb": _state(synced_through=NOW - timedelta(hours=1))}, [LIMITED], NOW)
    over = assess({"kb": _state(synced_through=NOW - timedelta(hours=2), unsynced=3)}, [LIMITED], NOW)
    assert [s.breach for s in at_limit] == [False] and at_limit[0].staleness_seconds == 3600
    assert at_limit[0].max_staleness_seconds == 3600 and at_limit[0].message == "in sync as of 1.0h ago"
    (stale,) = over
    assert stale.breach and stale.staleness_seconds == 7200
    assert stale.message == "3 change(s) not in the live index, oldest from 2.0h ago; BREACH: over max_staleness 1.0h"


def test_never_synced_breaches_only_with_a_limit() -> None:
    (limited,) = assess({}, [LIMITED], NOW)
    (unlimited,) = assess({}, [SOURCE], NOW)
    assert limited.breach and limited.staleness_seconds is None and limited.message.startswith("never synced")
    assert not unlimited.breach and unlimited.message == "never synced"


def test_recorded_sources_no_longer_configured_come_last_without_a_limit() -> None:
    states = {"zz": SourceState(name="zz", kind="folder", uri="file:///zz", synced_through=NOW - timedelta(days=9),
                                documents=3),
              "gone": SourceState(name="gone", kind="folder", uri="file:///gone", synced_through=NOW),
              "kb": _state(synced_through=NOW, last_listing_error="folder missing")}
    assessed = assess(states, [LIMITED], NOW)
    # "gone": recorded, but the live build holds nothing of it (a rejected --source run): not a source
    assert [s.state.name for s in assessed] == ["kb", "zz"]
    assert assessed[0].message == "in sync as of 0s ago; last listing failed: folder missing"
    assert not assessed[1].breach and assessed[1].max_staleness_seconds is None


def test_breach_names_every_source_over_its_limit() -> None:
    fine = assess({"kb": _state(synced_through=NOW)}, [LIMITED], NOW)
    assert breach(fine) is None
    other = FolderSource(path="/docs", name="docs", max_staleness=timedelta(minutes=5))
    assessed = assess({"kb": _state(synced_through=NOW)}, [LIMITED, other], NOW)
    error = breach(assessed, {"summary": {"alias": "kb"}})
    assert isinstance(error, FreshnessBreach) and error.details == {"summary": {"alias": "kb"}}
    assert str(error) == "freshness limit breached: docs: never synced; BREACH: over max_staleness 5.0m"


def test_new_redaction_settings_make_a_source_work_again_and_only_that_source() -> None:
    base = {k: v for k, v in BASE.items() if k in ("kb/same.md", "kb/failing.md")}
    listed = [_listing([_ref("same.md", "s1"), _ref("failing.md", "f2")])]
    plan = plan_build(listed, "kb__v1", base, NOW, redaction={"kb": "policy-a"})
    assert plan.changed == 2 and plan.unchanged == 0
    assert any("redaction settings changed; 2 unchanged documents" in note for note in plan.notes)
    redacted = {k: v.model_copy(update={"redaction": "policy-a"}) for k, v in base.items()}
    assert not plan_build(listed, "kb__v1", redacted, NOW, redaction={"kb": "policy-a"}).has_changes
    assert not plan_build(listed, "kb__v1", base, NOW, redaction={"other": "policy-a"}).has_changes
    assert plan_build(listed, "kb__v1", redacted, NOW).changed == 2  # turned off: unredacted text again


def test_a_build_without_a_base_says_what_differs_from_the_live_one() -> None:
    from rag.index.plan import why_full

    live = Manifest(alias="kb", version="v1", collection="kb__v1", created_at=NOW, state="complete",
                    model=FINGERPRINT, chunking={"method": "m", "max_tokens": 254}, sources=[])
    int8 = FINGERPRINT.model_copy(update={"quantization": "int8", "backend": "onnx"})
    assert why_full(live, int8, live.chunking, full_rebuild=False) == \
        "the model's vector space changed (space reference -> int8)"
    assert why_full(live, FINGERPRINT, {"method": "m", "max_tokens": 126}, full_rebuild=False) == \
        "the chunking or parsing policy changed (max_tokens 254 -> 126)"
    assert why_full(live, FINGERPRINT, live.chunking, full_rebuild=True) == "a full rebuild was asked (--full)"
    assert why_full(None, FINGERPRINT, live.chunking, full_rebuild=False) == "the alias has no live build yet"
