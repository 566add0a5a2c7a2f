"""Folder connector: recursive listing, globs, stable ids, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors import list_documents
from rag.config import FolderSource
from rag.errors import SourceError


def _tree(root: Path) -> None:
    for relative in ["a.md", "sub/b.html", "sub/deeper/c.pdf", ".hidden/x.md", "sub/.secret.md", "notes.txt~"]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)


def test_lists_recursively_in_stable_order_with_ids_from_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root)
    refs = list_documents(FolderSource(path=root)).refs
    assert [r.doc_id for r in refs] == ["docs/a.md", "docs/sub/b.html", "docs/sub/deeper/c.pdf"]
    assert refs[1].uri == (root / "sub/b.html").resolve().as_uri()
    assert refs[1].size == len("sub/b.html")
    assert refs[1].source == "docs"


def test_ids_survive_moving_the_folder_when_the_source_is_named(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    _tree(first)
    _tree(second)
    ids_first = [r.doc_id for r in list_documents(FolderSource(path=first, name="kb")).refs]
    ids_second = [r.doc_id for r in list_documents(FolderSource(path=second, name="kb")).refs]
    assert ids_first == ids_second


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root)
    only_md_html = FolderSource(path=root, include=["*.md", "*.html"])
    assert [r.doc_id for r in list_documents(only_md_html).refs] == ["docs/a.md", "docs/sub/b.html"]
    no_sub = FolderSource(path=root, exclude=["sub/*"])
    assert [r.doc_id for r in list_documents(no_sub).refs] == ["docs/.hidden/x.md", "docs/a.md", "docs/notes.txt~"]


def test_missing_folder_and_file_instead_of_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        list_documents(FolderSource(path=tmp_path / "missing"))
    file = tmp_path / "file.md"
    file.write_text("x")
    with pytest.raises(SourceError, match="not a folder"):
        list_documents(FolderSource(path=file))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_unreadable_subfolder_fails_the_listing(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _tree(root)
    (root / "sub").chmod(0)
    try:
        with pytest.raises(SourceError, match="cannot read"):
            list_documents(FolderSource(path=root))
    finally:
        (root / "sub").chmod(0o755)
