"""The shared corpus of 58 real documents in many formats, some deliberately broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.reindex import reindex
from rag.config import StoreSettings
from rag.store import open_store
from testkit.paths import SHARED

pytestmark = [pytest.mark.slow, pytest.mark.requires_shared, pytest.mark.usefixtures("prefect_harness")]

DOCS_CORPUS = SHARED / "docs-corpus"


def test_every_file_is_indexed_or_failed_with_a_reason_and_the_good_ones_promoted(tmp_path: Path) -> None:
    files = sorted(p.relative_to(DOCS_CORPUS).as_posix() for p in DOCS_CORPUS.rglob("*") if p.is_file())
    store = tmp_path / "qdrant"

    summary = reindex(sources=[str(DOCS_CORPUS)], store=str(store), alias="corpus")

    counts = summary["counts"]
    failed = {f["doc_id"].removeprefix("docs-corpus/"): f for f in summary["failures"]}
    assert counts["documents_seen"] == len(files)
    assert counts["documents_indexed"] + counts["documents_failed"] == len(files)
    assert set(failed) <= set(files)
    assert all(f["reason"] and f["stage"] in {"parse", "chunk", "embed"} for f in failed.values())
    # The deliberately broken ones fail; the real documents index.
    for broken in ("empty.txt", "fake-text-all-whitespace.txt", "password.pdf", "fake.doc"):
        assert broken in failed, broken
    assert failed["password.pdf"]["reason"].startswith("PDF is password-protected")
    assert counts["documents_indexed"] >= 45
    assert summary["promoted"], summary["reason"]

    with open_store(StoreSettings(location=str(store))) as opened:
        payloads = list(opened.scan_rows(summary["collection"]))
    indexed = {p.payload["doc_id"].removeprefix("docs-corpus/") for p in payloads}
    assert indexed == set(files) - set(failed)
    assert len(payloads) == counts["chunks"]
