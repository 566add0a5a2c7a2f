"""Parsing is bounded (rag/sandbox.py) and journaled (rag/journal.py): a hostile document costs itself only.

Real .docx files that inflate to 17 MB from 0.6 MB (over 10 minutes of CPU to parse), parsed by the real
sandbox child process.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from rag import build
from rag.config import PipelineSettings, StoreSettings
from rag.errors import DocumentError
from rag.journal import ParseJournal
from rag.models import DocumentRef, utc_now
from rag.plan import Listing, plan_build
from rag.sandbox import ParseSandbox, check_inflated_size
from rag.store import IndexStore
from tests.conftest import DEMO_CORPUS

pytestmark = pytest.mark.slow


def inflating_docx(path: Path, paragraphs: int = 200_000) -> Path:
    """A real Word document whose XML inflates ~30x (a small zip bomb, ~17 MB): slow and memory-hungry to parse."""
    import docx

    document = docx.Document()
    document.add_paragraph("Seed.")
    document.save(path)
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    body = "".join(f"<w:p><w:r><w:t>Paragraph {n} of a long and repetitive memo.</w:t></w:r></w:p>"
                   for n in range(paragraphs))
    xml = parts["word/document.xml"].decode()
    start = xml.index("<w:body>") + len("<w:body>")
    parts["word/document.xml"] = (xml[:start] + body + xml[start:]).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def ref_of(path: Path, doc_id: str | None = None) -> DocumentRef:
    stat = path.stat()
    return DocumentRef(doc_id=doc_id or f"kb/{path.name}", source="kb", uri=path.resolve().as_uri(), path=path,
                       size=stat.st_size, modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime_ns}")


@pytest.fixture
def chunker(embedder):
    from rag.chunking import Chunker
    from rag.config import ChunkingSettings

    return Chunker(ChunkingSettings(max_tokens=96), embedder.tokenizer, embedder.max_tokens)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return inflating_docx(tmp_path_factory.mktemp("bomb") / "memo.docx")


def test_a_zip_that_inflates_past_the_limit_is_refused_before_parsing(bomb: Path) -> None:
    with zipfile.ZipFile(bomb) as archive:
        assert sum(i.file_size for i in archive.infolist()) > 25 * bomb.stat().st_size > 10e6
    with pytest.raises(DocumentError, match=r"inflate to 1\d MB, over pipeline.max_inflated_mb .10 MB.: likely a zip bomb"):
        check_inflated_size(bomb, 10_000_000)
    check_inflated_size(bomb, 50_000_000)  # under the limit: left to the parser
    check_inflated_size(DEMO_CORPUS / "operations-handbook.pdf", 1)  # not a zip: nothing to check


@pytest.mark.parametrize(
    ("bounds", "kind", "reason"),
    [
        ({"parse_timeout": "2s"}, "timeout", r"parsing used [2-9]\.\ds of CPU time, over pipeline.parse_timeout "
                                             r"\(2s\); not indexed for now$"),
        ({"parse_memory_mb": 100}, "memory", r"parsing needed more than pipeline.parse_memory_mb \(100 MB\)"),
        ({"max_inflated_mb": 10}, "error", "likely a zip bomb"),
    ],
)
def test_a_document_past_a_bound_is_quarantined_and_the_next_one_parses(
    bomb: Path, chunker, bounds, kind, reason
) -> None:
    """The child starts with the text parsers only and imports unstructured's for the .docx (lazily, on
    the startup clock, with the cap lifted meanwhile): the bounds hold for what comes after. A timeout
    (CPU time) is retried by a later run; the other failures wait until the document changes."""
    text, good = ref_of(DEMO_CORPUS / "glossary.txt"), ref_of(DEMO_CORPUS / "retention-policy.docx")
    now = utc_now()
    # A loaded machine may give the child a small share of a CPU: the wall-clock ceiling is kept far off,
    # so that only the CPU time it burns can stop it.
    with ParseSandbox(PipelineSettings(**bounds), stall_factor=1000) as sandbox:
        sandbox.start(groups={"builtin"})
        items = [build.WorkItem(ref=ref) for ref in (text, ref_of(bomb), good)]
        batch = build.prepare_batch(items, chunker, _local, version="v1", max_bytes=10**8, now=now,
                                    sandbox=sandbox, retry_backoff=timedelta(minutes=30))
    (failure,) = batch.failures
    assert failure.doc_id == "kb/memo.docx" and failure.stage == "parse" and re.search(reason, failure.reason)
    assert failure.kind == kind
    (record,) = [r for r in batch.keep if r.doc_id == failure.doc_id]
    assert record.quarantine.kind == kind and record.quarantine.attempts == 1
    assert record.quarantine.retry_after == failure.retry_after == (now + timedelta(minutes=30) if kind == "timeout"
                                                                    else None)
    assert [record.doc_id for record, _ in batch.fresh] == [text.doc_id, good.doc_id]  # a fresh child parsed it


def test_the_cpu_time_of_a_parsers_subprocess_counts_and_it_stops_with_the_parse(tmp_path: Path) -> None:
    """.rst is read by pandoc, a subprocess of the child: ~12 s of pandoc's CPU for this file, while the
    child itself only waits. That CPU is the document's too, and stopping the parse stops pandoc."""
    rst = tmp_path / "targets.rst"
    rst.write_text("Title\n=====\n\nOne paragraph.\n\n" + "".join(
        f".. _target-{n}: http://example.com/{n}\n.. |sub{n}| replace:: text {n} with *emphasis*\n"
        for n in range(100_000)))
    with ParseSandbox(PipelineSettings(parse_timeout="1s"), stall_factor=1000) as sandbox:
        sandbox.start(groups={"builtin", "unstructured"})
        sandbox.parse(ref_of(DEMO_CORPUS / "glossary.txt"), max_bytes=10**8)
        group = sandbox._child.pid
        with pytest.raises(DocumentError, match=r"parsing used \d+\.\ds of CPU time, over pipeline.parse_timeout") as over:
            sandbox.parse(ref_of(rst), max_bytes=10**8)
        assert over.value.failure == "timeout"
        # Stopped near its budget, while pandoc ran: not once pandoc was done and its time became the child's.
        assert float(re.search(r"used (\d+\.\d)s", over.value.reason)[1]) < 5
        assert not _running_in_group(group)  # no pandoc left to spin on, orphaned


