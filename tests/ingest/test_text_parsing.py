"""Plain text and Markdown without per-paragraph NLP (rag/ingest/text.py): the same chunks as unstructured
where it matters, the same kinds of elements, and no sentence model run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import ChunkingSettings, PipelineSettings
from rag.errors import DocumentError
from rag.index.plan import choose_base
from rag.ingest.chunking import Chunker
from rag.ingest.parsing import describe_parsing, parse_document
from rag.models import DocumentRef, Manifest, ModelFingerprint, utc_now
from testkit.paths import DEMO_CORPUS, SHARED

DOCS_CORPUS = SHARED / "docs-corpus"
# norwich-city.txt (a Wikipedia page saved as text, one reference per short line) is the one file of
# the shared corpus where the shape rules and spaCy disagree about which short lines are titles.
DIFFERS = {"norwich-city.txt"}


def _ref(path: Path) -> DocumentRef:
    stat = path.stat()
    return DocumentRef(doc_id=f"t/{path.name}", source="t", uri=path.as_uri(), path=path, size=stat.st_size,
                       modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime}")


def _chunks(chunker: Chunker, path: Path, parser: str) -> list[tuple[str | None, str]]:
    ref = _ref(path)
    return [(c.title, c.text) for c in chunker.chunk(ref, parse_document(ref, max_bytes=10**8, text_parser=parser))]


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in {".md", ".txt"} and p.stat().st_size > 0
                  and p.read_bytes().strip())


@pytest.mark.slow  # the real model (its tokenizer)
def test_demo_text_files_chunk_exactly_as_with_unstructured(embedder) -> None:
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    files = _text_files(DEMO_CORPUS)
    assert {p.suffix for p in files} == {".md", ".txt"}
    for path in files:
        assert _chunks(chunker, path, "builtin") == _chunks(chunker, path, "unstructured"), path.name


@pytest.mark.slow  # the real model (its tokenizer)
@pytest.mark.skipif(not DOCS_CORPUS.is_dir(), reason="needs ../shared/docs-corpus")
def test_shared_corpus_text_files_chunk_as_with_unstructured(embedder) -> None:
    chunker = Chunker(ChunkingSettings(max_tokens=96), embedder.tokenizer, embedder.max_tokens)
    files = [p for p in _text_files(DOCS_CORPUS) if p.name not in DIFFERS]
    assert len(files) >= 8  # UTF-16, ISO-8859 Markdown, code blocks, tables, several languages
    for path in files:
        builtin = _chunks(chunker, path, "builtin")
        assert builtin, path.name
        assert [t for _, t in builtin] == [t for _, t in _chunks(chunker, path, "unstructured")], path.name


MARKDOWN = """---
title: Pump service guide
draft: false
---

# Pump service

The pump must be drained before service. Close the inlet valve first.

## Parts

- impeller
- seal kit
    - O-ring, 40 mm

```
drain --all
  --force
```

| Part | Torque |
|------|--------|
| Bolt | 12 Nm  |
"""


def test_markdown_gives_unstructured_element_kinds(tmp_path: Path) -> None:
    path = tmp_path / "pump.md"
    path.write_text(MARKDOWN)
    elements = parse_document(_ref(path), max_bytes=10**6, text_parser="builtin")
    kinds = [(e.category, e.text, e.metadata.category_depth) for e in elements]
    assert kinds[:3] == [("Title", "Pump service guide", 0), ("Title", "Pump service", 0),
                         ("NarrativeText", "The pump must be drained before service. Close the inlet valve first.",
                          None)]
    assert ("Title", "Parts", 1) in kinds
    assert ("ListItem", "impeller", 1) in kinds and ("ListItem", "O-ring, 40 mm", 2) in kinds
    code = next(e for e in elements if e.category == "CodeSnippet")
    assert code.text == "drain --all\n  --force"  # whitespace kept
    table = next(e for e in elements if e.category == "Table")
    assert table.text == "Part Torque Bolt 12 Nm" and "<td>12 Nm</td>" in table.metadata.text_as_html
    assert "draft" not in " ".join(e.text for e in elements)  # front matter is metadata, not text
    parts = next(e for e in elements if e.text == "Parts")
    assert next(e for e in elements if e.text == "impeller").metadata.parent_id == parts.id
    assert {e.metadata.filetype for e in elements} == {"text/markdown"}
    assert {e.metadata.filename for e in elements} == {"pump.md"}


DOCS_SITE_MARKDOWN = """---
title: First steps
sidebar_position: 2
---
import Tabs from '@theme/Tabs';

<!-- maintainers: keep this page short -->

# Run the app { #run-the-app }

