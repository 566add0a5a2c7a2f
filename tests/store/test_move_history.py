"""The history rollback and retention rely on, on the embedded store: every alias move has its promotion
record and its audit entry, written in the move's own catalog transaction, and every retention delete its
audit entry in the deletion's. Racing processes, real kill -9s and a store that fails while recording.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import AliasConflictError, StoreError, VersionError
from rag.failpoints import KILL_AT
from rag.index import audit, versions
from rag.store import IndexStore, open_store
from rag.store.names import collection_name, version_of
from testkit.builds import complete_build
from testkit.helpers import RAGOPS
from testkit.paths import ROOT

ROUNDS = 50
MOVES = ("promotion", "forced_promotion", "rollback")
BEFORE, RACED, LIVE = (collection_name("kb", v) for v in ("20260101-000000", "20260102-000000", "20260103-000000"))


def _moves(store_path: Path) -> list[tuple[str | None, str]]:
    """(previous, target) of every move of alias kb, oldest first, as the catalog logged them."""
    with sqlite3.connect(store_path / "catalog.sqlite") as db:
        return list(db.execute("SELECT previous, target FROM alias_moves WHERE alias = 'kb' ORDER BY id"))


def _check_history(store: IndexStore, store_path: Path) -> None:
    """Every move has its promotion record and its audit entry; the rollback target is the build the
    live one replaced, and retention keeps it."""
    moves = _moves(store_path)
    for build in store.list_builds("kb"):
        shown = next(v for v in versions.list_versions(store, "kb") if v.collection == build).manifest
        recorded = [e.replaced for e in shown.promotions]
        assert recorded == [previous for previous, target in moves if target == build], build
    trail = [(e.details["replaced"], e.build) for e in audit.read_trail(store, "kb") if e.kind in MOVES]
    assert trail == moves
    live = store.alias_target("kb")
    replaced = moves[-1][0]
    assert live == moves[-1][1]
    assert next(v for v in versions.list_versions(store, "kb") if v.live).manifest.replaced == replaced
    versions.apply_retention(store, "kb", keep=2)
    assert replaced in store.list_builds("kb")


def _racer(store_path: str, role: str, rounds: int, start, end, outcomes) -> None:
    """One racing process: at each round, `ragops promote` of the raced build or `ragops rollback`."""
    with open_store(StoreSettings(location=store_path)) as store:
        for _ in range(rounds):
            start.wait()
            try:
                if role == "promote":
                    versions.promote_version(store, "kb", version_of(RACED), force=True, reason="racing")
                else:
                    versions.rollback(store, "kb")
                outcomes.put((role, "moved"))
            except (AliasConflictError, VersionError) as exc:  # lost the race, or nothing left to do
                outcomes.put((role, type(exc).__name__))
            end.wait()


def test_racing_promote_and_rollback_never_lose_a_move_s_record(store_path: Path) -> None:
    """`promote X` against `rollback` (whose target is X too), 50 rounds, in two processes: one wins each
    round, and the winner's record survives the loser (the loser once wrote back its stale copy of X's
    manifest, and rollback then went to the build before last)."""
    with open_store(StoreSettings(location=str(store_path))) as store:
        for build in (BEFORE, RACED, LIVE):
            complete_build(store, "kb", version_of(build))
        versions.promote(store, "kb", BEFORE, expected=None, by="reindex", reason="first")
        versions.promote(store, "kb", RACED, expected=BEFORE, by="reindex", reason="raced")
        versions.promote(store, "kb", LIVE, expected=RACED, by="reindex", reason="live")  # it replaced RACED

    context = multiprocessing.get_context("spawn")
    start, end, outcomes = context.Barrier(3), context.Barrier(3), context.Queue()
    racers = [context.Process(target=_racer, args=(str(store_path), role, ROUNDS, start, end, outcomes))
              for role in ("promote", "rollback")]
    for racer in racers:
        racer.start()
    won = {"promote": 0, "rollback": 0}
    try:
        with open_store(StoreSettings(location=str(store_path))) as store:
            for _ in range(ROUNDS):
                start.wait(timeout=120)
                end.wait(timeout=120)
                for _ in racers:
                    role, outcome = outcomes.get(timeout=10)
                    won[role] += outcome == "moved"
                _check_history(store, store_path)
                if store.alias_target("kb") != LIVE:  # back to: LIVE live, having replaced RACED
                    versions.promote(store, "kb", LIVE, expected=store.alias_target("kb"), by="reindex",
                                     reason="next round")
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    assert won["promote"] + won["rollback"] >= ROUNDS  # every round, somebody moved it


def _two_builds(store_path: Path) -> tuple[str, str]:
    with open_store(StoreSettings(location=str(store_path))) as store:
        a = complete_build(store, "kb", "20260101-000000")
        b = complete_build(store, "kb", "20260102-000000")
        versions.promote(store, "kb", a, expected=None, by="reindex", reason="a")
        versions.promote(store, "kb", b, expected=a, by="reindex", reason="b")
    return a, b


def _env(tmp_path: Path, kill_at: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect"), KILL_AT: kill_at}


def test_a_rollback_killed_right_after_its_move_has_its_audit_entry(tmp_path: Path, store_path: Path) -> None:
    a, b = _two_builds(store_path)
    killed = subprocess.run(RAGOPS + ["rollback", "--store", str(store_path), "--alias", "kb"], capture_output=True,
                            text=True, env=_env(tmp_path, "promote"), timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.alias_target("kb") == a
        trail = [(e.kind, e.build, e.details["replaced"]) for e in audit.read_trail(store, "kb") if e.kind in MOVES]
        assert trail == [("promotion", a, None), ("promotion", b, a), ("rollback", a, b)]
        assert [e.replaced for e in store.read_manifest(a).promotions] == [None, b]


RETENTION = """
import sys
from rag.index import versions
from rag.config import StoreSettings
from rag.store import open_store
with open_store(StoreSettings(location=sys.argv[1])) as store:
    versions.apply_retention(store, "kb", keep=2)
