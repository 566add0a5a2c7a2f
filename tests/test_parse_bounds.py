"""Parsing is bounded (rag/sandbox.py) and journaled (rag/journal.py): a hostile document costs itself only.

Real .docx files that inflate to 17 MB from 0.6 MB, parsed by the real sandbox child process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import pytest

from rag import build
from rag.config import PipelineSettings, StoreSettings
from rag.errors import DocumentError
from rag.journal import ParseJournal
from rag.models import DocumentRef, utc_now
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
    ("bounds", "reason"),
    [
        ({"parse_timeout": "2s"}, "parsing took longer than 2s (pipeline.parse_timeout)"),
        ({"parse_memory_mb": 100}, "parsing needed more than pipeline.parse_memory_mb (100 MB)"),
        ({"max_inflated_mb": 10}, "likely a zip bomb"),
    ],
)
def test_a_document_past_a_bound_is_quarantined_and_the_next_one_parses(bomb: Path, chunker, bounds, reason) -> None:
    """The child starts with the text parsers only and imports unstructured's for the .docx (lazily, on
    the startup clock, with the cap lifted meanwhile): the bounds hold for what comes after."""
    text, good = ref_of(DEMO_CORPUS / "glossary.txt"), ref_of(DEMO_CORPUS / "retention-policy.docx")
    with ParseSandbox(PipelineSettings(**bounds)) as sandbox:
        sandbox.start(groups={"builtin"})
        items = [build.WorkItem(ref=ref) for ref in (text, ref_of(bomb), good)]
        batch = build.prepare_batch(items, chunker, _local, version="v1", max_bytes=10**8, now=utc_now(),
                                    sandbox=sandbox)
    (failure,) = batch.failures
    assert failure.doc_id == "kb/memo.docx" and failure.stage == "parse" and reason in failure.reason
    assert [record.doc_id for record, _ in batch.fresh] == [text.doc_id, good.doc_id]  # a fresh child parsed it


def test_a_parser_that_dies_costs_its_document_only(bomb: Path) -> None:
    with ParseSandbox(PipelineSettings()) as sandbox:
        sandbox.start(groups={"builtin", "unstructured"})  # the .docx parser imported: the crash is the parse's
        sandbox.parse(ref_of(DEMO_CORPUS / "glossary.txt"), max_bytes=10**8)  # the child is up
        child = sandbox._child.pid
        threading.Timer(1.0, os.kill, (child, signal.SIGSEGV)).start()  # a crash in a C library, say
        with pytest.raises(DocumentError, match=r"the parser crashed \(SIGSEGV\) on this document"):
            sandbox.parse(ref_of(bomb), max_bytes=10**8)
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
        changed = doc.model_copy(update={"signal": "moved"})
        assert journal.begin(changed) == 0  # a new version starts afresh


def _local(ref: DocumentRef, folder: Path) -> Path:
    return ref.path
