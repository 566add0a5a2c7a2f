"""Incremental refresh on a folder: only what changed is parsed and embedded, and the result is exactly
what a clean build of the same files would serve."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from connectors import list_source
from flows.reindex import reindex
from rag.config import FolderSource, StoreSettings
from rag.errors import FreshnessBreach, SourceError
from rag.index.journal import ParseJournal
from rag.serving import Retriever
from rag.store import open_store
from ragops.cli import app
from testkit.documents import inflating_docx
from testkit.helpers import assert_same_index, doc_ids, points_of, snapshot
from testkit.paths import DEMO_CORPUS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _edit(path: Path, extra: str) -> None:
    path.write_text(path.read_text() + "\n\n" + extra + "\n")


def test_new_changed_unchanged_deleted_and_renamed(corpus: Path, store_path: Path, tmp_path: Path) -> None:
    first = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    assert first["counts"]["documents_new"] == 6 and first["counts"]["chunks_embedded"] == first["counts"]["chunks"]

    _edit(corpus / "bicycle-chain.md", "## Storing the bike\n\nHang it in a dry place away from the sun.")
    (corpus / "glossary.txt").unlink()
    (corpus / "espresso-machine.html").rename(corpus / "coffee-machine-care.html")  # renamed, same text
    (corpus / "tyres.md").write_text("# Tyre pressure\n\nRoad tyres want 6 to 8 bar; check weekly.\n")

    second = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")

    counts = second["counts"]
    assert second["base"] == first["collection"] and second["promoted"]
    assert (counts["documents_new"], counts["documents_changed"], counts["documents_unchanged"],
            counts["documents_deleted"]) == (2, 1, 3, 2)  # new: tyres + renamed; deleted: glossary + old name
    # Embedded: the tyre doc and the bicycle doc's changed chunk only; the renamed doc's vectors are cached.
    incremental = snapshot(store_path, "kb")
    assert doc_ids(incremental) == {
        "corpus/bicycle-chain.md", "corpus/coffee-machine-care.html", "corpus/tyres.md",
        "corpus/index-freshness.html", "corpus/operations-handbook.pdf", "corpus/retention-policy.docx",
    }
    tyre_chunks = sum(1 for p, _ in incremental.values() if p["doc_id"] == "corpus/tyres.md")
    bike_chunks = sum(1 for p, _ in incremental.values() if p["doc_id"] == "corpus/bicycle-chain.md")
    assert tyre_chunks + 1 <= counts["chunks_embedded"] <= tyre_chunks + bike_chunks
    assert counts["chunks_embedded"] + counts["chunks_reused"] == counts["chunks"] == len(incremental)

    clean_store = tmp_path / "clean"
    reindex(sources=[str(corpus)], store=str(clean_store), alias="kb")
    assert_same_index(incremental, snapshot(clean_store, "kb"))


def test_no_change_makes_no_build_and_a_touch_reembeds_nothing(corpus: Path, store_path: Path) -> None:
    first = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")

    unchanged = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    assert unchanged["state"] == "unchanged" and unchanged["version"] == first["version"]
    assert unchanged["counts"]["documents_unchanged"] == 6 and unchanged["counts"]["chunks_embedded"] == 0

    target = corpus / "glossary.txt"
    os.utime(target, (time.time() + 5, time.time() + 5))  # signal moves, text does not
    touched = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    assert touched["counts"]["documents_touched"] == 1 and touched["counts"]["documents_changed"] == 0
    assert touched["counts"]["chunks_embedded"] == 0
    assert_same_index(snapshot(store_path, "kb"), points_of(store_path, first["collection"]))


def test_a_corrupted_file_keeps_its_last_good_version_and_is_retried_only_when_it_changes(
    corpus: Path, store_path: Path
) -> None:
    reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    handbook = corpus / "operations-handbook.pdf"
    good = handbook.read_bytes()
    handbook.write_bytes(good[: len(good) // 3])  # truncated: unparseable

    broken = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    assert broken["promoted"] and [f["doc_id"] for f in broken["failures"]] == ["corpus/operations-handbook.pdf"]
    assert broken["counts"]["documents_failed"] == 1 and broken["counts"]["documents_indexed"] == 6
    with Retriever(alias="kb", store=str(store_path)) as retriever:
        hit = retriever.search("how do I undo a bad promotion?", k=1)[0]
    assert hit.doc_id == "corpus/operations-handbook.pdf" and hit.version == broken["version"]
    with open_store(StoreSettings(location=str(store_path))) as store:
        record = store.read_records(broken["collection"])["corpus/operations-handbook.pdf"]
    assert record.quarantine is not None and record.quarantine.stage == "parse" and record.chunks > 0
    status = CliRunner().invoke(app, ["status", "--store", str(store_path), "--alias", "kb", "--json"])
    quarantined = json.loads(status.stdout)["quarantined"]
    assert [(q["doc_id"], q["quarantine"]["stage"]) for q in quarantined] == [("corpus/operations-handbook.pdf", "parse")]

    again = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    assert again["state"] == "unchanged"  # not retried: it did not change

    handbook.write_bytes(good)
    fixed = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    # Back to the text of the version still served: a touch, nothing re-chunked or embedded.
    assert fixed["counts"]["documents_touched"] == 1 and fixed["failures"] == []
    assert fixed["counts"]["chunks_embedded"] == 0  # its vectors were never lost
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.read_records(fixed["collection"])["corpus/operations-handbook.pdf"].quarantine is None


def _pass_the_back_off(store_path: Path, alias: str, doc_id: str, by: timedelta | None = None) -> None:
    """As if the document's back-off were over (or ``by`` had passed): rewrites the times of its quarantine in
    the live build's real document table."""
    with open_store(StoreSettings(location=str(store_path))) as store:
        live = store.alias_target(alias)
        record = store.read_records(live)[doc_id]
        quarantine = record.quarantine
        shift = by or quarantine.retry_after - datetime.now(timezone.utc) + timedelta(seconds=1)
        moved = {"since": quarantine.since - shift}
        if quarantine.retry_after:
            moved["retry_after"] = quarantine.retry_after - shift
        store.write_records(live, [record.model_copy(update={"quarantine": quarantine.model_copy(update=moved)})])


