"""kill -9 a real `ragops migrate` inside its copy, after it, and between its two renames: every command then
refuses the store in one line naming `ragops migrate` (none opens a store that looks empty, none builds in
it), each rerun goes on from where the kill left it, and the end is the store a migration without kills
makes. A store an earlier release's killed migration left half made is refused, never deleted; a build
made after a migration survives a rerun; and a migration waits for a run holding one of the aliases.

The kills are real SIGKILLs the process sends itself at named points (rag/failpoints.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.failpoints import KILL_AT
from rag.store import is_local_mode, migration_folders, open_store
from rag.store.locks import AliasLock
from testkit.helpers import RAGOPS, assert_same_index, run_cli, write_notes

pytestmark = [pytest.mark.slow, pytest.mark.long]
SMALL = {"RAGOPS_CHUNKING__MAX_TOKENS": "64", "RAGOPS_PIPELINE__BATCH_DOCUMENTS": "3"}


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> Path:
    """A store the previous release made (qdrant-client's local mode): two builds of alias kb."""
    from flows.reindex import reindex

    work = tmp_path_factory.mktemp("old")
    corpus, store = work / "notes", work / "store"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SMALL, "RAGOPS_STORE__ENGINE": "qdrant"}.items():
            patch.setenv(name, value)
        write_notes(corpus, 4)
        reindex(sources=[str(corpus)], store=str(store), alias="kb")
        write_notes(corpus, 6)
        reindex(sources=[str(corpus)], store=str(store), alias="kb")
    assert is_local_mode(store)
    return store


