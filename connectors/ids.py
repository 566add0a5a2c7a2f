"""Document ids: ``<source name>/<relative path>``, made printable and reversible.

File names are bytes on POSIX. Python decodes bytes that are not UTF-8 to lone surrogates
("surrogateescape"), which cannot be encoded again (uuid5, JSON, logs), and names may hold newlines,
tabs or right-to-left marks that make an id print as something else. So an id percent-encodes:

- each undecodable byte, as ``%XX`` of that byte;
- control characters (C0, C1, DEL), format characters (bidi controls, zero-width characters), line
  and paragraph separators and surrogates (Unicode categories Cc, Cf, Zl, Zp, Cs), as ``%XX`` of their
  UTF-8 bytes;
- ``%`` itself (``%25``), so that decoding is unambiguous.

Everything else is kept as it is (ASCII, accented letters, CJK, spaces), so the ids of ordinary names
are the ids earlier versions gave them.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote_to_bytes

#: Unicode categories that are invisible or change how the text around them prints
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: what ``os.fsdecode`` turns an undecodable byte 0xXX into: U+DCXX
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)


def document_id(source_name: str, relative_path: str) -> str:
    """The id of the document at ``relative_path`` (posix, as ``os.fsdecode`` gives it) in a source."""
    return f"{source_name}/{printable(relative_path)}"


def decode_document_id(doc_id: str) -> tuple[str, str]:
    """(source name, relative path) of an id, the path as ``os.fsdecode`` would give it (undecodable
    bytes back as surrogate escapes), so ``os.fsencode`` returns the file name's exact bytes."""
    source_name, _, encoded = doc_id.partition("/")
    return source_name, unquote_to_bytes(encoded).decode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """``text`` with undecodable bytes, invisible and control characters and ``%`` percent-encoded."""
    if text.isprintable() and "%" not in text:  # the common case: nothing to do
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code in _SURROGATE_ESCAPES:
        return f"%{code - 0xDC00:02X}"
    if char == "%" or unicodedata.category(char) in _ESCAPED_CATEGORIES:
        return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return char
