"""kill -9 in the middle of a real `ragops reindex` process: the live alias and earlier builds survive,
and the next run converges to what a clean run builds without re-embedding what was finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.store import IndexStore
from tests.conftest import DEMO_CORPUS
from tests.helpers import assert_same_index, points_of, snapshot

pytestmark = pytest.mark.slow

RAGOPS = [sys.executable, "-m", "ragops"]


def _write_corpus(folder: Path, count: int) -> None:
    """Distinct short Markdown documents built from the demo texts (real prose, several chunks each)."""
    texts = [p.read_text() for p in sorted(DEMO_CORPUS.glob("*.md")) + sorted(DEMO_CORPUS.glob("*.txt"))]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = "\n\n".join(texts[(n + k) % len(texts)] for k in range(2))
        (folder / f"note-{n:03d}.md").write_text(f"# Note {n}\n\nThis is note number {n} of the series.\n\n{body}\n")


def _kill_when(args: list[str], env: dict, marker: str) -> str:
    """Start a reindex, SIGKILL it as soon as stderr shows ``marker``; returns what it logged."""
    # Its own session, killed as a group: the run and the ephemeral Prefect server it started die together
    # (a server left behind would outlive the test).
    process = subprocess.Popen(RAGOPS + args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


@pytest.mark.usefixtures("prefect_harness")
def test_killed_run_then_rerun_equals_a_clean_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.reindex import reindex

    monkeypatch.setenv("RAGOPS_PIPELINE__BATCH_DOCUMENTS", "3")
    monkeypatch.setenv("RAGOPS_CHUNKING__MAX_TOKENS", "64")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    corpus, store = tmp_path / "corpus", tmp_path / "store"
    _write_corpus(corpus, 6)
    first = reindex(sources=[str(corpus)], store=str(store), alias="kb")
    _write_corpus(corpus, 24)  # 18 new documents: six batches of work

    # A real process, killed with SIGKILL once its second batch of work has started.
    _kill_when(["reindex", "--source", str(corpus), "--store", str(store), "--alias", "kb"], env, "batch 1/")

    with IndexStore.open(StoreSettings(location=str(store))) as opened:  # the lock died with the process
        assert opened.alias_target("kb") == first["collection"]
        killed = [b for b in opened.list_builds("kb") if b != first["collection"]]
        assert len(killed) == 1 and opened.read_manifest(killed[0]).state == "building"
        assert opened.count(first["collection"]) == first["counts"]["chunks"]
    assert_same_index(snapshot(store, "kb"), points_of(store, first["collection"]))

    rerun = reindex(sources=[str(corpus)], store=str(store), alias="kb")
    assert rerun["promoted"] and rerun["counts"]["documents_new"] == 18
    new_chunks = rerun["counts"]["chunks"] - first["counts"]["chunks"]
    assert rerun["counts"]["chunks_embedded"] < new_chunks  # what the killed run embedded was kept

    clean_store = tmp_path / "clean"
    reindex(sources=[str(corpus)], store=str(clean_store), alias="kb")
    assert_same_index(snapshot(store, "kb"), snapshot(clean_store, "kb"))
