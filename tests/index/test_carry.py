"""Carrying unchanged documents from the base build, on a real embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import DamagedBuildError
from rag.index import build
from rag.models import DocumentRecord, utc_now
from rag.store import open_store
from testkit.builds import FINGERPRINT, complete_build


def test_a_base_lacking_points_its_table_lists_stops_the_carry_with_a_damaged_build_error(store_path: Path) -> None:
    """The base's document table names points the base does not hold (its points and its table
    disagree): carrying from it stops with a ragops error that names the build and says what to do (the
    CLI prints one line), not a RuntimeError (which the CLI reports as a bug, with a traceback)."""
    now = utc_now()
    with open_store(StoreSettings(location=str(store_path))) as store:
        base = complete_build(store, "kb", "20260101-000000", chunks=2)  # points of d/0 and d/1, one each
        # The table says d/0 has three chunks: two of its points are missing from the build.
        records = [DocumentRecord(doc_id=f"d/{i}", source="d", uri=f"file:///{i}", signal="s", modified=0.0,
                                  first_seen=now, last_seen=now, chunks=chunks) for i, chunks in ((0, 3), (1, 1))]
        store.write_records(base, records)
        manifest = build.begin_build(store, "kb", [], FINGERPRINT, {}, base)
        with pytest.raises(DamagedBuildError) as raised:
            build.carry_documents(store, base, manifest.collection, records)
    assert not raised.value.transient  # the step is not retried: copying again finds the same points
    message = str(raised.value)
    assert message.startswith(f"base build {base} lacks 2 of the 4 points its document table lists")
    assert "ragops reindex --full" in message  # what to do
