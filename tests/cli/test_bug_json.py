"""A bug under ``--json``: one JSON object on stdout all the same, the traceback on stderr, exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rag.failpoints import FAIL_AT


def _dry_run(tmp_path: Path, *flags: str, fail_at: str | None) -> subprocess.CompletedProcess:
    """``ragops reindex --dry-run`` through the real console script, on a one-note folder; ``fail_at`` has
    the run raise a ``FailpointError`` (an exception no ragops code expects) when it lists the source."""
    notes = tmp_path / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "a.md").write_text("# Descaling\n\nCitric acid, then rinse twice.\n")
    env = {k: v for k, v in os.environ.items() if k != FAIL_AT}
    if fail_at:
        env[FAIL_AT] = fail_at
    script = str(Path(sys.executable).with_name("ragops"))
    return subprocess.run(
        [script, "reindex", "--dry-run", "--source", str(notes), "--store", str(tmp_path / "store"), *flags],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )


def test_a_bug_under_json_prints_one_error_object_and_its_traceback_on_stderr(tmp_path: Path) -> None:
    result = _dry_run(tmp_path, "--json", fail_at="listing")

    assert result.returncode == 1, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout  # exactly one JSON object
    error = json.loads(result.stdout)["error"]
    assert set(error) == {"kind", "message", "exit_code"}
    assert error["kind"] == "internal" and error["exit_code"] == 1
    assert "FailpointError: failpoint 'listing' reached" in error["message"]
    assert "traceback is on stderr" in error["message"]
    assert "Traceback (most recent call last)" in result.stderr
    assert "rag.failpoints.FailpointError: failpoint 'listing' reached" in result.stderr


def test_without_json_a_bug_keeps_its_traceback_and_exit_code(tmp_path: Path) -> None:
    result = _dry_run(tmp_path, fail_at="listing")

    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback (most recent call last)" in result.stderr
    assert "FailpointError: failpoint 'listing' reached" in result.stderr


def test_the_same_run_without_the_failpoint_succeeds(tmp_path: Path) -> None:
    """The failure above is the failpoint's doing, not the command line's."""
    result = _dry_run(tmp_path, "--json", fail_at=None)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["would_build"] is True
