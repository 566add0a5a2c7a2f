"""A PDF's text layer read directly, page by page: the fallback when unstructured's fast path finds none.

The fast path can miss text that is there: it classifies a page's text drawn in a Form XObject or in the
top margin as running headers (which parsing drops), and pdfminer gives up on files with a broken xref
table or wrong stream lengths that pypdf repairs as it reads.
"""

from __future__ import annotations

import logging
import re
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from rag.ingest.quality import GARBAGE_LIMIT, garbage

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def text_layer_elements(path: Path) -> list[Element]:
    """The PDF's text as ``NarrativeText`` elements with ``page_number`` and ``filename`` set.

    pypdf first (it reads files pdfminer cannot), then pdfminer. The first extractor whose text is
    readable wins; if neither reads readable text, the first one that read any is returned, for the
    text check to quarantine with its reason. Empty when neither finds text.
    """
    found: list[list[Element]] = []
    for extract in (_pypdf_pages, _pdfminer_pages):
        try:
            elements = [
                element
                for number, text in enumerate(extract(path), start=1)
                for element in _page_elements(text, number, path.name)
            ]
        except Exception as exc:  # a parser that cannot read the file is no worse than no text
            log.debug("%s could not read %s: %s", extract.__name__, path.name, exc)
            continue
        if not elements:
            continue
        if garbage("\n".join(e.text for e in elements))[0] <= GARBAGE_LIMIT:
            return elements
        found.append(elements)
    return found[0] if found else []


def _page_elements(text: str, page_number: int, filename: str) -> list[Element]:
    from unstructured.documents.elements import ElementMetadata, NarrativeText

    paragraphs = (" ".join(block.split()) for block in _PARAGRAPH_BREAK.split(text))
    return [
        NarrativeText(
            text=paragraph,
            metadata=ElementMetadata(filename=filename, filetype="application/pdf", page_number=page_number),
        )
        for paragraph in paragraphs
        if paragraph
    ]


def _pypdf_pages(path: Path) -> Iterator[str]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    if reader.is_encrypted:
        reader.decrypt("")  # owner-password-only PDFs open with the empty user password
    for page in reader.pages:
        yield page.extract_text() or ""


def _pdfminer_pages(path: Path) -> Iterator[str]:
    # pdfminer's TextConverter, unlike the layout objects unstructured reads, also renders
    # text inside figures (Form XObjects).
    from pdfminer.converter import TextConverter
    from pdfminer.layout import LAParams
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage

    resources = PDFResourceManager()
    with open(path, "rb") as file:
        for page in PDFPage.get_pages(file):
            out = StringIO()
            device = TextConverter(resources, out, laparams=LAParams())
            try:
                PDFPageInterpreter(resources, device).process_page(page)
            finally:
                device.close()
            yield out.getvalue()

