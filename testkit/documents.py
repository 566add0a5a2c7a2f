"""Real documents made to be hostile: what a parser must survive without costing more than itself."""

from __future__ import annotations

import zipfile
from pathlib import Path


def inflating_docx(path: Path, paragraphs: int = 200_000) -> Path:
    """A real Word document whose XML inflates ~30x (a small zip bomb, ~17 MB): slow and memory-hungry to parse."""
    import docx

    document = docx.Document()
    document.add_paragraph("Seed.")
    document.save(path)
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    body = "".join(f"<w:p><w:r><w:t>Paragraph {n} of a long and repetitive memo.</w:t></w:r></w:p>"
                   for n in range(paragraphs))
    xml = parts["word/document.xml"].decode()
    start = xml.index("<w:body>") + len("<w:body>")
    parts["word/document.xml"] = (xml[:start] + body + xml[start:]).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path