def test_a_timed_out_document_is_parsed_again_after_its_back_off_and_a_crashed_one_once_it_changes(
    tmp_path: Path, store_path: Path
) -> None:
    """Through the real flow: a document whose parse burns its CPU budget (a real .docx that takes minutes)
    keeps its previous version, is not parsed by the next run, is parsed again by the first run after its
    back-off (which then doubles), and is indexed once fixed. One that runs died parsing waits, however long,
    until it changes."""
    import yaml

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("bicycle-chain.md", "glossary.txt"):
        shutil.copy(DEMO_CORPUS / name, docs / name)
    shutil.copy(DEMO_CORPUS / "retention-policy.docx", docs / "memo.docx")
    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "kb", "store": {"location": str(store_path)}, "sources": [{"path": str(docs)}],
        "pipeline": {"parse_timeout": "3s", "parse_retry_backoff": "1h"},
    }))
    assert reindex(config=str(config))["counts"]["documents_indexed"] == 3

    inflating_docx(docs / "memo.docx")  # minutes of CPU to parse: past parse_timeout
    _edit(docs / "glossary.txt", "Backoff: the wait before a retry.")
    glossary = next(r for r in list_source(FolderSource(path=str(docs))).refs if r.doc_id == "docs/glossary.txt")
    with open_store(StoreSettings(location=str(store_path))) as store:
        journal = ParseJournal(store, "kb")
        for _ in range(2):  # two runs died parsing this version (a crash)
            journal.begin(glossary)
    before = datetime.now(timezone.utc)
    broken = reindex(config=str(config))
    failures = {f["doc_id"]: f for f in broken["failures"]}
    memo, crash = failures["docs/memo.docx"], failures["docs/glossary.txt"]
    # On a quiet machine its CPU budget runs out; on a busy one it may be stopped as stalled first: either
    # is a failure of the moment, not of the document.
    assert memo["kind"] in ("timeout", "stalled") and crash["kind"] == "crash" and crash["retry_after"] is None
    retry_at = datetime.fromisoformat(memo["retry_after"])
    assert before + timedelta(hours=1) <= retry_at <= datetime.now(timezone.utc) + timedelta(hours=1)
    assert broken["promoted"] and broken["counts"]["documents_indexed"] == 3  # previous versions still served
    status = CliRunner().invoke(app, ["status", "--store", str(store_path), "--alias", "kb"])
    assert f"retried by the first run after {retry_at:%Y-%m-%d %H:%M:%S} UTC" in status.stdout
    assert "runs died while parsing or chunking this version" in status.stdout
    assert "retried once it changes" in status.stdout

    waiting = reindex(config=str(config))
    assert waiting["state"] == "unchanged"  # within the back-off: not parsed again
    assert any("wait for a later run" in note and "docs/memo.docx" in note for note in waiting["notes"])

    _pass_the_back_off(store_path, "kb", "docs/memo.docx")
    _pass_the_back_off(store_path, "kb", "docs/glossary.txt", by=timedelta(days=30))
    before = datetime.now(timezone.utc)
    retried = reindex(config=str(config))
    assert (retried["counts"]["documents_retried"], retried["counts"]["documents_changed"]) == (1, 0)
    assert [f["doc_id"] for f in retried["failures"]] == ["docs/memo.docx"]  # the crashed one was not retried
    with open_store(StoreSettings(location=str(store_path))) as store:
        record = store.read_records(retried["collection"])["docs/memo.docx"]
    assert record.quarantine.attempts == 2 and record.chunks > 0
    assert before + timedelta(hours=2) <= record.quarantine.retry_after <= datetime.now(timezone.utc) + timedelta(hours=2)
    assert reindex(config=str(config))["state"] == "unchanged"  # the doubled back-off holds too

    shutil.copy(DEMO_CORPUS / "retention-policy.docx", docs / "memo.docx")
    _edit(docs / "glossary.txt", "Retry: parsing a version again.")
    fixed = reindex(config=str(config))
    counts = fixed["counts"]  # memo.docx is back to the text still served: touched, not changed
    assert counts["documents_changed"] + counts["documents_touched"] == 2 and fixed["failures"] == []
    with open_store(StoreSettings(location=str(store_path))) as store:
        records = store.read_records(fixed["collection"])
    assert all(r.quarantine is None and r.chunks for r in records.values())


