"""kill -9 a real `ragops reindex` at five stages, rerunning it each time as a user does: the CLI, the same
Prefect home, the same store. Every rerun starts at once (no lock left behind), the live alias is never
damaged, and the end is the index a clean run builds, with no leftovers of the killed runs.

The kills are real SIGKILLs that the process sends itself at named points (rag/failpoints.py), so each
lands exactly in its stage: parse, write, after the writes, inside promotion, inside retention.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.failpoints import KILL_AT
from rag.locks import AliasLock
from rag.names import DOCS_SUFFIX, journal_table
from rag.store import IndexStore
from tests.conftest import DEMO_CORPUS
from tests.helpers import assert_same_index, points_of, snapshot

pytestmark = pytest.mark.slow

RAGOPS = [sys.executable, "-m", "ragops"]
#: a rerun must be holding its alias's lock within this many seconds of starting (imports and the
#: ephemeral Prefect server take ~10-20 s here; a lock left behind would make it wait forever)
STARTS_WITHIN = 120


def _write_corpus(folder: Path, count: int) -> None:
    """Distinct short Markdown documents built from the demo texts (real prose, several chunks each)."""
    texts = [p.read_text() for p in sorted(DEMO_CORPUS.glob("*.md")) + sorted(DEMO_CORPUS.glob("*.txt"))]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = "\n\n".join(texts[(n + k) % len(texts)] for k in range(2))
        (folder / f"note-{n:03d}.md").write_text(f"# Note {n}\n\nThis is note number {n} of the series.\n\n{body}\n")


def _reindex(args: list[str], env: dict, kill_at: str | None = None) -> tuple[int, str, float]:
    """One `ragops reindex` process; returns its exit code, its stderr, and when it held the lock."""
    env = {**env, KILL_AT: kill_at} if kill_at else env
    started = time.monotonic()
    # Its own session: once the run is dead, the ephemeral Prefect server it started is killed with its group.
    process = subprocess.Popen(RAGOPS + ["reindex", *args], env=env, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    lines, held_at = [], []

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            if not held_at and "holding the lock of alias" in line:
                held_at.append(time.monotonic() - started)

    # A reader thread: the orphaned Prefect server keeps stderr open after the run itself died.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process.wait(timeout=600)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    reader.join(timeout=30)
    return process.returncode, "".join(lines), held_at[0] if held_at else float("inf")


def _husks_and_orphans(store: Path, alias: str) -> tuple[list[str], list[str], int]:
    """Builds not complete/rejected, document tables without a build, and journal entries left."""
    with IndexStore.open(StoreSettings(location=str(store))) as opened:
        builds = opened.list_builds(alias)
        husks = [b for b in builds if opened.read_manifest(b).state not in ("complete", "rejected")]
        names = opened.collection_names()
        orphans = [n for n in names if n.startswith(alias + "__") and n.endswith(DOCS_SUFFIX)
                   and n[: -len(DOCS_SUFFIX)] not in names]
        journal = journal_table(alias)
        entries = opened.count(journal) if opened.exists(journal) else 0
    return husks, orphans, entries


@pytest.mark.usefixtures("prefect_harness")
def test_killed_at_every_stage_each_rerun_starts_at_once_and_converges_to_a_clean_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.reindex import reindex

    for name, value in {"RAGOPS_PIPELINE__BATCH_DOCUMENTS": "3", "RAGOPS_CHUNKING__MAX_TOKENS": "64",
                        "RAGOPS_RETENTION": "2"}.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    corpus, store = tmp_path / "corpus", tmp_path / "store"
    args = ["--source", str(corpus), "--store", str(store), "--alias", "kb"]
    lock = AliasLock(StoreSettings(location=str(store)), "kb")

    _write_corpus(corpus, 4)
    reindex(sources=[str(corpus)], store=str(store), alias="kb")  # the live build the kills must not touch
    first = snapshot(store, "kb")
    _write_corpus(corpus, 13)  # 9 new documents: three batches of work

    for stage in ("parse@4", "write@2", "finish"):  # the build's stages: the live build is never touched
        code, log, holding = _reindex(args, env, kill_at=stage)
        assert code == -signal.SIGKILL, f"{stage}: {log[-3000:]}"
        assert holding < STARTS_WITHIN and "waiting since" not in log, f"{stage}: {log[-3000:]}"
        assert lock.current() is None  # the dead run holds nothing
        assert_same_index(snapshot(store, "kb"), first)

    # Inside promotion: the alias moved, its record not yet confirmed. The build is live and whole.
    code, log, holding = _reindex(args, env, kill_at="promote")
    assert code == -signal.SIGKILL and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]
    promoted = snapshot(store, "kb")
    assert set(promoted) != set(first)

    # Inside retention (which now has husks of the killed builds to clean), after promoting a new build.
    _write_corpus(corpus, 16)
    code, log, holding = _reindex(args, env, kill_at="retention")
    assert code == -signal.SIGKILL and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]

    code, log, holding = _reindex(args, env)
    assert code == 0 and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]

    clean_store = tmp_path / "clean"
    reindex(sources=[str(corpus)], store=str(clean_store), alias="kb")
    assert_same_index(snapshot(store, "kb"), snapshot(clean_store, "kb"))
    husks, orphans, journal = _husks_and_orphans(store, "kb")
    assert (husks, orphans, journal) == ([], [], 0)
    with IndexStore.open(StoreSettings(location=str(store))) as opened:
        builds = opened.list_builds("kb")
        live = opened.alias_target("kb")
        manifest = opened.read_manifest(live)
    assert len(builds) <= 2 and live in builds
    assert manifest.replaced in builds  # rollback still has somewhere to go
    assert_same_index(points_of(store, manifest.replaced), promoted)  # the build the promote-kill made live