def _copy_of(old_store: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the old store, with the notes it was built from, in this test's folder."""
    shutil.copytree(old_store.parent / "notes", tmp_path / "notes")
    shutil.copytree(old_store, tmp_path / "store")
    return tmp_path / "store", tmp_path / "notes"


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAGOPS_STORE__ENGINE"}
    return {**env, **SMALL, "PREFECT_HOME": str(tmp_path / "prefect"), **extra}


def _everything(location: Path, engine: str) -> dict:
    """Aliases, builds with their manifests, records and points (ids, payloads, vectors)."""
    with open_store(StoreSettings(location=str(location), engine=engine)) as store:
        builds = store.list_builds("kb")
        return {
            "live": store.alias_target("kb"),
            "manifests": {b: store.read_manifest(b).model_dump(mode="json") for b in builds},
            "records": {b: store.read_records(b) for b in builds},
            "points": {b: {p.id: (p.payload, p.vector) for p in store.scan_rows(b, vectors=True)} for b in builds},
        }


def _assert_same_store(after: dict, before: dict) -> None:
    assert after["live"] == before["live"]
    assert after["manifests"] == before["manifests"] and after["records"] == before["records"]
    assert sorted(after["points"]) == sorted(before["points"])
    for build, points in before["points"].items():
        assert_same_index(after["points"][build], points)


def _assert_refused(done: subprocess.CompletedProcess, *must_say: str) -> None:
    """Exit code 2 and one line on stderr, saying what to do; no traceback, and not `ragops reindex`."""
    said = done.stderr.strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, done.stderr[-3000:]
    assert "Traceback" not in said and "ragops reindex" not in said, said
    for words in must_say:
        assert words in said, said


def test_a_killed_migrate_is_refused_by_every_command_and_each_rerun_goes_on_from_where_it_stopped(
    old_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.reindex import reindex

    store, corpus = _copy_of(old_store, tmp_path)
    env = _env(tmp_path)
    before = _everything(store, "qdrant")
    live = before["live"]
    side, backup = migration_folders(store)
    commands = [["status"], ["query", "undo a promotion"], ["reindex", "--source", str(corpus)], ["rollback"],
                ["promote", live.split("__", 1)[1]]]

    # Killed after its first build was copied, after the copy was whole, after the old store moved aside.
    for point in ("migrate-copy", "migrate-done", "migrate-moved"):
        killed = run_cli("migrate", "--store", str(store), env={**env, KILL_AT: point})
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stdout[-2000:]} {killed.stderr[-2000:]}"
        for command in commands:
            done = run_cli(*command, "--store", str(store), "--alias", "kb", env=env)
            _assert_refused(done, "half migrated", f"`ragops migrate --store {store}`")
        assert side.is_dir()
        old_engine = run_cli("status", "--store", str(store), "--alias", "kb", env={**env, "RAGOPS_STORE__ENGINE":
                                                                                    "qdrant"})
        _assert_refused(old_engine, "half migrated")
        # none of them made anything where the store is: it holds the old store, or nothing at all
        assert is_local_mode(store) if point != "migrate-moved" else not store.exists(), point

    rerun = run_cli("migrate", "--json", "--store", str(store), env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout)
    assert report["builds"] == {b: len(p) for b, p in before["points"].items()} and report["aliases"] == {"kb": live}
    assert not side.exists() and is_local_mode(backup)
    _assert_same_store(_everything(store, "edge"), before)
    assert _everything(backup, "qdrant")["points"].keys() == before["points"].keys()  # the old store kept whole

    # A build made after the migration: a rerun of migrate leaves it, and the alias, where they are.
    monkeypatch.delenv("RAGOPS_STORE__ENGINE", raising=False)
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    write_notes(corpus, 8)
    newer = reindex(sources=[str(corpus)], store=str(store), alias="kb")
    assert newer["promoted"] and newer["live"] != live
    made = _everything(store, "edge")
    again = run_cli("migrate", "--json", "--store", str(store), env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["already_done"], again.stderr[-3000:]
    _assert_same_store(_everything(store, "edge"), made)


def test_a_store_an_earlier_release_left_half_migrated_is_refused_and_never_deleted(
    old_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The earlier release renamed the old store aside and copied into the folder itself, its done row last.
    Killed in between, and a build then made in the folder (which every command opened), its rerun deleted
    the folder with that build. Here that state is made for real: the old store renamed aside, and at the
    folder an Edge store with no done row and a build of its own."""
    from flows.reindex import reindex

    store, corpus = _copy_of(old_store, tmp_path)
    env = _env(tmp_path)
    old = _everything(store, "qdrant")
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    half = tmp_path / "half"
    made = reindex(sources=[str(corpus)], store=str(half), alias="kb")
    assert made["promoted"]
    meanwhile = _everything(half, "edge")
    side, backup = migration_folders(store)
    store.rename(backup)
    half.rename(store)

    for command in (["status"], ["query", "undo a promotion"], ["migrate"]):
        done = run_cli(*command, "--store", str(store), "--alias", "kb", env=env)
        _assert_refused(done, "half migrated", f"Move {store} away", "builds may have been made in it")
    assert not side.exists() and is_local_mode(backup)

    kept = tmp_path / "kept"
    store.rename(kept)  # as the message says
    _assert_same_store(_everything(kept, "edge"), meanwhile)  # the build made meanwhile, whole
    done = run_cli("migrate", "--json", "--store", str(store), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_store(_everything(store, "edge"), old)


def test_migrate_waits_for_a_run_holding_an_alias_lock_and_touches_nothing_meanwhile(
    old_store: Path, tmp_path: Path
) -> None:
    store, _ = _copy_of(old_store, tmp_path)
    side, backup = migration_folders(store)
    with AliasLock(StoreSettings(location=str(store)), "kb").held(run="a reindex of kb"):
        migrating = subprocess.Popen(RAGOPS + ["migrate", "--store", str(store)], env=_env(tmp_path),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = migrating.stderr.readline()  # the first thing it says (or "" once it ended)
        assert "waiting since" in first and "a reindex of kb" in first, first + migrating.stderr.read()
        assert migrating.poll() is None and is_local_mode(store) and not side.exists() and not backup.exists()
    out, err = migrating.communicate(timeout=600)
    assert migrating.returncode == 0, err[-3000:]
    assert not side.exists() and is_local_mode(backup) and (store / "catalog.sqlite").exists()
