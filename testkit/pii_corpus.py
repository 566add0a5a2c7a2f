"""A corpus with planted personal data: the demo corpus plus documents in several formats that carry
e-mail addresses, phone numbers, card numbers and IBANs written in several ways, in text, tables, links
and e-mail headers. Shared by tests/ingest/test_redaction.py and bench/redaction.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EMAILS = ["alice.martin@example.com", "bob+billing@mail.example.co.uk", "j.doe_1984@corp-mail.example.net",
          "hr-team@northwind.example.org"]
PHONES = ["+1 415-555-0132", "(212) 555-0175", "+44 20 7946 0958", "+49 30 901820", "212.555.0199"]
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000990139424"]
IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606",
         "NL91ABNA0417164300"]
#: every planted value, as written in the documents
PLANTED = {"EMAIL_ADDRESS": EMAILS, "PHONE_NUMBER": PHONES, "CREDIT_CARD": CARDS, "IBAN_CODE": IBANS}
ENTITIES = sorted(PLANTED)


def compact(value: str) -> str:
    """A planted number without its separators (spaces, dashes, dots, brackets): a store could hold that form."""
    return value if "@" in value else "".join(ch for ch in value if ch.isalnum() or ch == "+")


def write_corpus(folder: Path, *, demo: bool = True) -> Path:
    """Write the corpus into ``folder`` (the demo corpus's documents too when ``demo``) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    if demo:
        for path in (ROOT / "demo" / "corpus").iterdir():
            shutil.copy(path, folder / path.name)
    e, p, c, i = EMAILS, PHONES, CARDS, IBANS
    (folder / "customer-support.txt").write_text(
        "Customer support escalation log\n\n"
        f"The customer Alice Martin wrote from {e[0]} about a refund. Call her back on {p[0]} or on her "
        f"office line {p[1]}. The refund goes to IBAN {i[0]}; the original payment used the card {c[0]}.\n\n"
        f"A second ticket came from {e[1]}, phone {p[2]}, asking to close the account {i[1]} and to stop "
        f"charging the card {c[1]}.\n",
        encoding="utf-8",
    )
    (folder / "vendor-payments.md").write_text(
        "# Vendor payments\n\n"
        "Payments to vendors are approved by finance before the end of each month.\n\n"
        "## Bank details on file\n\n"
        f"- Northwind Traders: {i[2]}, contact {e[3]}, phone {p[3]}\n"
        f"- Contoso Supplies: {i[3]}, corporate card {c[2]}\n\n"
        "## Escalations\n\n"
        f"Escalate disputed invoices to {e[2]} or call {p[4]}. Card on file for travel: {c[3]}.\n",
        encoding="utf-8",
    )
    (folder / "contacts.html").write_text(
        "<html><body><h1>On-call contacts</h1>"
        f"<p>Primary: <a href=\"mailto:{e[0]}\">{e[0]}</a>, mobile {p[0]}.</p>"
        "<table><tr><th>Name</th><th>Email</th><th>Phone</th><th>IBAN</th></tr>"
        f"<tr><td>Bob</td><td>{e[1]}</td><td>{p[2]}</td><td>{i[1]}</td></tr>"
        f"<tr><td>Jane</td><td>{e[2]}</td><td>{p[1]}</td><td>{i[3]}</td></tr></table>"
        "<p>Rotate the on-call schedule every Monday.</p></body></html>",
        encoding="utf-8",
    )
    (folder / "refund-request.eml").write_text(
        f"From: Alice Martin <{e[0]}>\nTo: Support <{e[3]}>\nSubject: Refund for order 1182\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\nMessage-ID: <1182@example.com>\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        f"Hello, please refund order 1182 to {i[2]}. I paid with {c[0]}. You can reach me on {p[0]}.\n",
        encoding="utf-8",
    )
    _docx(folder / "payroll-changes.docx")
    return folder


def _docx(path: Path) -> None:
    from docx import Document

    document = Document()
    document.add_heading("Payroll changes for November", level=1)
    document.add_paragraph(f"New bank account for Jane Roe: {IBANS[0]}. Confirm with {EMAILS[2]} or {PHONES[4]}.")
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(table.rows, [("Employee", "IBAN", "Phone"), ("Jane Roe", IBANS[3], PHONES[3]),
                                        ("John Poe", IBANS[1], PHONES[2])]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_paragraph(f"Expense card to cancel: {CARDS[1]}.")
    document.save(path)


def found_in_files(folders: list[Path], needles: list[str]) -> set[tuple[str, str]]:
    """Every (file, needle) where a needle's bytes occur in a file under the folders: as written or
    compact, in UTF-8 or UTF-16."""
    forms = {form: needle for needle in needles for text in {needle, compact(needle)}
             for form in (text.encode(), text.encode("utf-16-le"))}
    hits = set()
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                hits.update((str(path), needle) for form, needle in forms.items() if form in data)
    return hits


#: full names planted in the named corpus (``write_named_corpus``): several origins and spellings. The
#: first is planted in every document, in a heading and in the text, as one person a corpus names often.
NAMES = ["Karin Lindqvist", "Priya Raghunathan", "Olusegun Adebayo", "Maria Kowalska", "Siobhan O'Connell",
         "Wei Zhang", "Hannah Becker", "Tomás Herrera", "Aiko Tanaka", "Dmitri Volkov"]
#: every value the named corpus plants, by entity type
NAMED_PLANTED = {"PERSON": NAMES, "EMAIL_ADDRESS": EMAILS[:3], "PHONE_NUMBER": PHONES[:4], "CREDIT_CARD": CARDS[:1],
                 "IBAN_CODE": IBANS[:1]}
#: the documents of the demo corpus that the named corpus plants into (the PDF is left as it is)
NAMED_DOCUMENTS = ["bicycle-chain.md", "espresso-machine.html", "glossary.txt", "index-freshness.html",
                   "retention-policy.docx"]


def write_named_corpus(folder: Path) -> Path:
    """The demo corpus with full names, e-mails, phones, a card and an IBAN planted into its documents:
    in headings (each document's name-carrying section title) and in sentences, list items and table
    cells. Returns ``folder``."""
    from docx import Document

    folder.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / "demo" / "corpus").iterdir():
        shutil.copy(path, folder / path.name)
    n, e, p = NAMES, EMAILS, PHONES
    markdown = (folder / "bicycle-chain.md").read_text(encoding="utf-8")
    (folder / "bicycle-chain.md").write_text(markdown.replace(
        "## When to replace the chain",
        f"## Notes from {n[0]}\n\nAsk {n[1]} at {e[0]} or on {p[0]} before replacing the cassette; "
        f"{n[0]} keeps the spare chains in the workshop.\n\n- Chain checker lent by {n[2]}\n\n"
        "## When to replace the chain"), encoding="utf-8")
    html = (folder / "espresso-machine.html").read_text(encoding="utf-8")
    (folder / "espresso-machine.html").write_text(html.replace(
        "</body>",
        f"<h2>{n[0]}</h2>\n<p>The machine was last serviced by {n[3]} on Friday. {n[0]} orders the descaler; "
        f"send invoices to {e[1]} or call {p[1]}.</p>\n"
        f"<table><tr><th>Technician</th><th>Phone</th></tr><tr><td>{n[4]}</td><td>{p[2]}</td></tr></table>\n"
        "</body>"), encoding="utf-8")
    glossary = (folder / "glossary.txt").read_text(encoding="utf-8")
    (folder / "glossary.txt").write_text(glossary.replace(
        "Glossary\n", f"Glossary\n\nMaintained by {n[0]}\n\nQuestions about these terms go to {n[5]} ({e[2]}) "
        f"or to {n[0]}.\n", 1), encoding="utf-8")
    html = (folder / "index-freshness.html").read_text(encoding="utf-8")
    (folder / "index-freshness.html").write_text(html.replace(
        "</body>",
        f"<h2>Owner: {n[0]}</h2>\n<p>{n[0]} reviews the staleness limits every quarter with {n[6]} and "
        f"{n[7]}. The hosting is paid with the card {CARDS[0]}; refunds go to {IBANS[0]}.</p>\n</body>"),
        encoding="utf-8")
    document = Document(str(folder / "retention-policy.docx"))
    document.add_heading(f"Approved by {n[0]}", level=1)
    document.add_paragraph(f"{n[8]} deletes old builds by hand when {n[9]} asks; {n[0]} signs off. "
                           f"Call {p[3]} out of hours.")
    document.save(str(folder / "retention-policy.docx"))
    return folder