def _running_in_group(group: int) -> list[str]:
    """Commands of the live (not zombie) processes of a process group."""
    running = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, NotADirectoryError):
            continue
        state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == group and state != "Z":
            running.append(stat.split("(", 1)[1].split(")", 1)[0])
    return running


def test_a_stopped_parser_is_not_the_documents_fault_and_a_later_run_parses_it(chunker) -> None:
    """Wall time is not charged to the document: a child that gets no CPU (SIGSTOP here; a loaded machine
    or a parser blocked on something alike) is stopped after 4x parse_timeout as stalled, and the plan
    gives the same version to the first run after the back-off, which parses it."""
    doc = ref_of(DEMO_CORPUS / "glossary.txt")
    first = utc_now()
    with ParseSandbox(PipelineSettings(parse_timeout="2s")) as sandbox:
        sandbox.start(groups={"builtin"})
        sandbox.parse(doc, max_bytes=10**8)  # the child is up, its parsers imported
        child = sandbox._child.pid
        os.kill(child, signal.SIGSTOP)  # it gets no CPU from now on
        started = time.monotonic()
        stalled = build.prepare_batch([build.WorkItem(ref=doc)], chunker, _local, version="v1", max_bytes=10**8,
                                      now=first, sandbox=sandbox, retry_backoff=timedelta(hours=1))
        assert time.monotonic() - started >= 8  # 4x parse_timeout of wall time: a generous ceiling, not 2 s
        (failure,) = stalled.failures
        assert failure.kind == "stalled" and failure.retry_after == first + timedelta(hours=1)
        assert "the parser was stopped or blocked" in failure.reason and "stopped at 4x" in failure.reason
        (record,) = stalled.keep
        assert record.quarantine.kind == "stalled" and not record.chunks

        listing = Listing(source="kb", kind="folder", uri="file:///kb", listed_at=first, refs=[doc])
        soon = plan_build([listing], "kb__v1", {doc.doc_id: record}, first + timedelta(minutes=59))
        assert not soon.work and soon.unchanged == 1  # within its back-off: carried, and a note says until when
        assert any("wait for a later run" in note and doc.doc_id in note for note in soon.notes)
        later = plan_build([listing], "kb__v1", {doc.doc_id: record}, first + timedelta(hours=1))
        (item,) = later.work
        assert item.status == "retried" and later.retried == 1
        retried = build.prepare_batch(later.work, chunker, _local, version="v2", max_bytes=10**8,
                                      now=first + timedelta(hours=1), sandbox=sandbox)
        assert sandbox._child.pid != child
    assert not retried.failures and [r.doc_id for r, _ in retried.fresh] == [doc.doc_id]
    assert retried.fresh[0][0].quarantine is None


