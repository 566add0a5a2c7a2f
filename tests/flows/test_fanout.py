"""Parsing and embedding fanned out over a local Dask cluster (prefect-dask) make the same build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.reindex import reindex
from testkit.helpers import assert_same_index, points_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _config(path: Path, corpus: Path, store: Path, **pipeline) -> Path:
    path.write_text(yaml.safe_dump({
        "alias": "fan", "sources": [{"path": str(corpus), "name": "demo"}], "store": {"location": str(store)},
        "chunking": {"max_tokens": 96}, "pipeline": {"batch_documents": 2, **pipeline},
    }))
    return path


def test_a_build_fanned_out_over_dask_equals_the_local_build(tmp_path: Path, corpus: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

    from rag.models import utc_now

    started = utc_now()  # other tests' runs share the Prefect database
    (corpus / "empty.md").write_text("")  # a failure on a worker is quarantined like a local one
    local = reindex(config=str(_config(tmp_path / "local.yaml", corpus, tmp_path / "local")))
    fanned = reindex(config=str(_config(tmp_path / "dask.yaml", corpus, tmp_path / "dask", task_runner="dask",
                                        workers=2)))

    assert fanned["promoted"] is True, fanned["reason"]
    for key in ("documents_indexed", "documents_failed", "chunks", "chunks_embedded"):
        assert fanned["counts"][key] == local["counts"][key], key
    assert [f["doc_id"] for f in fanned["failures"]] == ["demo/empty.md"]
    assert_same_index(points_of(tmp_path / "dask", fanned["collection"]),
                      points_of(tmp_path / "local", local["collection"]))

    with get_client(sync_client=True) as client:  # the steps ran as tasks: 7 documents, 2 a batch, 4 batches
        # Both runners prepare and write as tasks (4 each); only Dask embeds as a task.
        for name, count in (("prepare-batch", 8), ("embed-batch", 4), ("write-batch", 8)):
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_=name), start_time=TaskRunFilterStartTime(after_=started)))
            assert len(runs) == count and all(r.state.is_completed() for r in runs), name
