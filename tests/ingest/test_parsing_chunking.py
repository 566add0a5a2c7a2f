"""Parsing with unstructured and token-aware chunking with the real model's tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors import list_documents
from rag.config import ChunkingSettings, FolderSource
from rag.errors import ConfigError, DocumentError
from rag.ingest.chunking import Chunker
from rag.ingest.parsing import parse_document

pytestmark = pytest.mark.slow


def _refs(folder: Path) -> dict:
    return {ref.path.name: ref for ref in list_documents(FolderSource(path=folder, name="demo")).refs}


def test_every_demo_format_parses_and_chunks_within_the_token_limit(corpus: Path, embedder) -> None:
    chunker = Chunker(ChunkingSettings(max_tokens=48, overlap_tokens=8), embedder.tokenizer, embedder.max_tokens)
    refs = _refs(corpus)
    assert {Path(name).suffix for name in refs} >= {".md", ".html", ".pdf", ".docx", ".txt"}
    for name, ref in refs.items():
        chunks = chunker.chunk(ref, parse_document(ref, max_bytes=10**7))
        assert chunks, name
        assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        for chunk in chunks:
            assert 0 < chunk.tokens <= 48, (name, chunk.tokens, chunk.text)
            assert chunk.tokens == len(embedder.tokenizer.encode(chunk.text, add_special_tokens=False))
            assert chunk.source_uri == ref.uri and chunk.doc_id == f"demo/{name}"


def test_pdf_chunks_keep_their_page_and_drop_running_headers(corpus: Path, embedder) -> None:
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    ref = _refs(corpus)["operations-handbook.pdf"]
    chunks = chunker.chunk(ref, parse_document(ref, max_bytes=10**7))
    by_page = {c.page: c.text for c in chunks}
    assert set(by_page) == {1, 2}
    assert "Rolling back" in by_page[2] and "Rolling back" not in by_page[1]
    assert all("operations handbook - page" not in c.text for c in chunks)


def test_sections_carry_their_heading(corpus: Path, embedder) -> None:
    chunker = Chunker(ChunkingSettings(max_tokens=64), embedder.tokenizer, embedder.max_tokens)
    ref = _refs(corpus)["espresso-machine.html"]
    chunks = chunker.chunk(ref, parse_document(ref, max_bytes=10**7))
    portafilter = [c for c in chunks if "portafilter basket" in c.text]
    assert portafilter and portafilter[0].title == "Cleaning the portafilter"


def test_max_tokens_above_the_model_limit_is_a_config_error(embedder) -> None:
    with pytest.raises(ConfigError, match="exceeds what the model reads"):
        Chunker(ChunkingSettings(max_tokens=512), embedder.tokenizer, embedder.max_tokens)


def test_bad_documents_fail_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("   \n\n  ")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    (tmp_path / "big.md").write_text("x" * 2000)
    refs = _refs(tmp_path)
    reasons = {}
    for name, ref in refs.items():
        with pytest.raises(DocumentError) as error:
            parse_document(ref, max_bytes=1000)
        reasons[name] = error.value.reason
    assert reasons["empty.txt"] == "file is empty"
    assert "no text could be extracted" in reasons["blank.txt"]
    assert "over pipeline.max_file_mb" in reasons["big.md"]
    assert reasons["broken.pdf"]


@pytest.mark.parametrize("text_parser", ["builtin", "unstructured"])
def test_a_file_in_no_known_encoding_says_what_to_do_with_it(tmp_path: Path, text_parser: str) -> None:
    """Not the parser's advice to its caller ("Specify the source encoding with encoding=", which no ragops
    user can do), but what to do with the file."""
    rng = random.Random(3)  # bytes no UTF-8, UTF-16 or single-byte detector accepts
    (tmp_path / "scrambled.txt").write_bytes(bytes(rng.choice([*range(0x80, 0x100), *range(1, 9)]) for _ in range(4000)))
    with pytest.raises(DocumentError) as error:
        parse_document(_refs(tmp_path)["scrambled.txt"], max_bytes=10**7, text_parser=text_parser)
    assert error.value.reason.startswith("not text in any encoding that can be told"), error.value.reason
    assert "save it as UTF-8" in error.value.reason and "encoding=" not in error.value.reason


def test_an_archive_is_quarantined_with_the_reason_before_any_parser_loads(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as archive:
        archive.writestr("inside.md", "# Inside\n\nA document inside an archive.")
    ref = _refs(tmp_path)["bundle.zip"]
    with pytest.raises(DocumentError, match=r"\.zip archives are not indexed .* unpack it into the source"):
        parse_document(ref, max_bytes=10**6)
    # In a fresh interpreter: refusing it imports none of unstructured's partitioners (~9 s here).
    probe = (f"import sys; from rag.models import DocumentRef; from rag.ingest.parsing import parse_document, parser_group\n"
             f"assert parser_group('a/b.ZIP', 'builtin') == 'builtin'\n"
             f"try: parse_document(DocumentRef.model_validate_json({ref.model_dump_json()!r}), max_bytes=10**6)\n"
             f"except Exception as exc: print(type(exc).__name__)\n"
             f"print(sorted(m for m in sys.modules if m.startswith('unstructured.partition')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split("\n")[:2] == ["DocumentError", "[]"], done.stdout + done.stderr


def test_a_document_that_makes_too_many_chunks_is_refused_before_they_pile_up(embedder, tmp_path) -> None:
    """A 47 MB Markdown dump once became 43,343 chunks and ~2.8 GB: the bound stops it at the limit."""
    from rag.config import ChunkingSettings
    from rag.errors import DocumentError
    from rag.ingest.chunking import Chunker
    from rag.ingest.parsing import parse_document
    from rag.models import DocumentRef

    path = tmp_path / "dump.md"
    path.write_text("\n\n".join(f"# Entry {i}\n\nRecord {i} of the export, with its own words." for i in range(400)))
    ref = DocumentRef(doc_id="t/dump.md", source="t", uri=path.as_uri(), path=path, size=path.stat().st_size,
                      modified=0, signal="1")
    elements = parse_document(ref, max_bytes=10**8)
    settings = ChunkingSettings(max_tokens=32, combine_under_chars=0)
    assert len(Chunker(settings, embedder.tokenizer, embedder.max_tokens).chunk(ref, elements)) > 100
    bounded = Chunker(settings.model_copy(update={"max_chunks_per_document": 100}), embedder.tokenizer,
                      embedder.max_tokens)
    with pytest.raises(DocumentError, match="more than 100 chunks .chunking.max_chunks_per_document.") as refused:
        bounded.chunk(ref, elements)
    assert refused.value.stage == "chunk"
    assert bounded.describe() == Chunker(settings, embedder.tokenizer, embedder.max_tokens).describe()
