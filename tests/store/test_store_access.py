"""A store that cannot be used as it is says so in one line (or one JSON object) with what to do: a catalog
write-locked past the busy timeout, a read-only store, a catalog emptied to 0 bytes beside its builds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from rag.config import StoreSettings
from rag.index import versions
from rag.store import open_store
from rag.store.locks import AliasLock
from ragops.cli import app
from testkit.builds import complete_build

runner = CliRunner()


@pytest.fixture
def store(store_path: Path) -> Path:
    """A store with two builds, the second live, and the alias's lock file (a run held it once)."""
    with open_store(StoreSettings(location=str(store_path))) as opened:
        a = complete_build(opened, "kb", "20260101-000000")
        b = complete_build(opened, "kb", "20260102-000000")
        versions.promote(opened, "kb", a, expected=None, by="reindex", reason="a")
        versions.promote(opened, "kb", b, expected=a, by="reindex", reason="b")
    with AliasLock(StoreSettings(location=str(store_path)), "kb").held(run="a past run"):
        pass
    return store_path


def _json_error(args: list[str]) -> tuple[int, dict]:
    done = runner.invoke(app, [*args, "--alias", "kb", "--json"])
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    return done.exit_code, json.loads(done.stdout)["error"]


def test_a_catalog_locked_past_the_busy_timeout_is_a_store_error_with_json(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rag.store.catalog.BUSY_TIMEOUT_MS", 200)  # the real wait is 30 s
    holder = sqlite3.connect(store / "catalog.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write, never ending
    try:
        code, error = _json_error(["rollback", "--store", str(store)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 4 and error["kind"] == "store_locked"
    assert "stayed locked by another process's write" in error["message"] and "nothing was changed" in error["message"]
    with open_store(StoreSettings(location=str(store))) as opened:
        assert opened.alias_target("kb").endswith("20260102-000000")


@contextmanager
def _read_only_view(folder: Path, at: Path) -> Iterator[Path]:
    """``folder`` seen through a read-only bind mount at ``at`` (root ignores file modes, not a ro mount)."""
    at.mkdir()
    made = subprocess.run(["mount", "--bind", str(folder), str(at)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {made.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(at)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=False)  # lazily: an open file must not keep it


def test_a_read_only_store_is_refused_with_why_and_unlock_still_answers(store: Path, tmp_path: Path) -> None:
    with _read_only_view(store, tmp_path / "read-only") as view:
        for command in ("status", "rollback", "audit"):
            code, error = _json_error([command, "--store", str(view)])
            assert code == 4 and "is read-only here" in error["message"], command
            assert "copy the store to a writable folder" in error["message"]
        unlocked = runner.invoke(app, ["unlock", "--store", str(view), "--alias", "kb", "--json"])
    assert unlocked.exit_code == 0, unlocked.output
    assert json.loads(unlocked.stdout) == {"alias": "kb", "kind": "file", "freed": None}


def test_a_catalog_emptied_to_zero_bytes_is_damage_not_an_empty_store(store: Path) -> None:
    (store / "catalog.sqlite").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (store / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    for command in ("status", "rollback"):
        code, error = _json_error([command, "--store", str(store)])
        assert code == 4 and "is empty (0 bytes) while builds/ holds 2 build(s)" in error["message"], command
        assert "Restore catalog.sqlite" in error["message"]
    assert (store / "catalog.sqlite").stat().st_size == 0  # left as it was found, for whoever restores it
