"""Scripted faults on the user's path (the CLI, one Prefect home, one store), beyond the kills of
tests/test_crash_safety.py: kill -9 while listing, right after embedding and after evaluating, and during
a rollback; S3 answering 503, 500 or nothing at all; the store's disk full. After each: the live alias
answers, no complete build is damaged, and a rerun converges to the index a clean run builds.
bench/faults.py runs the long loop (several kills per stage) and prints the figures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from rag.config import StoreSettings
from rag.store import IndexStore
from tests.faultproxy import FaultProxy, every_nth
from tests.helpers import (
    DEMO_CORPUS,
    RAGOPS,
    STARTS_WITHIN,
    assert_same_index,
    free_port,
    husks_and_orphans,
    run_reindex,
    snapshot,
    wait_ready,
    write_notes,
)

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict, kill_at: str | None = None) -> subprocess.CompletedProcess:
    from rag.failpoints import KILL_AT

    env = {**env, KILL_AT: kill_at} if kill_at else env
    return subprocess.run(RAGOPS + list(args), env=env, capture_output=True, text=True, timeout=600)


def _live_answers(store: Path, env: dict) -> bool:
    done = _cli("query", "--json", "--store", str(store), "--alias", "kb", "-k", "1", "how do I undo a promotion",
                env=env)
    return done.returncode == 0 and bool(json.loads(done.stdout)["hits"])


def _damaged_complete_builds(store: Path) -> list[str]:
    with IndexStore.open(StoreSettings(location=str(store))) as opened:
        return [b for b in opened.list_builds("kb")
                if opened.read_manifest(b).state == "complete" and opened.damage(b, deep=True)]


@pytest.mark.usefixtures("prefect_harness")
def test_kills_while_listing_embedding_evaluating_and_rolling_back(tmp_path: Path, monkeypatch) -> None:
    from flows.reindex import reindex

    for name, value in {"RAGOPS_PIPELINE__BATCH_DOCUMENTS": "4", "RAGOPS_CHUNKING__MAX_TOKENS": "64",
                        "RAGOPS_RETENTION": "3", "RAGOPS_GATE__MAX_DROP": "{}"}.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    corpus, store = tmp_path / "corpus", tmp_path / "store"
    args = ["--source", str(corpus), "--store", str(store), "--alias", "kb", "--golden",
            str(_golden(tmp_path))]
    write_notes(corpus, 4)
    reindex(sources=[str(corpus)], store=str(store), alias="kb", golden=str(_golden(tmp_path)))
    first = snapshot(store, "kb")
    write_notes(corpus, 9)

    for stage in ("listing", "embed@2", "evaluate"):
        code, log, holding = run_reindex(args, env, kill_at=stage)
        assert code == -signal.SIGKILL, f"{stage}: {log[-3000:]}"
        assert holding < STARTS_WITHIN, f"{stage}: {log[-3000:]}"
        assert_same_index(snapshot(store, "kb"), first)  # the live build is untouched, and reads
        assert not _damaged_complete_builds(store), stage

    code, log, _ = run_reindex(args, env)
    assert code == 0, log[-3000:]
    promoted = snapshot(store, "kb")
    clean = tmp_path / "clean"
    reindex(sources=[str(corpus)], store=str(clean), alias="kb")
    assert_same_index(promoted, snapshot(clean, "kb"))
    assert husks_and_orphans(store, "kb") == ([], [], 0)

    # A rollback killed after the alias moved, before its record was confirmed: the alias is on the
    # previous build, whole; a second rollback goes back again and settles the records.
    killed = _cli("rollback", "--store", str(store), "--alias", "kb", env=env, kill_at="promote")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_same_index(snapshot(store, "kb"), first)
    assert _live_answers(store, env) and not _damaged_complete_builds(store)
    again = _cli("rollback", "--store", str(store), "--alias", "kb", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_index(snapshot(store, "kb"), promoted)
    status = json.loads(_cli("status", "--json", "--store", str(store), "--alias", "kb", env=env).stdout)
    records = [p for v in status["versions"] if v["manifest"] for p in v["manifest"]["promotions"]]
    assert records and not [p for p in records if p["pending"]], records  # the killed move was settled


def _golden(folder: Path) -> Path:
    path = folder / "golden.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump({"queries": [
            {"id": "undo", "query": "How do I undo a bad promotion?", "relevant": ["corpus/note-000.md"]},
        ]}))
    return path


@pytest.mark.usefixtures("prefect_harness")
def test_s3_errors_and_timeouts_are_retried_and_the_build_is_the_clean_one(bucket, s3_endpoint: str,
                                                                           tmp_path: Path) -> None:
    """A build through a proxy that fails every 4th request (503 SlowDown, 500, no answer for longer
    than the read timeout), listing and fetching: same index as a build straight from the server."""
    client, name = bucket
    for path in sorted(DEMO_CORPUS.iterdir()):
        client.upload_file(str(path), name, "docs/" + path.name)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    with FaultProxy(s3_endpoint, every_nth(4)) as proxy:
        config = _s3_config(tmp_path / "faulty", proxy.endpoint, name)
        done = _cli("reindex", "--json", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["counts"]["documents_indexed"] == 6 and summary["failures"] == []
    assert all(count >= 1 for count in proxy.injected.values()), proxy.injected
    clean = _s3_config(tmp_path / "clean", s3_endpoint, name)
    assert _cli("reindex", "--json", "--config", str(clean), env=env).returncode == 0
    assert_same_index(snapshot(tmp_path / "faulty" / "store", "kb"), snapshot(tmp_path / "clean" / "store", "kb"))


def _s3_config(folder: Path, endpoint: str, bucket: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ragops.yaml"
    path.write_text(yaml.safe_dump({
        "alias": "kb", "store": {"location": str(folder / "store")}, "chunking": {"max_tokens": 96},
        "sources": [{"url": f"s3://{bucket}/docs/", "endpoint_url": endpoint, "name": "s3docs",
                     "read_timeout": 1, "max_attempts": 8}],
    }))
    return path


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 200 MB ext4 filesystem in a file, loop-mounted (root with mount rights only; skipped otherwise).
    Not tmpfs: there the engine's sparse memory-mapped files take their whole size at once."""
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("a size-limited filesystem needs root and mkfs.ext4")
    with image.open("wb") as out:
        out.truncate(200 * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    if made.returncode == 0:
        made = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a loop filesystem here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_build_with_a_clear_error_and_a_rerun_converges(small_disk: Path,
                                                                              tmp_path: Path) -> None:
    """The store's disk fills up: the run stops with one line naming it (whether the free-space check or
    the write itself notices), a serving process keeps answering from the live build, nothing is
    reported damaged, and once space is freed the rerun builds what a clean run builds."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "RAGOPS_CHUNKING__MAX_TOKENS": "64",
           "RAGOPS_STORE__MIN_FREE_MB": "8"}
    corpus, store = tmp_path / "corpus", small_disk / "store"
    args = ["reindex", "--json", "--source", str(corpus), "--store", str(store), "--alias", "kb"]
    write_notes(corpus, 4)
    assert _cli(*args, env=env).returncode == 0
    first = snapshot(store, "kb")
    port = free_port()
    server = subprocess.Popen(RAGOPS + ["serve", "--store", str(store), "--alias", "kb", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        filler = small_disk / "filler"
        with filler.open("wb") as out:
            out.write(b"\0" * max(shutil.disk_usage(small_disk).free - 3_000_000, 0))
        write_notes(corpus, 40)
        for min_free in ("8", "0"):  # the check refuses; without it, the first write that cannot land fails
            full = _cli(*args, env={**env, "RAGOPS_STORE__MIN_FREE_MB": min_free})
            output = full.stdout + full.stderr
            assert full.returncode == 4 and "Traceback" not in output, output[-3000:]
            assert "disk is full" in output or "min_free_mb" in output, output[-3000:]
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": "undo a promotion", "k": 1},
                                timeout=30)
            assert answer.status_code == 200 and answer.json()["hits"]
        filler.unlink()
        assert_same_index(snapshot(store, "kb"), first)
        assert not _damaged_complete_builds(store)
    finally:
        server.terminate()
        server.wait(timeout=30)
    rerun = _cli(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    clean = tmp_path / "clean"
    assert _cli("reindex", "--json", "--source", str(corpus), "--store", str(clean), "--alias", "kb",
                env=env).returncode == 0
    assert_same_index(snapshot(store, "kb"), snapshot(clean, "kb"))
    assert husks_and_orphans(store, "kb") == ([], [], 0)
