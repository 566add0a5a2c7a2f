"""Extraction quality: PDFs whose text the fast path misses, e-mail in any charset, text that is not text.

Every document here is a real file written into tmp_path (PDF bytes by hand, e-mails as raw MIME), or a
real-world file from ../shared/docs-corpus.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from pathlib import Path

import pytest

from rag.errors import DocumentError
from rag.ingest.parsing import parse_document
from rag.models import DocumentRef
from testkit.paths import SHARED

pytestmark = pytest.mark.slow

DOCS_CORPUS = SHARED / "docs-corpus"
LINES = (
    "Quarterly maintenance report for the pumping station.",
    "The inlet valve was replaced on the third of May.",
    "Pressure readings stayed within the normal range all month.",
)
HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def _ref(path: Path) -> DocumentRef:
    stat = path.stat()
    return DocumentRef(
        doc_id=f"t/{path.name}", source="t", uri=path.as_uri(), path=path,
        size=stat.st_size, modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime}",
    )


def _parse(path: Path) -> list:
    return parse_document(_ref(path), max_bytes=10**8)


def _reason(path: Path) -> str:
    with pytest.raises(DocumentError) as error:
        _parse(path)
    return error.value.reason


def _text(elements) -> str:
    return "\n".join(element.text for element in elements)


# -- PDFs written by hand -------------------------------------------------------------------------------


def _pdf(pages: list[tuple[bytes, bytes]], *, font: bytes = HELVETICA, extra: dict[int, bytes] | None = None) -> bytes:
    """A PDF with one font (object 3) and pages of (content stream, resources); xref offsets exact."""
    objects = {3: font, **(extra or {})}
    kids = []
    for number, (content, resources) in enumerate(pages):
        stream, page = 4 + 2 * number, 5 + 2 * number
        objects[stream] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
        objects[page] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R /Resources %s >>" % (
            stream, resources,
        )
        kids.append(b"%d 0 R" % page)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    out, offsets = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref, size = len(out), max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] if n in offsets else b"0000000000 65535 f \n" for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def _lines_at(y: int) -> bytes:
    shown = b"".join(b"(%s) Tj T* " % line.encode() for line in LINES)
    return b"BT /F1 12 Tf 72 %d Td 14 TL %sET" % (y, shown)


_FONT_RESOURCES = b"<< /Font << /F1 3 0 R >> >>"
_FORM = _lines_at(700)
_FORM_XOBJECT = {
    20: b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources %s /Length %d >>\nstream\n%s\nendstream"
    % (_FONT_RESOURCES, len(_FORM), _FORM)
}


def _pdf_text_in_top_margin() -> bytes:
    # unstructured classifies text this high on the page as running headers, which parsing drops
    return _pdf([(_lines_at(780), _FONT_RESOURCES)] * 2)


def _pdf_form_xobject_shifted() -> bytes:
    # the page's text drawn by a Form XObject moved up by a negative offset (like negative-coords.pdf)
    page = (b"q 1 0 0 1 -2 -650 cm /X1 Do Q", b"<< /XObject << /X1 20 0 R >> >>")
    return _pdf([page, page], extra=_FORM_XOBJECT)


def _pdf_broken_xref() -> bytes:
    # every xref offset is off by 7 bytes: pdfminer gives up, pypdf reconstructs the table
    good = _pdf([(_lines_at(700), _FONT_RESOURCES)] * 2)
    return re.sub(rb"(\d{10}) 00000 n", lambda m: b"%010d 00000 n" % (int(m.group(1)) + 7), good)


@pytest.mark.parametrize(
    "make", [_pdf_text_in_top_margin, _pdf_form_xobject_shifted, _pdf_broken_xref]
)
def test_a_pdf_whose_text_the_fast_path_misses_is_read_from_its_text_layer_page_by_page(tmp_path: Path, make) -> None:
    path = tmp_path / f"{make.__name__.strip('_')}.pdf"
    path.write_bytes(make())

    elements = _parse(path)

    assert {element.metadata.page_number for element in elements} == {1, 2}
    assert all(element.metadata.filename == path.name for element in elements)
    assert {element.category for element in elements} <= {"NarrativeText", "Text"}
    for page in (1, 2):
        page_text = " ".join(e.text for e in elements if e.metadata.page_number == page)
        assert all(line in page_text for line in LINES), page_text


def _pdf_without_unicode_mapping() -> bytes:
    # A Type0 font with Identity-H codes and no ToUnicode map: pdfminer can only say (cid:N).
    font = b"<< /Type /Font /Subtype /Type0 /BaseFont /ABCDEF+Custom /Encoding /Identity-H /DescendantFonts [10 0 R] >>"
    descendant = {
        10: b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /ABCDEF+Custom /CIDToGIDMap /Identity "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /DW 500 >>"
    }
    codes = b"".join(b"%04X" % (ord(char) - 29) for char in " ".join(LINES))
    content = b"BT /F1 12 Tf 72 700 Td <%s> Tj 0 -14 Td <%s> Tj ET" % (codes, codes)
    return _pdf([(content, _FONT_RESOURCES)] * 2, font=font, extra=descendant)


def _pdf_with_unmapped_glyph_names() -> bytes:
    # Glyph names no reader knows (/g1../g59): pypdf writes them out, pdfminer says (cid:N).
    names = b" ".join(b"/g%d" % n for n in range(1, 60))
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Foo /Encoding << /Type /Encoding /Differences [1 %s] >> >>" % names
    codes = bytes(ord(char) % 58 + 1 for char in LINES[0])
    shown = codes.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return _pdf([(b"BT /F1 12 Tf 72 700 Td (%s) Tj ET" % shown, _FONT_RESOURCES)], font=font)


@pytest.mark.parametrize(
    ("make", "marker"), [(_pdf_without_unicode_mapping, "(cid:N) codes"), (_pdf_with_unmapped_glyph_names, "/g24")]
)
def test_a_pdf_text_layer_without_unicode_mapping_is_quarantined_with_what_to_do(tmp_path: Path, make, marker) -> None:
    path = tmp_path / "unmapped.pdf"
    path.write_bytes(make())

    reason = _reason(path)

    assert reason.startswith("PDF text layer has no Unicode mapping for its glyphs"), reason
    assert marker in reason and "OCR it" in reason


# -- e-mail ---------------------------------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(
        b"IEND", b""
    )


_LATIN_HEADERS = ("From: Jos\xe9 Garc\xeda <jose@example.com>\r\nTo: team@example.com\r\nSubject: Caf\xe9 menu\r\n"
                  "MIME-Version: 1.0\r\n")
_LATIN_BODY = "Bonjour \xe0 tous,\r\n\r\nLe caf\xe9 cr\xe8me co\xfbte deux euros. Les cr\xeapes sont d\xe9licieuses.\r\n"


def _latin1_email(charset: str) -> bytes:
    return (
        _LATIN_HEADERS
        + f'Content-Type: text/plain; charset="{charset}"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
        + _LATIN_BODY
    ).encode("latin-1")


def _cp1252_email_with_inline_logo() -> bytes:
    logo = base64.encodebytes(_png()).decode()
    return (
        _LATIN_HEADERS
        + 'Content-Type: multipart/related; boundary="BB"\r\n\r\n--BB\r\n'
        + 'Content-Type: text/plain; charset="windows-1252"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
        + _LATIN_BODY
        + '\r\n--BB\r\nContent-Type: image/png; name="logo.png"\r\nContent-Transfer-Encoding: base64\r\n'
        + "Content-ID: <logo>\r\n\r\n"
        + logo
        + "\r\n--BB--\r\n"
    ).encode("latin-1")


@pytest.mark.parametrize(
    "name, data",
    [
        ("declared-latin1.eml", _latin1_email("iso-8859-1")),
        ("latin1-declared-utf8.eml", _latin1_email("utf-8")),  # a mailer that lies about its charset
        ("cp1252-with-inline-logo.eml", _cp1252_email_with_inline_logo()),
    ],
)
def test_a_non_utf8_email_is_indexed_with_its_subject_sender_and_body(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)

    elements = _parse(path)

    assert elements[0].category == "Title"
    assert elements[0].text == "Café menu (from José García <jose@example.com>)"
    text = _text(elements[1:])
    assert "Bonjour à tous" in text and "Le café crème coûte deux euros." in text and "crêpes sont délicieuses" in text
    assert "\ufffd" not in _text(elements)


_UTF8_EMAIL = (
    "From: Ana Lima <ana@example.com>\nTo: team@example.com\nSubject: Quarterly plan\nMIME-Version: 1.0\n"
    "Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n\n"
    "The quarterly plan is ready. Résumé attached — please review the budget section by Friday.\n"
)


@pytest.mark.parametrize(
    "name, data",
    [
        ("utf8.eml", _UTF8_EMAIL.format(charset="utf-8").encode("utf-8")),
        ("utf16-with-bom.eml", _UTF8_EMAIL.format(charset="utf-16").encode("utf-16")),
    ],
)
def test_utf8_and_utf16_emails_are_indexed_as_text(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)

    elements = _parse(path)

    assert [e.text for e in elements[:1]] == ["Quarterly plan (from Ana Lima <ana@example.com>)"]
    assert "Résumé attached — please review the budget section by Friday." in _text(elements)
    assert "\x00" not in _text(elements)


def test_an_html_only_email_is_turned_into_text(tmp_path: Path) -> None:
    path = tmp_path / "html-only.eml"
    html = "<html><body><h1>Caf\xe9 menu</h1><p>Le caf\xe9 cr\xe8me co\xfbte deux euros.</p></body></html>"
    path.write_bytes(
        (_LATIN_HEADERS + 'Content-Type: text/html; charset="windows-1252"\r\n\r\n' + html).encode("latin-1")
    )

    elements = _parse(path)

    assert elements[0].text.startswith("Café menu (from")
    assert "Le café crème coûte deux euros." in _text(elements) and "<p>" not in _text(elements)


_PGP = ("-----BEGIN PGP MESSAGE-----\n\nhQEMA8ZW3Jq0bAbkAQf/Yx6Y+u6pQ7k0aW1vZ3JhbSBmb28gYmFyIGJheg==\n=abcd\n"
        "-----END PGP MESSAGE-----\n")
_PGP_HEADERS = "From: a@example.com\nTo: b@example.com\nSubject: Board minutes\nMIME-Version: 1.0\n"


@pytest.mark.parametrize(
    "body",
    [
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="XX"\n\n'
        "--XX\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n"
        f'--XX\nContent-Type: application/octet-stream; name="encrypted.asc"\n\n{_PGP}\n--XX--\n',
        f"Content-Type: text/plain\n\n{_PGP}",  # inline PGP
    ],
    ids=["pgp-mime", "inline-pgp"],
)
def test_a_pgp_encrypted_email_is_quarantined(tmp_path: Path, body: str) -> None:
    path = tmp_path / "secret.eml"
    path.write_text(_PGP_HEADERS + body)

    assert _reason(path) == "email is PGP-encrypted; its text cannot be indexed"


def test_an_email_without_a_readable_body_is_quarantined_with_a_clear_reason(tmp_path: Path) -> None:
    path = tmp_path / "headers-only.eml"
    path.write_text("From: a@example.com\nTo: b@example.com\nSubject: (no body)\nMIME-Version: 1.0\n\n   \n")

    assert _reason(path).startswith("email has no readable body")


@pytest.mark.requires_shared
@pytest.mark.parametrize(
    "name, title, body",
    [
        ("fake-email.eml", "Test Email (from Matthew Robinson <mrobinson@unstructured.io>)", "Roses are red"),
        ("fake-email-malformed-encoding.eml", "Test Email (from Matthew Robinson", "Violets are blue"),
        ("family-day.eml", "Family Day (from Mallori Harrell <mallori@unstructured.io>)", "face painting"),
        ("mime-html-only.eml", "Example HTML Only MIME Email (from sender@example.com)", "Scott Fahlman in 1982"),
    ],
)
def test_the_corpus_emails_still_parse_now_with_their_title(name: str, title: str, body: str) -> None:
    elements = _parse(DOCS_CORPUS / name)

    assert elements[0].category == "Title" and elements[0].text.startswith(title)
    assert body in _text(elements[1:])


# -- text that is not text ------------------------------------------------------------------------------

_NOTES = "Pump station maintenance notes.\n\nThe inlet valve was replaced on the third of May.\n"


def test_undetected_utf16_text_files_are_decoded(tmp_path: Path) -> None:
    rst = tmp_path / "notes.rst"
    rst.write_bytes(("Notes\n=====\n\n" + _NOTES).encode("utf-16"))  # unstructured reads it as Latin-1
    csv = tmp_path / "readings.csv"
    csv.write_bytes("station,bar\nnorth,3.1\nsouth,2.9\n".encode("utf-16"))  # unstructured: UnicodeDecodeError

    rst_elements, csv_elements = _parse(rst), _parse(csv)

    assert [e.text for e in rst_elements] == [
        "Notes", "Pump station maintenance notes.", "The inlet valve was replaced on the third of May."
    ]
    assert rst_elements[0].category == "Title"
    assert "north 3.1" in _text(csv_elements) and "\x00" not in _text(csv_elements)


def test_stray_nuls_are_stripped_from_readable_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(_NOTES.replace("valve", "val\x00ve").encode())

    assert "The inlet valve was replaced" in _text(_parse(path))


@pytest.mark.parametrize(
    "data, says",
    [
        (_NOTES.encode() + (_NOTES * 3).encode("utf-16-le"), "NUL characters"),
        (("Notes: " + "\ufffd" * 400 + "\n").encode(), "undecodable characters (U+FFFD)"),
    ],
    ids=["nul-interleaved", "replacement-characters"],
)
def test_text_that_is_mostly_garbage_is_quarantined_with_what_is_wrong(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "garbled.txt"
    path.write_bytes(data)

    reason = _reason(path)

    assert says in reason and re.search(r"\d+%", reason), reason


def test_check_text_strips_rare_noise_and_rejects_garbage() -> None:
    from unstructured.documents.elements import NarrativeText

    from rag.ingest.quality import check_text

    readable = [NarrativeText(text="The \ufb01rst (cid:12)valve was re\x00placed."), NarrativeText(text="(cid:3)")]
    kept = check_text(readable + [NarrativeText(text="Pressure readings stayed within the normal range. " * 3)])
    assert kept[0].text == "The \ufb01rst valve was replaced." and len(kept) == 2
    with pytest.raises(DocumentError, match=r"\(cid:N\) codes for \d+% of the text"):
        check_text([NarrativeText(text="(cid:52)(cid:88)(cid:68) (cid:85)(cid:87) ok")])


# -- the shared corpus ----------------------------------------------------------------------------------


@pytest.mark.requires_shared
def test_corpus_pdf_with_its_text_in_a_shifted_form_xobject_is_indexed_from_its_text_layer() -> None:
    elements = _parse(DOCS_CORPUS / "negative-coords.pdf")

    assert {e.metadata.page_number for e in elements} == {1}
    assert "Comprehensive Carbon Footprint Letter of Assurance" in _text(elements)


@pytest.mark.requires_shared
@pytest.mark.parametrize(
    "name, says",
    [
        ("single_table.pdf", "the PDF has no text layer (scanned or image-only?); OCR it"),
        ("empty.eml", "email has no readable body"),
    ],
)
def test_corpus_files_without_text_say_why(name: str, says: str) -> None:
    assert says in _reason(DOCS_CORPUS / name)


@pytest.mark.requires_shared
@pytest.mark.parametrize("name", ["copy-protected.pdf", "layout-parser-paper-fast.pdf", "multi-column-2p.pdf"])
def test_corpus_pdfs_are_indexed_without_nuls_or_cid_codes(name: str) -> None:
    text = _text(_parse(DOCS_CORPUS / name))

    assert len(text) > 1000
    assert "\x00" not in text and "(cid:" not in text
