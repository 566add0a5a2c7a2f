"""Parsing and chunking are bounded (rag/ingest/sandbox.py) and journaled (rag/index/journal.py): a hostile document
costs itself only, and a sandbox that cannot start costs its batch, not the run.

Real .docx files that inflate to 17 MB from 0.6 MB (over 10 minutes of CPU to parse), one-line texts of
megabytes, pandoc on a large .rst, parsed by the real sandbox child process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from rag.config import PipelineSettings, StoreSettings
from rag.errors import DocumentError
from rag.failpoints import KILL_AT
from rag.index.batches import prepare_batch
from rag.index.journal import ParseJournal
from rag.index.plan import WorkItem, plan_build
from rag.ingest.sandbox import ParseSandbox, check_inflated_size
from rag.listing import Listing
from rag.models import DocumentRef, utc_now
from rag.store import open_store
from testkit.documents import inflating_docx
from testkit.helpers import run_cli, write_notes
from testkit.paths import DEMO_CORPUS

pytestmark = pytest.mark.slow


def ref_of(path: Path, doc_id: str | None = None) -> DocumentRef:
    stat = path.stat()
    return DocumentRef(doc_id=doc_id or f"kb/{path.name}", source="kb", uri=path.resolve().as_uri(), path=path,
                       size=stat.st_size, modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime_ns}")


@pytest.fixture
def chunker(embedder):
    from rag.config import ChunkingSettings
    from rag.ingest.chunking import Chunker

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
        items = [WorkItem(ref=ref) for ref in (text, ref_of(bomb), good)]
        batch = prepare_batch(items, chunker, _local, version="v1", max_bytes=10**8, now=now,
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
        stalled = prepare_batch([WorkItem(ref=doc)], chunker, _local, version="v1", max_bytes=10**8,
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
        retried = prepare_batch(later.work, chunker, _local, version="v2", max_bytes=10**8,
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
    with open_store(StoreSettings(location=str(tmp_path / "store"))) as store:
        journal = ParseJournal(store, "kb")
        assert journal.begin(doc) == 0  # a run starts parsing it ... and dies (no end)
        with ParseSandbox(PipelineSettings()) as sandbox:
            once = prepare_batch([WorkItem(ref=doc)], chunker, _local, version="v1",
                                 max_bytes=10**8, now=utc_now(), sandbox=sandbox, journal=journal)
            assert not once.failures and once.fresh  # one death is forgiven: it parsed, and was forgotten
            assert journal.begin(doc) == 0 and journal.begin(doc) == 1  # now two runs die on it
            started = time.monotonic()
            twice = prepare_batch([WorkItem(ref=doc)], chunker, _local, version="v1",
                                  max_bytes=10**8, now=utc_now(), sandbox=sandbox, journal=journal)
        (failure,) = twice.failures
        assert "2 runs died while parsing or chunking this version" in failure.reason and not twice.fresh
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


# --- chunking: cut into sections in the sandbox, within its bounds, in one pass ------------------------


def _one_line(characters: int) -> str:
    """Prose on one line, no newline: what a log or an export written without line breaks looks like."""
    block = "the retention policy keeps quarterly backups of every archive for seven years "
    return (block * (characters // len(block) + 1))[:characters].strip()


def _characters_split_by_unstructured(action):
    """Run ``action``; returns its result and the characters unstructured's text splitter was handed in
    all (it copies what is left of an element after each cut: its work)."""
    handed = [0]

    def watch(frame, event, arg) -> None:
        if event == "call" and frame.f_code.co_name == "_split_from_maxlen":
            handed[0] += len(frame.f_locals["s"])

    sys.setprofile(watch)
    try:
        result = action()
    finally:
        sys.setprofile(None)
    return result, handed[0]


def test_a_one_line_text_is_cut_into_sections_in_one_pass_as_unstructured_would_cut_it(chunker) -> None:
    """A 45 MB one-line .txt stalled a run for 24 minutes in chunk_by_title: its splitter copies the rest of
    an oversized element after every cut, ~n^2/(2 x 480) characters here. The element is cut before it
    sees it, in one pass; the sections are the ones unstructured makes."""
    from unstructured.chunking.title import chunk_by_title
    from unstructured.documents.elements import NarrativeText, Title

    text = _one_line(1_000_000)
    doc = ref_of(DEMO_CORPUS / "glossary.txt", "kb/export.txt")
    chunks, handed = _characters_split_by_unstructured(lambda: chunker.chunk(doc, [NarrativeText(text)]))
    assert handed <= 2 * len(text), f"unstructured's splitter was handed {handed:,} characters for {len(text):,}"
    assert len(chunks) > len(text) / 480 and all(chunk.tokens <= 96 for chunk in chunks)
    assert " ".join(chunk.text for chunk in chunks).split() == text.split()  # every word, once, in order

    from rag.ingest.chunking import title_sections

    elements = [Title("Export"), NarrativeText(_one_line(30_000)), NarrativeText("A closing line.")]
    options = chunker.section_options
    theirs = chunk_by_title(elements, max_characters=options.max_characters,
                            new_after_n_chars=options.new_after_n_chars,
                            combine_text_under_n_chars=options.combine_text_under_n_chars, multipage_sections=False)
    assert [section.text for section in title_sections(elements, options)] == [s.text for s in theirs]


@pytest.mark.parametrize(
    ("bounds", "kind", "reason"),
    [({"parse_timeout": "1s"}, "timeout",
      r"^chunking used \d+\.\ds of CPU time, over pipeline.parse_timeout \(1s\); not indexed for now$"),
     ({"parse_memory_mb": 64}, "memory", r"^chunking needed more than pipeline.parse_memory_mb \(64 MB\); not indexed$")],
)
def test_cutting_a_document_into_sections_is_bounded_as_its_parse_is(chunker, bounds, kind, reason) -> None:
    """The sections are cut in the sandbox's child, under parse_timeout and parse_memory_mb: 100,000
    paragraphs take chunk_by_title far more than a second of CPU; 100 MB of text does not fit in 64 MB.
    The next document gets a fresh child."""
    from unstructured.documents.elements import NarrativeText

    from rag.ingest.chunking import title_sections

    if kind == "timeout":
        elements = [NarrativeText(f"Paragraph {n} of a long and repetitive memo.") for n in range(100_000)]
    else:
        elements = [NarrativeText(_one_line(100_000_000))]
    few = [NarrativeText("A short memo."), NarrativeText("Its second paragraph.")]
    options = chunker.section_options
    with ParseSandbox(PipelineSettings(**bounds), stall_factor=1000) as sandbox:
        sandbox.start(groups={"chunking"})
        assert sandbox.sections(few, options) == title_sections(few, options)
        child = sandbox._child.pid
        with pytest.raises(DocumentError, match=reason) as over:
            sandbox.sections(elements, options)
        assert over.value.stage == "chunk" and over.value.failure == kind
        assert sandbox.sections(few, options) == title_sections(few, options) and sandbox._child.pid != child


def test_a_run_killed_while_chunking_leaves_the_document_journaled(tmp_path: Path) -> None:
    """Chunking is journaled as parsing is: a run killed while it chunks a document (kill -9 at the
    ``chunk`` failpoint, a real process) leaves its entry, so that a document runs keep dying on is
    quarantined (rag/index/journal.py) rather than a poison pill."""
    path = tmp_path / "export.txt"
    path.write_text(_one_line(200_000) + "\n")
    doc = ref_of(path, "kb/export.txt")
    store = tmp_path / "store"
    script = (
        "from datetime import timedelta\n"
        "from rag.config import ChunkingSettings, EmbeddingSettings, PipelineSettings, StoreSettings\n"
        "from rag.embed.embedder import load_embedder\n"
        "from rag.index.batches import prepare_batch\n"
        "from rag.index.journal import ParseJournal\n"
        "from rag.index.plan import WorkItem\n"
        "from rag.ingest.chunking import Chunker\n"
        "from rag.ingest.sandbox import ParseSandbox\n"
        "from rag.models import DocumentRef, utc_now\n"
        "from rag.store import open_store\n"
        "embedder = load_embedder(EmbeddingSettings())\n"
        "chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)\n"
        f"doc = DocumentRef.model_validate_json({doc.model_dump_json()!r})\n"
        f"with open_store(StoreSettings(location={str(store)!r})) as store, "
        "ParseSandbox(PipelineSettings()) as sandbox:\n"
        "    batch = prepare_batch([WorkItem(ref=doc)], chunker, lambda ref, folder: ref.path,\n"
        "                          version='v1', max_bytes=10**8, now=utc_now(), sandbox=sandbox,\n"
        "                          journal=ParseJournal(store, 'kb'))\n"
        "print(len(batch.fresh), len(batch.failures))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, KILL_AT: "chunk"},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr[-3000:]
    with open_store(StoreSettings(location=str(store))) as opened:
        assert ParseJournal(opened, "kb").begin(doc) == 1  # one run died on this version


# --- the sandbox's process group, and a sandbox that cannot start ---------------------------------------


def test_a_killed_run_leaves_no_pandoc_behind(tmp_path: Path) -> None:
    """kill -9 of the process that parses (a run the OOM killer or an operator ends) while pandoc, the
    child's subprocess, reads an .rst: the child ends its process group, pandoc with it (it ran on for
    minutes, orphaned, at 2.7 GB)."""
    rst = tmp_path / "targets.rst"
    rst.write_text("Title\n=====\n\nOne paragraph.\n\n" + "".join(
        f".. _target-{n}: http://example.com/{n}\n.. |sub{n}| replace:: text {n} with *emphasis*\n"
        for n in range(400_000)))  # minutes of pandoc's CPU
    doc = ref_of(rst, "kb/targets.rst")
    script = (
        "from rag.config import PipelineSettings\n"
        "from rag.models import DocumentRef\n"
        "from rag.ingest.sandbox import ParseSandbox\n"
        "sandbox = ParseSandbox(PipelineSettings(text_parser='unstructured', parse_timeout='1h'), stall_factor=1000)\n"
        "sandbox.start(groups={'unstructured'})\n"
        "print(sandbox._child.pid, flush=True)\n"
        f"sandbox.parse(DocumentRef.model_validate_json({doc.model_dump_json()!r}), max_bytes=10**9)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    group = int(run.stdout.readline())
    try:
        deadline = time.monotonic() + 600
        while "pandoc" not in _running_in_group(group):
            assert run.poll() is None and time.monotonic() < deadline, "pandoc never ran"
            time.sleep(0.2)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 30
        while _running_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running_in_group(group)  # pandoc did not run on, orphaned
    finally:
        for pgid in (group, run.pid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


#: a sitecustomize that makes the first SANDBOX_HOOK_FAILS starts of the sandbox's child fail (exit 3, as
#: an import error would) or hang (no CPU, as a blocked import), counting starts in SANDBOX_HOOK
START_HOOK = '''
import os, sys
if "rag.ingest.sandbox" in sys.orig_argv:
    n = 1
    while True:
        try:
            os.close(os.open(os.path.join(os.environ["SANDBOX_HOOK"], f"start-{n}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    if n <= int(os.environ["SANDBOX_HOOK_FAILS"]):
        if os.environ["SANDBOX_HOOK_MODE"] == "hang":
            import time
            time.sleep(3600)
        sys.stderr.write(f"ImportError: start {n} of the parsing child failed (a test's hook)\\n")
        os._exit(3)
'''


def start_hook(tmp_path: Path, fails: int, mode: str) -> tuple[dict[str, str], Path]:
    """The environment for processes whose sandbox children fail their first ``fails`` starts, and the
    folder where the starts are counted."""
    hook, starts = tmp_path / "hook", tmp_path / "starts"
    hook.mkdir()
    starts.mkdir()
    (hook / "sitecustomize.py").write_text(START_HOOK)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "SANDBOX_HOOK": str(starts), "SANDBOX_HOOK_FAILS": str(fails),
            "SANDBOX_HOOK_MODE": mode}, starts


@pytest.mark.parametrize(("fails", "mode"), [(1, "hang"), (99, "exit")])
def test_a_sandbox_that_cannot_start_is_started_again_then_fails_the_document_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: int, mode: str
) -> None:
    """A child whose imports hang is stopped at its start-up bound (here 15 s of CPU, stalled after 4x
    that) and started again, which works; one that cannot start at all fails the document, kind
    "sandbox", with why (retried later as a timeout is), after two starts: not the run."""
    env, starts = start_hook(tmp_path, fails, mode)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    glossary = ref_of(DEMO_CORPUS / "glossary.txt")
    with ParseSandbox(PipelineSettings(), startup_timeout=15) as sandbox:
        if mode == "hang":
            assert sandbox.parse(glossary, max_bytes=10**8)
        else:
            with pytest.raises(DocumentError) as failed:
                sandbox.parse(glossary, max_bytes=10**8)
            assert failed.value.failure == "sandbox" and failed.value.stage == "parse"
            assert re.search(r"the parsing sandbox \(python -m rag.ingest.sandbox\) did not start: it exited with code 3: "
                             r"ImportError: start 2 of the parsing child failed \(a test's hook\), at each of 2 "
                             r"starts; not this document's doing: not indexed for now$", failed.value.reason)
    assert len(list(starts.iterdir())) == 2


def test_a_run_whose_sandbox_cannot_start_fails_that_batch_and_indexes_the_rest(tmp_path: Path) -> None:
    """`ragops reindex --json`, its sandbox children failing their first 3 starts (an import error, say;
    180 s of CPU to import on a loaded machine did it): the first batch's documents are quarantined with
    the reason, to be retried after the back-off; the next batch starts a child and is indexed; the run
    ends with its JSON."""
    from datetime import datetime, timezone

    write_notes(tmp_path / "corpus", 4)
    env, starts = start_hook(tmp_path, 3, "exit")
    env = {**os.environ, **env, "PREFECT_HOME": str(tmp_path / "prefect"), "RAGOPS_PIPELINE__BATCH_DOCUMENTS": "2"}
    before = datetime.now(timezone.utc)
    done = run_cli("reindex", "--source", str(tmp_path / "corpus"), "--store", str(tmp_path / "store"),
                   "--alias", "kb", "--json", env=env, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    summary = json.loads(done.stdout)
    failures = {f["doc_id"]: f for f in summary["failures"]}
    assert sorted(failures) == ["corpus/note-000.md", "corpus/note-001.md"], failures
    for failure in failures.values():
        assert failure["kind"] == "sandbox" and failure["stage"] == "parse"
        assert "the parsing sandbox (python -m rag.ingest.sandbox) did not start: it exited with code 3" in failure["reason"]
        assert datetime.fromisoformat(failure["retry_after"]) >= before + timedelta(hours=1)
    assert summary["counts"]["documents_indexed"] == 2 and summary["promoted"]
    assert len(list(starts.iterdir())) == 4