Read the [tutorial](tutorial.md#top){.internal-link target=_blank} first.

{* ../../docs_src/first_steps/tutorial001.py hl[3] *}

```Python hl_lines="2"
{!> ../../docs_src/first_steps/tutorial001.py!}
```

/// tip | Reload on change

Use the dev server while you work.

///

!!! note "Where it listens"
    The server listens on port 8000.

    ```bash
    uvicorn main:app
    ```

:::warning
Never expose it to the internet.
:::

=== "Windows"

    Use the Start menu.

Setext heading
==============

[TOC]

## Stop it {#stop}

Press Ctrl-C to stop it.

///
"""


def test_documentation_site_markdown_is_read_as_the_site_shows_it(tmp_path: Path) -> None:
    """MkDocs/Material/pymdownx and Docusaurus syntax: no anchors, fences or include directives in the text,
    admonitions keep their title and body (not an indented code block), comments and front matter go."""
    path = tmp_path / "first-steps.md"
    path.write_text(DOCS_SITE_MARKDOWN)
    elements = parse_document(_ref(path), max_bytes=10**6, text_parser="builtin")
    assert [(e.category, e.text) for e in elements] == [
        ("Title", "First steps"),
        ("Title", "Run the app"),
        ("NarrativeText", "Read the tutorial first."),
        ("NarrativeText", "Reload on change"),
        ("NarrativeText", "Use the dev server while you work."),
        ("NarrativeText", "Where it listens"),
        ("NarrativeText", "The server listens on port 8000."),
        ("CodeSnippet", "uvicorn main:app"),
        ("UncategorizedText", "Warning"),
        ("NarrativeText", "Never expose it to the internet."),
        ("UncategorizedText", "Windows"),
        ("NarrativeText", "Use the Start menu."),
        ("Title", "Setext heading"),
        ("Title", "Stop it"),
        ("NarrativeText", "Press Ctrl-C to stop it."),
    ]


@pytest.mark.slow  # the real model (its tokenizer)
def test_a_chunk_without_words_is_never_kept(tmp_path: Path, embedder) -> None:
    """A rule, a fence or a box drawing cut into a chunk of its own has nothing a query matches, yet came
    back as a hit (a chunk whose whole text was ``///``)."""
    chunker = Chunker(ChunkingSettings(max_tokens=32, combine_under_chars=0), embedder.tokenizer, embedder.max_tokens)
    path = tmp_path / "layout.md"
    path.write_text("# Layout\n\nThe panel is laid out as below.\n\n```\n" + "+------+------+\n" * 40
                    + "```\n\n# Wiring\n\n---\n\n* * *\n\n| | |\n|-|-|\n| | |\n\nRed is live.\n")
    ref = _ref(path)
    chunks = chunker.chunk(ref, parse_document(ref, max_bytes=10**6, text_parser="builtin"))
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(any(char.isalnum() for char in c.text) for c in chunks), [c.text for c in chunks]
    assert {c.title for c in chunks} == {"Layout", "Wiring"}


@pytest.mark.slow  # the real model (its tokenizer)
def test_a_document_of_no_words_is_refused_with_the_reason(tmp_path: Path, embedder) -> None:
    chunker = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens)
    path = tmp_path / "rule.txt"
    path.write_text("=-=-=-=-=\n\n+++ --- +++\n")
    ref = _ref(path)
    with pytest.raises(DocumentError, match="no words left after chunking"):
        chunker.chunk(ref, parse_document(ref, max_bytes=10**6, text_parser="builtin"))


def test_plain_text_paragraphs_lists_and_titles(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Maintenance notes\n\nThe chain wears out after about 3,000 km of riding. Replace it then.\n\n"
                    "* clean the chain\n\n2. oil each roller\n\n[13] Roberts broke through in 1993\n", "utf-16")
    elements = parse_document(_ref(path), max_bytes=10**6, text_parser="builtin")
    assert [(e.category, e.text) for e in elements] == [
        ("Title", "Maintenance notes"),
        ("NarrativeText", "The chain wears out after about 3,000 km of riding. Replace it then."),
        ("ListItem", "clean the chain"),
        ("ListItem", "2. oil each roller"),
        ("NarrativeText", "[13] Roberts broke through in 1993"),
    ]


def test_builtin_runs_no_sentence_model(tmp_path: Path) -> None:
    """What makes it fast: unstructured classifies each paragraph with spaCy; the builtin parser never
    calls it (the same files through unstructured do, so this check can fail)."""
    from unstructured.nlp import tokenize

    path = tmp_path / "prose.md"
    path.write_text("# Title\n\n" + "\n\n".join(f"Paragraph {n} says something about pumps." for n in range(30)))
    tokenize._process_cached.cache_clear()
    parse_document(_ref(path), max_bytes=10**6, text_parser="builtin")
    assert tokenize._process_cached.cache_info().misses == 0
    parse_document(_ref(path), max_bytes=10**6, text_parser="unstructured")
    assert tokenize._process_cached.cache_info().misses > 0


def test_builtin_parser_imports_no_sentence_model() -> None:
    """The parsing child imports only what a text-only corpus needs: neither spaCy nor torch (~3 s)."""
    code = ("import sys, rag.ingest.parsing as p; p.warm_up('builtin'); "
            "print(sorted(m for m in ('spacy', 'torch', 'unstructured.partition.auto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


EDGE_CASES = ["", " ", "- item", "\u2022 bullet", "1. First step", "a@b.co", " x@y.org ", "Doylestown, PA 18901",
              "-----BREAK-----", "12345", "Mixed 50% text!!", "Plain sentence here."]


def _paragraphs(folder: Path) -> list[str]:
    samples: list[str] = []
    for path in _text_files(folder):
        text = path.read_text(errors="replace")
        samples += (text.split("\n\n") + text.splitlines())[:400]  # paragraphs, and lines (titles, lists)
    return samples


def _assert_paragraph_tests_agree(samples: list[str]) -> None:
    from unstructured.partition import text_type

    from rag.ingest import text as text_parsing

    for name in ("is_bulleted_text", "is_email_address", "is_us_city_state_zip", "is_possible_numbered_list",
                 "under_non_alpha_ratio"):
        ours, theirs = getattr(text_parsing, name), getattr(text_type, name)
        assert [ours(s) for s in samples] == [bool(theirs(s)) for s in samples], name


def test_paragraph_tests_agree_with_unstructured() -> None:
    """The regex tests restated in rag.ingest.text (to skip text_type's spaCy import) decide as
    unstructured's own do, on edge cases and every paragraph of the demo corpus's text files."""
    samples = EDGE_CASES + _paragraphs(DEMO_CORPUS)
    assert len(samples) > 40
    _assert_paragraph_tests_agree(samples)


@pytest.mark.requires_shared
def test_paragraph_tests_agree_with_unstructured_on_the_shared_corpus() -> None:
    """The same agreement on every paragraph of the shared corpus's text files (real documents)."""
    samples = _paragraphs(DOCS_CORPUS)
    assert len(samples) > 100
    _assert_paragraph_tests_agree(samples)


def test_the_parser_is_part_of_a_builds_policy() -> None:
    """A build parsed by unstructured (or made before the builtin parser, which recorded nothing) is no
    base for a builtin build: its .md and .txt documents are parsed again, not carried."""
    chunking = {"method": "m", "max_tokens": 254}
    fingerprint = FINGERPRINT
    old = _manifest(chunking)
    builtin = {**chunking, **describe_parsing("builtin")}
    unstructured = {**chunking, **describe_parsing("unstructured")}
    assert PipelineSettings().text_parser == "builtin"
    assert choose_base("a__v1", [old], fingerprint, unstructured) == "a__v1"
    assert choose_base("a__v1", [old], fingerprint, builtin) is None
    assert choose_base("a__v1", [_manifest(builtin)], fingerprint, builtin) == "a__v1"


@pytest.mark.slow  # the real model (its tokenizer)
def test_a_build_by_an_earlier_builtin_reader_or_chunker_is_no_base(embedder) -> None:
    """The builtin reader now reads .rst and documentation sites' Markdown differently, and wordless chunks
    are dropped: a build recorded before (``text_parser: builtin`` without a version, or the chunker's
    earlier description) carried its documents with chunks this code no longer makes; now they are parsed
    again (their unchanged chunks' vectors still come from the embedding cache)."""
    fingerprint, manifest = FINGERPRINT, _manifest
    chunking = Chunker(ChunkingSettings(), embedder.tokenizer, embedder.max_tokens).describe()
    current = {**chunking, **describe_parsing("builtin")}
    earlier_chunker = {key: value for key, value in chunking.items() if key != "wordless_chunks"}
    assert choose_base("a__v1", [manifest({**chunking, "text_parser": "builtin"})], fingerprint, current) is None
    assert choose_base("a__v1", [manifest({**earlier_chunker, **describe_parsing("builtin")})], fingerprint,
                       current) is None
    assert choose_base("a__v1", [manifest(current)], fingerprint, current) == "a__v1"


FINGERPRINT = ModelFingerprint(name="m", path="/m", weights_sha256="0" * 64, dimension=4, normalize=True,
                               dtype="float32", max_seq_length=256)


def _manifest(policy: dict) -> Manifest:
    """A complete build of alias ``a`` recorded with this chunking and parsing policy."""
    return Manifest(alias="a", version="v1", collection="a__v1", created_at=utc_now(), model=FINGERPRINT,
                    chunking=policy, sources=[], state="complete")