def test_a_parser_that_dies_costs_its_document_only(bomb: Path) -> None:
    with ParseSandbox(PipelineSettings()) as sandbox:
        sandbox.start(groups={"builtin", "unstructured"})  # the .docx parser imported: the crash is the parse's
        sandbox.parse(ref_of(DEMO_CORPUS / "glossary.txt"), max_bytes=10**8)  # the child is up
        child = sandbox._child.pid
        threading.Timer(1.0, os.kill, (child, signal.SIGSEGV)).start()  # a crash in a C library, say
        with pytest.raises(DocumentError, match=r"the parser crashed \(SIGSEGV\) on this document") as crash:
            sandbox.parse(ref_of(bomb), max_bytes=10**8)
        assert crash.value.failure == "crash"  # a property of the document: it waits until it changes
        assert sandbox.parse(ref_of(DEMO_CORPUS / "glossary.txt"), max_bytes=10**8)
        assert sandbox._child.pid != child


def test_a_ctrl_c_meant_for_the_command_does_not_stop_the_parser() -> None:
    glossary = ref_of(DEMO_CORPUS / "glossary.txt")
    with ParseSandbox(PipelineSettings()) as sandbox:
        sandbox.start(groups={"builtin"})
        sandbox.parse(glossary, max_bytes=10**8)
        child = sandbox._child.pid
        os.kill(child, signal.SIGINT)  # as a terminal sends it to the whole foreground process group
        time.sleep(0.5)
        assert sandbox.parse(glossary, max_bytes=10**8) and sandbox._child.pid == child


def test_a_version_that_runs_died_parsing_is_quarantined_not_parsed_again(tmp_path: Path, chunker) -> None:
    doc = ref_of(DEMO_CORPUS / "glossary.txt")
    with IndexStore.open(StoreSettings(location=str(tmp_path / "store"))) as store:
        journal = ParseJournal(store, "kb")
        assert journal.begin(doc) == 0  # a run starts parsing it ... and dies (no end)
        with ParseSandbox(PipelineSettings()) as sandbox:
            once = build.prepare_batch([build.WorkItem(ref=doc)], chunker, _local, version="v1",
                                       max_bytes=10**8, now=utc_now(), sandbox=sandbox, journal=journal)
            assert not once.failures and once.fresh  # one death is forgiven: it parsed, and was forgotten
            assert journal.begin(doc) == 0 and journal.begin(doc) == 1  # now two runs die on it
            started = time.monotonic()
            twice = build.prepare_batch([build.WorkItem(ref=doc)], chunker, _local, version="v1",
                                        max_bytes=10**8, now=utc_now(), sandbox=sandbox, journal=journal)
        (failure,) = twice.failures
        assert "2 runs died while parsing this version" in failure.reason and not twice.fresh
        assert time.monotonic() - started < 1  # not parsed
        (record,) = twice.keep
        assert failure.kind == record.quarantine.kind == "crash" and record.quarantine.retry_after is None
        listing = Listing(source="kb", kind="folder", uri="file:///kb", listed_at=utc_now(), refs=[doc])
        a_week_later = plan_build([listing], "kb__v1", {doc.doc_id: record}, utc_now() + timedelta(days=7))
        assert not a_week_later.work  # waits until it changes, however long
        changed = doc.model_copy(update={"signal": "moved"})
        assert journal.begin(changed) == 0  # a new version starts afresh


def _local(ref: DocumentRef, folder: Path) -> Path:
    return ref.path