def test_a_source_that_cannot_be_listed_keeps_its_documents(corpus: Path, store_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.md").write_text("# Parking\n\nBicycles park in the courtyard.\n")
    reindex(sources=[str(corpus), str(other)], store=str(store_path), alias="kb")
    before = snapshot(store_path, "kb")

    shutil.rmtree(corpus)  # the whole source disappears: unlistable, not "everything deleted"
    (other / "second.md").write_text("# Lockers\n\nLockers are on the first floor.\n")
    run = reindex(sources=[str(corpus), str(other)], store=str(store_path), alias="kb")

    assert run["counts"]["documents_deleted"] == 0 and run["counts"]["documents_new"] == 1
    assert any("could not be listed" in note and "kept its 6 documents" in note for note in run["notes"])
    after = snapshot(store_path, "kb")
    assert doc_ids(after) == doc_ids(before) | {"other/second.md"}
    state = {s["name"]: s for s in run["sources"]}["corpus"]
    assert state["last_listing_error"] and state["last_complete_listing_at"] < state["last_listing_at"]


def _age_ledger(store_path: Path, alias: str, source: str, hours: float) -> None:
    """Pretend the source was last synced ``hours`` ago (rewrites its recorded times in the real ledger)."""
    with open_store(StoreSettings(location=str(store_path))) as store:
        state = store.read_source_states(alias)[source]
        past = datetime.now(timezone.utc) - timedelta(hours=hours)
        state.last_listing_at = state.last_complete_listing_at = state.last_sync_at = state.synced_through = past
        store.write_source_states(alias, [state])


def test_freshness_report_and_breach(corpus: Path, store_path: Path, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "kb", "store": {"location": str(store_path)},
        "sources": [{"path": str(corpus), "max_staleness": "1h"}],
    }))
    reindex(config=str(config))
    fresh = CliRunner().invoke(app, ["freshness", "--config", str(config), "--json"])
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["sources"][0]["message"].startswith("in sync as of")

    _age_ledger(store_path, "kb", "corpus", hours=2)
    stale = CliRunner().invoke(app, ["freshness", "--config", str(config), "--json"])
    assert stale.exit_code == 5
    shown = json.loads(stale.stdout)
    assert shown["sources"][0]["breach"] and shown["error"]["kind"] == "freshness_breach"
    assert 7100 < shown["sources"][0]["staleness_seconds"] < 7300

    reindex(config=str(config))  # a successful complete listing brings it back in sync
    assert CliRunner().invoke(app, ["freshness", "--config", str(config)]).exit_code == 0

    shutil.rmtree(corpus)  # the only source cannot be listed: the run fails, freshness stays as recorded
    with pytest.raises(SourceError, match="no source could be listed"):
        reindex(config=str(config))


