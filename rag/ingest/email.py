"""E-mail (.eml) as text elements, read with the stdlib ``email`` parser.

unstructured's own e-mail path fails whole messages on the first attachment its fast strategy cannot
read (an inline logo: "The fast strategy is not available for image files"), reads a UTF-16 file as
NUL-interleaved bytes, trusts a part's declared charset even when the bytes disagree, and indexes an
encrypted message as a one-line stub. Here each text part is decoded with its declared charset when
that works, else by BOM, UTF-8 and cp1252; attachments that cannot be read are skipped.
"""

from __future__ import annotations

import email
import email.policy
import io
import logging
import re
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from rag.errors import DocumentError
from rag.ingest.quality import decode_bom

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

log = logging.getLogger(__name__)

ENCRYPTED = "email is PGP-encrypted; its text cannot be indexed"
NO_BODY = (
    "email has no readable body (no text/plain or text/html part with text, no readable attachment); "
    "nothing to index: fix or exclude the file"
)
_PGP_BLOCK = re.compile(r"-----BEGIN PGP MESSAGE-----.*?(?:-----END PGP MESSAGE-----|\Z)", re.S)
_UNENCODED = {"7bit", "8bit", "binary"}


def parse_email(path: Path) -> list[Element]:
    """Title (Subject and From), body text and readable attachments of one .eml file.

    The body is the text/plain parts, or the text/html parts turned into text when there is no plain
    text. Attachments are partitioned by unstructured (fast strategy); those it cannot read are skipped.

    Raises:
        DocumentError: the message is PGP-encrypted, or has no readable text at all.
    """
    raw = path.read_bytes()
    text = decode_bom(raw)  # a whole message saved as UTF-16 (or with a UTF-8 BOM) is text already
    if text is not None:
        msg = email.message_from_string(text, policy=email.policy.default)
    else:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    if any(part.get_content_type() in ("multipart/encrypted", "application/pgp-encrypted") for part in msg.walk()):
        raise DocumentError("parse", ENCRYPTED)

    bodies = _body_texts(msg, decoded=text is not None)
    readable = [(subtype, _PGP_BLOCK.sub("", body)) for subtype, body in bodies]
    if any(_PGP_BLOCK.search(body) for _, body in bodies) and not any(body.strip() for _, body in readable):
        raise DocumentError("parse", ENCRYPTED)

    elements = [e for subtype, body in readable if body.strip() for e in _text_elements(subtype, body, path.name)]
    elements += _attachment_elements(msg, path.name)
    if not any((e.text or "").strip() for e in elements):
        raise DocumentError("parse", NO_BODY)
    return _title(msg, path.name) + elements


def decode_text(data: bytes, declared: str | None) -> str:
    """Bytes of a text part as text: by BOM, else the declared charset, else UTF-8, else cp1252.

    Mailers often declare a charset the bytes are not in (us-ascii or utf-8 over Latin-1 bytes), so a
    declared charset is only used when the bytes decode with it.
    """
    text = decode_bom(data)
    if text is not None:
        return text
    for charset in (declared, "utf-8", "cp1252"):
        if not charset:
            continue
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")  # cp1252 leaves five bytes undefined; latin-1 maps every byte


def _body_texts(msg: EmailMessage, *, decoded: bool) -> list[tuple[str, str]]:
    """(subtype, text) of the body parts: the plain ones, or the html ones when no plain one has text."""
    parts: dict[str, list[str]] = {"plain": [], "html": []}
    for part in _leaves(msg):
        subtype = part.get_content_subtype()
        if part.get_content_maintype() == "text" and subtype in parts:
            parts[subtype].append(_part_text(part, decoded=decoded))
    chosen = "plain" if any(text.strip() for text in parts["plain"]) else "html"
    return [(chosen, text) for text in parts[chosen]]


def _part_text(part: EmailMessage, *, decoded: bool) -> str:
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    if decoded and encoding in _UNENCODED:
        return part.get_payload()  # decoded with the whole file: its declared charset no longer applies
    return decode_text(part.get_payload(decode=True) or b"", part.get_content_charset())


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    """Non-multipart parts that are not attachments (nested messages included)."""
    if part.is_attachment():
        return
    if part.is_multipart():  # a list payload: multipart/* or an attached message/rfc822
        for sub in part.get_payload():
            yield from _leaves(sub)
    else:
        yield part


def _attachments(part: EmailMessage) -> Iterator[EmailMessage]:
    if part.is_attachment():
        yield part
    elif part.is_multipart():
        for sub in part.get_payload():
            yield from _attachments(sub)


def _text_elements(subtype: str, text: str, filename: str) -> list[Element]:
    from unstructured.file_utils.model import FileType
    from unstructured.partition.html import partition_html
    from unstructured.partition.text import partition_text

    partitioner = partition_html if subtype == "html" else partition_text
    return partitioner(text=text, metadata_filename=filename, metadata_file_type=FileType.EML, languages=["eng"])


def _attachment_elements(msg: EmailMessage, filename: str) -> list[Element]:
    from unstructured.partition.auto import partition

    elements: list[Element] = []
    for part in _attachments(msg):
        name = part.get_filename()
        data = part.as_bytes() if part.is_multipart() else part.get_payload(decode=True)
        if not data:
            continue
        try:
            found = partition(file=io.BytesIO(data), metadata_filename=name, strategy="fast", languages=["eng"])
        except Exception as exc:  # an attachment it cannot read (an image, say) must not sink the message
            log.info("skipped attachment %s of %s: %s: %s", name, filename, type(exc).__name__, exc)
            continue
        for element in found:
            element.metadata.attached_to_filename = filename
        elements.extend(found)
    return elements


def _title(msg: EmailMessage, filename: str) -> list[Element]:
    from unstructured.documents.elements import ElementMetadata, Title

    subject, sender = _header(msg, "Subject"), _header(msg, "From")
    if subject and sender:
        text = f"{subject} (from {sender})"
    else:
        text = subject or (f"Email from {sender}" if sender else "")
    if not text:
        return []
    return [Title(text=text, metadata=ElementMetadata(filename=filename, filetype="message/rfc822"))]


def _header(msg: EmailMessage, name: str) -> str:
    """A header's text; raw 8-bit values (not RFC 2047 encoded) are decoded like body text."""
    value = msg.get(name)
    if value is None:
        return ""
    raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
    if isinstance(raw, str) and any("\udc80" <= char <= "\udcff" for char in raw):
        value = decode_text(raw.encode("ascii", "surrogateescape"), None)
    return " ".join(str(value).split())
