"""reStructuredText read by docutils (rag/ingest/rst.py): the elements the Markdown reader gives, Sphinx's
markup kept as text, no other file read, and malformed markup read leniently or refused with a reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import ChunkingSettings
from rag.errors import DocumentError
from rag.ingest.chunking import Chunker
from rag.ingest.parsing import parse_document, parser_group
from rag.models import DocumentRef

GUIDE = """\
=============
Pump handbook
=============

The pump must be drained before service [#drain]_. Close the inlet valve first.

Parts
=====

- impeller
- seal kit

  #. O-ring, 40 mm
  #. gasket

Torque
  12 Nm for every bolt.

:Reviewed: 2024-05-01
:orphan:

Draining
--------

Run this::

    drain --all
      --force

.. code-block:: console
   :caption: From the shell
   :emphasize-lines: 1

   $ pump stop

+------+--------+
| Part | Torque |
+======+========+
| Bolt | 12 Nm  |
+------+--------+

.. list-table:: Spares
   :header-rows: 1

   * - Spare
     - Count
   * - Seal
     - 4

.. [#drain] Drain into the grey tank.
"""


def _ref(path: Path) -> DocumentRef:
    stat = path.stat()
    return DocumentRef(doc_id=f"t/{path.name}", source="t", uri=path.as_uri(), path=path, size=stat.st_size,
                       modified=stat.st_mtime, signal=f"{stat.st_size}:{stat.st_mtime}")


def _parse(tmp_path: Path, text: str, name: str = "doc.rst") -> list:
    path = tmp_path / name
    path.write_text(text)
    return parse_document(_ref(path), max_bytes=10**6, text_parser="builtin")


def _kinds(elements: list) -> list[tuple]:
    return [(e.category, e.text, e.metadata.category_depth) for e in elements]


def test_sections_lists_code_and_tables_become_the_markdown_readers_elements(tmp_path: Path) -> None:
    elements = _parse(tmp_path, GUIDE)
    kinds = _kinds(elements)

    titles = [(text, depth) for category, text, depth in kinds if category == "Title"]
    assert titles == [("Pump handbook", 0), ("Parts", 1), ("Draining", 2)]
    assert kinds[1] == ("NarrativeText", "The pump must be drained before service [1]. Close the inlet valve first.",
                        None)
    assert ("ListItem", "impeller", 1) in kinds and ("ListItem", "O-ring, 40 mm", 2) in kinds
    assert ("ListItem", "12 Nm for every bolt.", 1) in kinds  # a definition, after its term
    assert ("ListItem", "Reviewed: 2024-05-01", 1) in kinds
    assert not any("orphan" in text for _, text, _ in kinds)  # a flag without a value is not text
    code = [e.text for e in elements if e.category == "CodeSnippet"]
    assert code == ["drain --all\n  --force", "$ pump stop"]  # whitespace kept; Sphinx's options accepted
    tables = [e for e in elements if e.category == "Table"]
    assert [t.text for t in tables] == ["Part Torque Bolt 12 Nm", "Spares Spare Count Seal 4"]
    assert "<th>Part</th>" in tables[0].metadata.text_as_html and "<td>12 Nm</td>" in tables[0].metadata.text_as_html
    assert kinds[-1] == ("ListItem", "[1] Drain into the grey tank.", 1)
    parts = next(e for e in elements if e.text == "Parts")
    assert next(e for e in elements if e.text == "impeller").metadata.parent_id == parts.id
    assert {e.metadata.filetype for e in elements} == {"text/x-rst"}
    assert {e.metadata.filename for e in elements} == {"doc.rst"}


@pytest.mark.slow  # the real model (its tokenizer)
def test_chunks_carry_their_section_title(tmp_path: Path, embedder) -> None:
    path = tmp_path / "guide.rst"
    path.write_text(GUIDE)
    ref = _ref(path)
    chunker = Chunker(ChunkingSettings(max_tokens=32, combine_under_chars=0), embedder.tokenizer, embedder.max_tokens)
    chunks = chunker.chunk(ref, parse_document(ref, max_bytes=10**6))
    by_title: dict[str | None, str] = {}
    for chunk in chunks:
        by_title[chunk.title] = by_title.get(chunk.title, "") + chunk.text
    assert "Close the inlet valve first." in by_title["Pump handbook"]
    assert "drain --all" in by_title["Draining"]


def test_sphinx_directives_and_roles_keep_their_text(tmp_path: Path) -> None:
    elements = _parse(tmp_path, """\
Callable modules
================

Modules define :meth:`~object.__call__` as :class:`Callable <typing.Callable>` types do, see
:pep:`PEP 1 <1#discussing-a-pep>`, :pep:`562` and :rfc:`2822#section-3`; a :term:`loader` and :ref:`the
import system <importsystem>` are untouched, :py:func:`!len` too.

.. note::

   Calling a module costs one lookup.

.. versionadded:: 3.12
   Callable modules.

.. c:function:: int PyModule_Call(PyObject *module)

   Calls the module.

.. canonical-doc:: :ref:`python:import`

.. seealso::

   The import system.

.. toctree::
   :maxdepth: 2

   other-page
""")
    texts = [e.text for e in elements]
    assert texts[1] == ("Modules define __call__ as Callable types do, see PEP 1, PEP 562 and RFC 2822; a loader "
                        "and the import system are untouched, len too.")
    assert texts[2:4] == ["Note", "Calling a module costs one lookup."]
    assert "Added in version 3.12: Callable modules." in texts
    assert "int PyModule_Call(PyObject *module)" in texts and "Calls the module." in texts
    assert "python:import" in texts and "The import system." in texts
    assert not any("other-page" in t or "maxdepth" in t or ":meth:" in t or ".." in t for t in texts)


def test_no_other_file_is_read_and_nothing_is_written_out(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """A hostile document names files of this machine: none of them reaches the index. A docutils.conf
    where the parser runs (the test's working directory) turning file insertion and raw back on is ignored."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN-4f9a2c")
    (tmp_path / "secret.csv").write_text("TOKEN-4f9a2c,1\n")
    (tmp_path / "docutils.conf").write_text("[general]\nfile_insertion_enabled: yes\nraw_enabled: yes\n")
    elements = _parse(tmp_path, f"""\
Notes
=====

Before the includes.

.. include:: {secret}

.. include:: {secret}
   :literal:

.. literalinclude:: {secret}

.. csv-table:: Leak
   :file: {tmp_path / 'secret.csv'}

.. csv-table:: Remote
   :url: http://127.0.0.1:9/secret.csv

.. raw:: html
   :file: {secret}

.. raw:: html

   <script>alert("TOKEN-4f9a2c")</script>

After the includes.
""")
    texts = " ".join(e.text for e in elements)
    assert "TOKEN-4f9a2c" not in texts
    assert [e.text for e in elements] == ["Notes", "Before the includes.", "After the includes."]
    out, err = capfd.readouterr()
    assert out == err == ""


def test_malformed_markup_is_read_leniently(tmp_path: Path) -> None:
    elements = _parse(tmp_path, """\
Valves
======

An *unclosed emphasis and a |missing| substitution stay text.

Inlet
-----

The inlet valve closes first.

Outlet
======

Wrong
-----

Too low
=======

Broken
^^^^^^

+-----+----+
| bad | table
+----+

The last paragraph is kept.
""")
    texts = [e.text for e in elements]
    assert "An *unclosed emphasis and a |missing| substitution stay text." in texts
    assert "The inlet valve closes first." in texts and "The last paragraph is kept." in texts
    assert any("| bad | table" in t for t in texts)  # the table's source, as written
    assert [e.text for e in elements if e.category == "Title"][:3] == ["Valves", "Inlet", "Outlet"]


def test_markup_docutils_cannot_read_is_quarantined_with_the_reason(tmp_path: Path) -> None:
    nested = "\n\n".join(" " * depth + f"level {depth}" for depth in range(0, 600, 2))  # 300 block quotes deep
    with pytest.raises(DocumentError) as error:
        _parse(tmp_path, nested, "deep.rst")
    assert error.value.stage == "parse"
    assert error.value.reason.startswith("reStructuredText nested too deeply for docutils")
    assert "exclude the file" in error.value.reason


def test_rst_is_read_in_the_light_parser_group_without_pandoc_or_a_sentence_model(tmp_path: Path) -> None:
    """The parsing child reads .rst with what warm_up('builtin') imports: neither pandoc (a subprocess per
    file) nor spaCy/torch; with pipeline.text_parser unstructured it still goes to pandoc."""
    path = tmp_path / "guide.rst"
    path.write_text(GUIDE)
    assert parser_group(path, "builtin") == "builtin" and parser_group(path, "unstructured") == "unstructured"
    code = ("import sys; from rag.models import DocumentRef; import rag.ingest.parsing as p; p.warm_up('builtin')\n"
            f"ref = DocumentRef.model_validate_json({_ref(path).model_dump_json()!r})\n"
            "print(len(p.parse_document(ref, max_bytes=10**6)))\n"
            "print(sorted(m for m in ('spacy', 'torch', 'pypandoc', 'unstructured.partition.auto') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, modules = done.stdout.strip().splitlines()
    assert int(count) > 10 and modules == "[]"


@pytest.mark.requires_shared
def test_a_real_rst_file_has_the_sections_and_words_pandoc_and_unstructured_gave() -> None:
    """../shared/docs-corpus/README.rst read both ways: the same section titles in the same order, and the
    same words (pandoc + unstructured is the path .rst took before; bench/rst.py does this for the PEPs)."""
    from testkit.paths import SHARED

    path = SHARED / "docs-corpus" / "README.rst"
    ways = {parser: parse_document(_ref(path), max_bytes=10**6, text_parser=parser)
            for parser in ("builtin", "unstructured")}
    titles = {parser: [e.text for e in elements if e.category == "Title"] for parser, elements in ways.items()}
    words = {parser: " ".join(e.text for e in elements).split() for parser, elements in ways.items()}
    assert titles["builtin"] == titles["unstructured"] == ["Example Docs", "XBRL 10-K"]
    assert words["builtin"] == words["unstructured"]
