"""Is extracted text really text? Repair what is safely repairable, quarantine the garbage.

Extractors hand back things that are not text: NULs from UTF-16 read as single bytes, ``(cid:N)``
codes where pdfminer found a glyph without a Unicode mapping, ``/g24/g2`` glyph names where pypdf
did, control characters, and U+FFFD where bytes did not decode. A little of that is noise to strip;
a lot means the document's text is lost and indexing it would only pollute search.
"""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING, Sequence

from rag.errors import DocumentError

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

#: share of non-whitespace characters above which text is garbage, not text with some noise in it
GARBAGE_LIMIT = 0.2

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_MARKERS = {
    "cid": re.compile(r"\(cid:\d+\)"),
    # pypdf writes glyphs it cannot map as their names, back to back: /g24/g2/g40
    "glyph": re.compile(r"(?:/[A-Za-z]{1,8}\d+){3,}"),
    "nul": re.compile(r"\x00+"),
    # C0 controls that are not whitespace (tab, newlines, vertical tab and form feed are)
    "control": re.compile(r"[\x01-\x08\x0e-\x1f\x7f]+"),
}
_REPLACEMENT = "\ufffd"
# Stray noise that is safe to strip. Glyph-name runs are only counted: URL paths look like them.
_STRIPPED = [_MARKERS[kind] for kind in ("cid", "nul", "control")]

_REASONS = {
    "cid": "PDF text layer has no Unicode mapping for its glyphs ((cid:N) codes for {share:.0%} of the text); "
    "OCR it or export it again with embedded fonts",
    "glyph": "PDF text layer has no Unicode mapping for its glyphs (glyph names like /g24 for {share:.0%} of "
    "the text); OCR it or export it again with embedded fonts",
    "nul": "text is {share:.0%} NUL characters (UTF-16 or binary data read as single bytes); "
    "save it as UTF-8 text or exclude it",
    "control": "text is {share:.0%} control characters (binary data, or a font without Unicode mapping); "
    "export it again as text or OCR it",
    "fffd": "text is {share:.0%} undecodable characters (U+FFFD): its encoding is wrong or undeclared; "
    "save it as UTF-8 or fix its declared charset",
}


def decode_bom(data: bytes) -> str | None:
    """The text of bytes that start with a Unicode byte-order mark; None when there is none."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    return None


def decode_utf16(data: bytes) -> str | None:
    """The text of UTF-16 bytes, with a BOM or without one; None when the bytes are not UTF-16.

    Without a BOM, UTF-16 is recognised by the NUL in every other byte that Latin-script text has
    (bytes of one parity mostly NUL, of the other almost never), and must decode cleanly to mostly
    Latin-script text (a file only partly UTF-16 decodes to CJK-looking nonsense instead).
    """
    text = decode_bom(data)
    if text is not None:
        return text
    head = data[:4096]
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    for zeros, others, codec in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) >= 0.7 * len(zeros) and others.count(0) <= 0.05 * len(others):
            try:
                text = data[: len(data) - len(data) % 2].decode(codec)
            except UnicodeDecodeError:
                return None
            latin = sum(1 for char in text[:2048] if char < "\u0250")
            return text if latin >= 0.95 * len(text[:2048]) else None
    return None


def garbage(text: str) -> tuple[float, str]:
    """Share of ``text``'s non-whitespace characters that are not text, and the main kind of garbage.

    Kinds: ``cid`` and ``glyph`` (unmapped PDF glyphs), ``nul``, ``control``, ``fffd``.
    """
    visible = len(text) - sum(1 for char in text if char.isspace())
    if not visible:
        return 0.0, ""
    counts = {kind: sum(len(m) for m in pattern.findall(text)) for kind, pattern in _MARKERS.items()}
    counts["fffd"] = text.count(_REPLACEMENT)
    kind = max(counts, key=counts.__getitem__)
    return min(1.0, sum(counts.values()) / visible), kind


def check_text(elements: Sequence[Element]) -> list[Element]:
    """Repair the elements' text, or quarantine a document whose text is garbage.

    Below ``GARBAGE_LIMIT`` NULs, control characters and ``(cid:N)`` codes are stray noise and are
    stripped, so no index holds them; elements left blank are dropped. U+FFFD stays: it marks a lost
    character inside otherwise readable text.

    Raises:
        DocumentError: more than ``GARBAGE_LIMIT`` of the text is garbage; the reason names the kind.
    """
    share, kind = garbage("\n".join(element.text or "" for element in elements))
    if share > GARBAGE_LIMIT:
        raise DocumentError("parse", _REASONS[kind].format(share=share))
    if not share:
        return list(elements)
    repaired = []
    for element in elements:
        text = element.text or ""
        for pattern in _STRIPPED:
            text = pattern.sub("", text)
        if text.strip():
            element.text = text
            repaired.append(element)
    return repaired