def test_a_run_ends_failed_when_a_source_breaches(corpus: Path, store_path: Path, tmp_path: Path) -> None:
    import yaml

    other = tmp_path / "other"
    other.mkdir()
    (other / "a.md").write_text("# A\n\nAlpha.\n")
    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "kb", "store": {"location": str(store_path)},
        "sources": [{"path": str(corpus), "max_staleness": "1h"}, {"path": str(other)}],
    }))
    reindex(config=str(config))
    _age_ledger(store_path, "kb", "corpus", hours=2)
    shutil.rmtree(corpus)  # unlistable now: nothing new is known, so its staleness keeps growing

    with pytest.raises(FreshnessBreach, match="corpus: .*BREACH: over max_staleness 1.0h") as error:
        reindex(config=str(config))
    summary = error.value.details["summary"]
    assert summary["state"] == "unchanged"  # nothing else changed; the live build is untouched
    assert any("could not be listed" in note for note in summary["notes"])


def test_a_full_build_says_why_and_its_chunk_counts_add_up(corpus: Path, store_path: Path, tmp_path: Path) -> None:
    """Embedded plus reused chunks are the build's chunks, also when texts repeat; a build with no base
    names what differs from the live build."""
    shutil.copy(corpus / "glossary.txt", corpus / "glossary-copy.txt")  # every chunk text twice
    first = reindex(sources=[str(corpus)], store=str(store_path), alias="kb")
    c = first["counts"]
    assert c["chunks_embedded"] + c["chunks_reused"] == c["chunks"] and c["chunks_embedded"] == c["chunks"]
    assert first["full_build"] == "the alias has no live build yet"

    config = tmp_path / "smaller.yaml"
    config.write_text(yaml.safe_dump({"alias": "kb", "store": {"location": str(store_path)},
                                      "sources": [{"path": str(corpus), "name": "corpus"}],
                                      "chunking": {"max_tokens": 64}}))
    second = reindex(config=str(config))
    assert second["base"] is None and "chunking or parsing policy changed (" in second["full_build"]
    assert "max_tokens" in second["full_build"]
    c = second["counts"]
    assert c["chunks_embedded"] + c["chunks_reused"] == c["chunks"]
    assert "full build: the chunking or parsing policy changed" in result_text(second)


def result_text(summary: dict) -> str:
    from ragops.output import render_summary

    return render_summary(summary)