"""


def test_a_retention_killed_right_after_a_deletion_has_its_audit_entry(tmp_path: Path, store_path: Path) -> None:
    a, b = _two_builds(store_path)
    with open_store(StoreSettings(location=str(store_path))) as store:
        old = complete_build(store, "kb", "20251231-000000")  # older than both: past retention
    killed = subprocess.run([sys.executable, "-c", RETENTION, str(store_path)], capture_output=True, text=True,
                            env=_env(tmp_path, "deleted"), timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with open_store(StoreSettings(location=str(store_path))) as store:
        assert store.list_builds("kb") == [a, b]
        deletions = [e.build for e in audit.read_trail(store, "kb") if e.kind == "retention_delete"]
    assert deletions == [old]


def _failing_audit(store_path: Path) -> None:
    """Make every write to the audit table fail inside the real catalog, as a store error would."""
    with sqlite3.connect(store_path / "catalog.sqlite") as db:
        db.execute("CREATE TRIGGER no_audit BEFORE INSERT ON rows WHEN NEW.tbl LIKE '_ragops_audit__%' "
                   "BEGIN SELECT RAISE(ABORT, 'the audit table cannot be written'); END")


def test_a_move_or_a_deletion_that_cannot_be_recorded_does_not_happen(store_path: Path) -> None:
    a, b = _two_builds(store_path)
    with open_store(StoreSettings(location=str(store_path))) as store:
        old = complete_build(store, "kb", "20251231-000000")
    _failing_audit(store_path)
    with open_store(StoreSettings(location=str(store_path))) as store:
        with pytest.raises(StoreError, match="the audit table cannot be written"):
            versions.rollback(store, "kb")
        assert store.alias_target("kb") == b and [e.replaced for e in store.read_manifest(a).promotions] == [None]
        with pytest.raises(StoreError, match="the audit table cannot be written"):
            versions.apply_retention(store, "kb", keep=2)
        assert old in store.list_builds("kb")  # still listed: a later retention deletes (and records) it
    assert _moves(store_path) == [(None, a), (a, b)]
