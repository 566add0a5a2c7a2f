"""kill -9 a real `ragops reindex` at every stage, rerunning it each time as a user does: the CLI, the same
Prefect home, the same store. Every rerun starts at once (no lock left behind), the live alias is never
damaged, and the end is the index a clean run builds, with no leftovers of the killed runs. Then a
`ragops rollback` killed inside its alias move.

The kills are real SIGKILLs that the process sends itself at named points (rag/failpoints.py), so each
lands exactly in its stage: listing, parse, right after embedding, write, after the writes, after the
evaluation, inside promotion, inside retention.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.failpoints import KILL_AT
from rag.store import open_store
from rag.store.locks import AliasLock
from testkit.helpers import (
    RAGOPS,
    STARTS_WITHIN,
    assert_same_index,
    damaged_complete_builds,
    husks_and_orphans,
    points_of,
    run_reindex,
    snapshot,
    write_notes,
)

pytestmark = [pytest.mark.slow, pytest.mark.long]


@pytest.mark.usefixtures("prefect_harness")
def test_killed_at_every_stage_each_rerun_starts_at_once_and_converges_to_a_clean_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.reindex import reindex

    for name, value in {"RAGOPS_PIPELINE__BATCH_DOCUMENTS": "3", "RAGOPS_CHUNKING__MAX_TOKENS": "64",
                        "RAGOPS_RETENTION": "2", "RAGOPS_GATE__MAX_DROP": "{}"}.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    corpus, store = tmp_path / "corpus", tmp_path / "store"
    golden = tmp_path / "golden.yaml"  # so that runs evaluate (the kill after evaluating needs one)
    golden.write_text('{"queries": [{"id": "undo", "query": "How do I undo a bad promotion?", '
                      '"relevant": ["corpus/note-000.md"]}]}')
    args = ["--source", str(corpus), "--store", str(store), "--alias", "kb", "--golden", str(golden)]
    lock = AliasLock(StoreSettings(location=str(store)), "kb")

    write_notes(corpus, 4)
    reindex(sources=[str(corpus)], store=str(store), alias="kb")  # the live build the kills must not touch
    first = snapshot(store, "kb")
    write_notes(corpus, 13)  # 9 new documents: three batches of work

    # The build's stages: the live build is never touched, nor any complete build damaged.
    for stage in ("listing", "parse@4", "embed@2", "write@2", "finish", "evaluate"):
        code, log, holding = run_reindex(args, env, kill_at=stage)
        assert code == -signal.SIGKILL, f"{stage}: {log[-3000:]}"
        assert holding < STARTS_WITHIN and "waiting since" not in log, f"{stage}: {log[-3000:]}"
        assert lock.current() is None  # the dead run holds nothing
        assert_same_index(snapshot(store, "kb"), first)
        assert not damaged_complete_builds(store, "kb"), stage

    # Inside promotion: the alias moved, its record not yet confirmed. The build is live and whole.
    code, log, holding = run_reindex(args, env, kill_at="promote")
    assert code == -signal.SIGKILL and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]
    promoted = snapshot(store, "kb")
    assert set(promoted) != set(first)

    # Inside retention (which now has husks of the killed builds to clean), after promoting a new build.
    write_notes(corpus, 16)
    code, log, holding = run_reindex(args, env, kill_at="retention")
    assert code == -signal.SIGKILL and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]

    code, log, holding = run_reindex(args, env)
    assert code == 0 and holding < STARTS_WITHIN and "waiting since" not in log, log[-3000:]

    clean_store = tmp_path / "clean"
    reindex(sources=[str(corpus)], store=str(clean_store), alias="kb")
    assert_same_index(snapshot(store, "kb"), snapshot(clean_store, "kb"))
    husks, orphans, journal = husks_and_orphans(store, "kb")
    assert (husks, orphans, journal) == ([], [], 0)
    with open_store(StoreSettings(location=str(store))) as opened:
        builds = opened.list_builds("kb")
        live = opened.alias_target("kb")
        manifest = opened.read_manifest(live)
    assert len(builds) <= 2 and live in builds
    assert manifest.replaced in builds  # rollback still has somewhere to go
    assert_same_index(points_of(store, manifest.replaced), promoted)  # the build the promote-kill made live

    # A rollback killed right after the alias moved (with its records, in the move's transaction): the
    # alias is on the previous build, whole; a second rollback goes back again, and no record is pending.
    killed = subprocess.run(RAGOPS + ["rollback", "--store", str(store), "--alias", "kb"], capture_output=True,
                            text=True, env={**env, KILL_AT: "promote"}, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_same_index(snapshot(store, "kb"), points_of(store, manifest.replaced))
    assert not damaged_complete_builds(store, "kb")
    again = subprocess.run(RAGOPS + ["rollback", "--store", str(store), "--alias", "kb", "--json"],
                           capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    with open_store(StoreSettings(location=str(store))) as opened:
        assert opened.alias_target("kb") == live
        records = [p for b in opened.list_builds("kb") for p in opened.read_manifest(b).promotions]
    assert records and not [p for p in records if p.pending]
