"""The store's disk full, on the user's path (the CLI, one Prefect home, one store, a query service open):
a clear error, the live build served and undamaged, and a rerun that converges once space is freed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from testkit.helpers import (
    RAGOPS,
    NoSmallDisk,
    assert_same_index,
    damaged_complete_builds,
    free_port,
    husks_and_orphans,
    run_cli,
    small_disk,
    snapshot,
    wait_ready,
    write_notes,
)

pytestmark = [pytest.mark.slow, pytest.mark.long]


@pytest.fixture(name="small_disk")
def small_disk_fixture(tmp_path: Path) -> Iterator[Path]:
    """A 200 MB ext4 disk, loop-mounted (root with mount rights only; skipped otherwise)."""
    try:
        with small_disk(tmp_path) as mount:
            yield mount
    except NoSmallDisk as exc:
        pytest.skip(str(exc))


def test_a_full_disk_stops_the_build_with_a_clear_error_and_a_rerun_converges(small_disk: Path,
                                                                              tmp_path: Path) -> None:
    """The store's disk fills up: the run stops with one line naming it (whether the free-space check or
    the write itself notices), a serving process keeps answering from the live build, nothing is
    reported damaged, and once space is freed the rerun builds everything and cleans what the stopped
    runs left."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "RAGOPS_CHUNKING__MAX_TOKENS": "64",
           "RAGOPS_STORE__MIN_FREE_MB": "8"}
    corpus, store = tmp_path / "corpus", small_disk / "store"
    args = ["reindex", "--json", "--source", str(corpus), "--store", str(store), "--alias", "kb"]
    write_notes(corpus, 4)
    assert run_cli(*args, env=env).returncode == 0
    first = snapshot(store, "kb")
    port = free_port()
    server = subprocess.Popen(RAGOPS + ["serve", "--store", str(store), "--alias", "kb", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        filler = small_disk / "filler"
        # The disk filled to the last block root may use (disk_usage().free leaves out the blocks ext4 reserves
        # for root), then 64 KB given back: a reader's snapshot copies are sparse now, and a 40-note build
        # fitted in the 3 MB (plus the reserve) left before.
        fd, written = os.open(filler, os.O_WRONLY | os.O_CREAT), 0
        try:
            while True:
                written += os.write(fd, b"\0" * 65536)
        except OSError:
            os.ftruncate(fd, max(written - 65536, 0))
            os.fsync(fd)
        finally:
            os.close(fd)
        write_notes(corpus, 40)
        for min_free in ("8", "0"):  # the check refuses; without it, the first write that cannot land fails
            full = run_cli(*args, env={**env, "RAGOPS_STORE__MIN_FREE_MB": min_free})
            output = full.stdout + full.stderr
            assert full.returncode == 4 and "Traceback" not in output, output[-3000:]
            assert "disk is full" in output or "min_free_mb" in output, output[-3000:]
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": "undo a promotion", "k": 1},
                                timeout=30)
            assert answer.status_code == 200 and answer.json()["hits"]
        filler.unlink()
        assert_same_index(snapshot(store, "kb"), first)
        assert not damaged_complete_builds(store, "kb")
    finally:
        server.terminate()
        server.wait(timeout=30)
    rerun = run_cli(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["promoted"] and summary["counts"]["documents_indexed"] == 40 and not summary["failures"]
    assert husks_and_orphans(store, "kb") == ([], [], 0)  # the stopped builds were cleaned
