"""The ingest room: a fetched file to chunks. It never opens a store.

- ``parsing``: a document to text elements (unstructured's fast strategy, or the builtin readers); bad
  files become ``DocumentError``;
- ``text``: .txt, .md and .markdown to elements without unstructured's per-paragraph NLP;
- ``rst``: .rst to the same elements by docutils, in-process;
- ``email``: .eml by the stdlib parser;
- ``pdf``: a PDF's text layer page by page when unstructured's fast path finds none;
- ``quality``: is the extracted text text? Repair what is safe, quarantine the garbage;
- ``sandbox``: parsing and cutting into sections in a child process bounded in CPU time and memory;
- ``redaction``: personal data redacted per source with Presidio (offline), before anything is hashed;
- ``given_names``: the first names ``redaction``'s person rule looks for (data only);
- ``chunking``: elements to chunks the model reads whole: sections by title, then the model's tokens.

A new file format is a module here dispatched by suffix from ``parsing``. The readers (unstructured,
docutils, pypdf, Presidio) are imported when a document is parsed or redacted, so ``import rag.ingest``
loads none of them.
"""

from __future__ import annotations

from rag.ingest.chunking import Chunker
from rag.ingest.parsing import check_size, describe_parsing, parse_document, parser_group
from rag.ingest.redaction import Redactor, redactors_for
from rag.ingest.sandbox import ParseSandbox, shared_sandbox

__all__ = [
    "Chunker", "ParseSandbox", "Redactor", "check_size", "describe_parsing", "parse_document", "parser_group",
    "redactors_for", "shared_sandbox",
]
