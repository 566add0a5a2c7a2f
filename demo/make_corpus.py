"""Write the demo corpus: a few short documents in Markdown, HTML, PDF, DOCX and plain text.

The files are committed under demo/corpus/; run `make corpus` to regenerate them after editing the text
here (needs the dev extra: fpdf2 for PDF, python-docx for DOCX). Topics are distinct on purpose, so a
query has one right document, and the PDF has two pages, so answers show page numbers.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

HANDBOOK_PAGES = [
    (
        "Promoting a build",
        [
            "Every reindex writes a new collection named after the alias and the build time. Serving "
            "applications never read that collection directly: they query the alias.",
            "When the build completes and its checks pass, ragops moves the alias to it in one atomic "
            "request, after checking that the alias still points where the run started. If somebody "
            "else moved the alias in the meantime, the promotion is refused and nothing changes.",
        ],
    ),
    (
        "Rolling back a bad promotion",
        [
            "If answers get worse after a promotion, undo it with `ragops rollback`. The alias goes back "
            "to the build that was live before, in one atomic step. No data is deleted: the newer build "
            "stays in the store and can be promoted again later.",
            "To go back further, pass --to with a version listed by `ragops status`.",
        ],
    ),
]

RETENTION_DOCX = [
    ("heading", "Retention of old builds"),
    (
        "para",
        "Old index versions are deleted automatically after each reindex. By default the three newest "
        "builds are kept, including the live one. The build that the live one replaced is always kept, "
        "so a rollback target exists.",
    ),
    ("heading", "What is never deleted"),
    (
        "para",
        "A collection that an alias points at is never deleted, whatever its age. Change the number of "
        "builds kept with the retention setting in ragops.yaml.",
    ),
]

ESPRESSO_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Espresso machine care</title></head>
<body>
<h1>Espresso machine care</h1>
<h2>Descaling</h2>
<p>Hard water leaves limescale in the boiler. Descale the espresso machine every two months: dissolve
one sachet of citric acid descaler in a litre of water, fill the tank, and run it through the steam
wand and the group head until the tank is empty. Rinse with two tanks of fresh water.</p>
<h2>Cleaning the portafilter</h2>
<p>After each session, knock out the coffee puck, rinse the portafilter basket under hot water and
wipe the gasket of the group head with a damp cloth. Once a week, backflush with a blind basket.</p>
</body></html>
"""

FRESHNESS_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Index freshness</title></head>
<body>
<h1>Index freshness</h1>
<p>An index is stale when the documents it was built from have changed since the build. ragops records
when each source was last listed completely and when each document was last indexed.</p>
<h2>Staleness limits</h2>
<p>Each source can declare a maximum staleness, such as six hours. A scheduled check reports every
source that has not been synchronised within its limit.</p>
</body></html>
"""

BICYCLE_MD = """# Bicycle chain maintenance

## Cleaning the chain

Shift to the smallest cog, hold a rag around the lower run of the chain and pedal backwards. For a
deep clean, use a chain-cleaning tool with degreaser, then rinse and let it dry.

## Lubricating

Put one drop of chain oil on each roller while pedalling backwards, wait five minutes, then wipe off
the excess. Too much oil attracts dirt and wears the drivetrain faster.

## When to replace the chain

Measure chain wear with a chain checker. Replace the chain at 0.5% elongation on 11- and 12-speed
drivetrains, or at 0.75% on older ones, before it wears out the cassette.
"""

GLOSSARY_TXT = """Glossary

Alias: a name that points at one collection. Applications query the alias, so the collection behind
it can change without redeploying them.

Collection: a set of vectors with their payloads in Qdrant. Each index build is one collection.

Embedding: a vector of numbers that represents the meaning of a piece of text.

Chunk: a piece of a document small enough for the embedding model to read whole.
"""


def write_corpus(folder: Path) -> list[Path]:
    """Write every demo document into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _write_pdf(folder / "operations-handbook.pdf"),
        _write_docx(folder / "retention-policy.docx"),
        _write_text(folder / "espresso-machine.html", ESPRESSO_HTML),
        _write_text(folder / "index-freshness.html", FRESHNESS_HTML),
        _write_text(folder / "bicycle-chain.md", BICYCLE_MD),
        _write_text(folder / "glossary.txt", GLOSSARY_TXT),
    ]
    return written


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=timezone.utc))  # reproducible bytes
    pdf.set_title("ragops operations handbook")
    for number, (heading, paragraphs) in enumerate(HANDBOOK_PAGES, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 5, f"ragops operations handbook - page {number}")
        pdf.ln(12)
        pdf.set_font("Helvetica", style="B", size=16)
        pdf.multi_cell(0, 10, heading)
        pdf.ln(2)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(3)
    pdf.output(str(path))
    return path


def _write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Retention of old builds"
    for kind, text in RETENTION_DOCX:
        if kind == "heading":
            document.add_heading(text, level=1)
        else:
            document.add_paragraph(text)
    document.save(str(path))
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus"
    for file in write_corpus(target):
        print(file)
