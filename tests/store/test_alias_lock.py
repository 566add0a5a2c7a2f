"""The alias lock (rag/store/locks.py): a live holder makes others wait and names itself; a dead one never blocks.

Holders are real processes killed with SIGKILL; the lease (a server store's lock) runs through the same
qdrant-client API on an embedded store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from rag.config import StoreSettings
from rag.errors import LockHeld, LockTimeout
from rag.models import utc_now
from rag.store import open_store
from rag.store.locks import AliasLock, LockHolder
from testkit.paths import ROOT

RAGOPS_REINDEX = [sys.executable, "-m", "ragops", "reindex"]

HOLD = """
import sys, time
from rag.config import StoreSettings
from rag.store.locks import AliasLock
lock = AliasLock(StoreSettings(location=sys.argv[1]), "kb", kind=sys.argv[2], ttl=3, settle=0.2, poll=0.2)
with lock.held(run="holder-under-test"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(store: Path, kind: str) -> subprocess.Popen:
    """A real process holding the lock until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(store), kind], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.slow  # real holder processes and lock timeouts (2-3 s)
@pytest.mark.parametrize("kind", ["file", "lease"])
def test_a_live_holder_makes_the_next_run_wait_and_a_killed_one_frees_the_lock_at_once(tmp_path, kind) -> None:
    store = tmp_path / "store"
    lease_store = tmp_path / "leases"  # the lease lives in a store the holder opens only briefly
    where = lease_store if kind == "lease" else store
    holder = _holder(where, kind)
    lock = AliasLock(StoreSettings(location=str(where)), "kb", kind=kind, ttl=3, settle=0.2, poll=0.2)
    lines: list[str] = []
    try:
        with pytest.raises(LockTimeout) as refused:
            with lock.held(run="second", report=lines.append, timeout=1.5):
                pass
        assert "holder-under-test" in str(refused.value) and f"pid {holder.pid}" in str(refused.value)
        # The waiting run said what it waits for, since when, and how to free a stale lock.
        assert lines and "waiting since" in lines[0] and "ragops unlock --alias kb" in lines[0]
        assert f"pid {holder.pid}" in lines[0]
        assert lock.current().pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    started = time.monotonic()
    with lock.held(run="second", report=lines.append, timeout=10) as mine:
        assert lock.current().token == mine.token
    assert time.monotonic() - started < 5  # not a lease's expiry later: the dead pid is noticed at once
    assert lock.current() is None


def test_a_lease_of_another_host_is_taken_over_only_once_it_expired(tmp_path) -> None:
    settings = StoreSettings(location=str(tmp_path / "store"))
    lock = AliasLock(settings, "kb", kind="lease", ttl=3, settle=0.1, poll=0.1)
    elsewhere = LockHolder(token="t-other", alias="kb", run="flow run on worker-2", host="worker-2", boot_id="b",
                           pid=4242, pid_started="1", expires_at=utc_now() + timedelta(seconds=30))
    with open_store(settings) as store:
        store.write_lock("kb", elsewhere.model_dump(mode="json"))
    with pytest.raises(LockTimeout, match="worker-2"):
        with lock.held(timeout=0.5):
            pass
    with pytest.raises(LockHeld, match="--force"):
        lock.break_stale()

    expired = elsewhere.model_copy(update={"expires_at": utc_now() - timedelta(seconds=1)})
    with open_store(settings) as store:
        store.write_lock("kb", expired.model_dump(mode="json"))
    lines: list[str] = []
    with lock.held(report=lines.append, timeout=5):
        pass
    assert any("taking over the stale lock" in line and "worker-2" in line for line in lines)


@pytest.mark.slow  # sleeps past the lease's renewals (2.2 s)
def test_a_held_lease_is_renewed_and_released(tmp_path) -> None:
    settings = StoreSettings(location=str(tmp_path / "store"))
    lock = AliasLock(settings, "kb", kind="lease", ttl=1.5, settle=0.1, poll=0.1)
    with lock.held(run="renewing") as mine:
        first = lock.current().expires_at
        time.sleep(1.2)  # past ttl/3: renewed at least once
        assert lock.current().token == mine.token and lock.current().expires_at > first
        time.sleep(1.0)  # past the first expiry: still ours
        assert lock.current().token == mine.token
    with open_store(settings) as store:
        assert store.read_lock("kb") is None


@pytest.mark.slow
def test_ragops_unlock_names_a_live_holder_and_reports_a_free_lock(tmp_path) -> None:
    import json

    store = tmp_path / "store"
    holder = _holder(store, "file")
    command = [sys.executable, "-m", "ragops", "unlock", "--store", str(store), "--alias", "kb", "--json"]
    try:
        held = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert held.returncode == 3, held.stderr
        error = json.loads(held.stdout)["error"]
        assert error["kind"] == "lock_held" and f"kill {holder.pid}" in error["message"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    free = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert free.returncode == 0, free.stderr
    assert json.loads(free.stdout) == {"alias": "kb", "kind": "file", "freed": None}


@pytest.mark.slow
def test_a_waiting_reindex_stops_at_once_on_sigterm_and_leaves_no_process_behind(tmp_path, corpus) -> None:
    """Stopping a run that waits for its alias (systemd, Kubernetes, `kill`) takes seconds, prints no
    traceback, and stops the ephemeral Prefect server it started."""
    import threading

    store = tmp_path / "store"
    holder = _holder(store, "file")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    run = subprocess.Popen(RAGOPS_REINDEX + ["--source", str(corpus), "--store", str(store), "--alias", "kb"],
                           env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        seen: list[str] = []  # all of it, so that a run that ended instead of waiting says why
        for line in run.stderr:
            seen.append(line)
            if "waiting since" in line:
                break
        assert "waiting since" in seen[-1] and "held by holder-under-test" in seen[-1], "".join(seen)[-3000:]
        rest: list[str] = []
        threading.Thread(target=lambda: rest.extend(run.stderr), daemon=True).start()
        signalled = time.monotonic()
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        assert run.returncode == 128 + signal.SIGTERM and time.monotonic() - signalled < 30
        time.sleep(2)
        left = subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True, text=True).stdout.split()
        assert left == [], "the ephemeral Prefect server outlived its run"
        assert "Traceback" not in "".join(rest)
    finally:
        for process in (run, holder):
            if process.poll() is None:
                process.kill()
        holder.wait()
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow  # a real holder process and a real Prefect flow
def test_the_freshness_check_does_not_queue_behind_a_run_holding_the_lock(tmp_path, prefect_harness) -> None:
    """A staleness alarm must not wait for the build it watches (nor a run paused for approval)."""
    import threading

    import yaml

    from flows.freshness import freshness_check

    store, docs = tmp_path / "store", tmp_path / "docs"
    docs.mkdir()
    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({"alias": "kb", "store": {"location": str(store)},
                                      "sources": [{"path": str(docs), "name": "docs"}]}))
    with open_store(StoreSettings(location=str(store))):
        pass
    holder = _holder(store, "file")
    rows: list = []
    try:
        check = threading.Thread(target=lambda: rows.extend(freshness_check(config=str(config))), daemon=True)
        check.start()
        check.join(timeout=300)  # generous: a busy machine; without the fix it waits as long as the holder lives
        assert not check.is_alive(), "the freshness check waited for the alias lock"
        assert [row["source"] for row in rows] == ["docs"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
