"""A pinned version answers only while its build is kept: once retention deletes it, every process that
pinned it answers 404 `unknown_version` (docs/serving.md), at once, and lets go of its snapshot.

Real components: two builds of a small corpus on the embedded store, two `ragops serve` processes and two
in-process Retrievers that pinned the older build, and a third reindex whose retention deletes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from rag.errors import VersionError
from rag.serving import Retriever
from rag.store.names import collection_name
from testkit.helpers import free_port, service_error, stop, wait_ready, write_notes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

RAGOPS = str(Path(sys.executable).parent / "ragops")
ALIAS = "kb"
QUESTION = "how do I undo a bad promotion?"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str, str]:
    """(config, corpus, store, older build's version, live build's version), retention 2."""
    from flows.reindex import reindex

    root = tmp_path_factory.mktemp("pinned")
    corpus, store = root / "corpus", root / "store"
    write_notes(corpus, 3)
    config = root / "ragops.yaml"
    config.write_text(yaml.safe_dump({"alias": ALIAS, "retention": 2, "sources": [{"path": str(corpus), "name": "c"}],
                                      "store": {"location": str(store)}, "serve": {"follow_every": 0.5}}))
    first = reindex(config=str(config))["version"]
    (corpus / "note-002.md").write_text("# Note 2\n\nRollback: the alias goes back.\n")
    second = reindex(config=str(config))["version"]
    return config, corpus, store, first, second


def _serve(config: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as sink:  # a file, not a pipe nobody reads: the server's log could fill a pipe
        return subprocess.Popen([RAGOPS, "serve", "--config", str(config), "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=sink)


def _pinned(url: str, version: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": QUESTION, "k": 2, "version": version}, timeout=60)


def _snapshots(store: Path, collection: str) -> list[Path]:
    """Every reader's snapshot of ``collection`` in the store (each process, each open store, has its own)."""
    return sorted((store / "readers").glob(f"*/{collection}"))


def test_a_deleted_pinned_build_answers_404_in_every_process_that_pinned_it(two_builds, tmp_path: Path) -> None:
    from flows.reindex import reindex

    config, corpus, store, first, second = two_builds
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    ports = [free_port(), free_port()]
    servers = [_serve(config, port, env, tmp_path / f"serve-{port}.log") for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    # Asked once after the deletion (follows nothing: only the check at each use can notice) ...
    asked = Retriever(alias=ALIAS, store=str(store), follow_every=0)
    # ... and never asked again (its follower must let go of the deleted build's snapshot by itself).
    idle = Retriever(alias=ALIAS, store=str(store), follow_every=0.5)
    try:
        for port, url, server in zip(ports, urls, servers):
            wait_ready(port, server, timeout=300)
            answer = _pinned(url, first)
            assert answer.status_code == 200 and answer.json()["version"] == first, answer.text
        for retriever in (asked, idle):
            assert {h.version for h in retriever.answer([QUESTION], 2, version=first).hits[0]} == {first}
        assert len(_snapshots(store, collection_name(ALIAS, first))) >= 4  # every process holds its own

        (corpus / "note-001.md").write_text("# Note 1\n\nRetention keeps the newest builds.\n")
        third = reindex(config=str(config))
        assert third["promoted"] and collection_name(ALIAS, first) in third["deleted"], third

        # At once, no waiting for a follow interval: the very next pinned request is refused.
        for url in urls:
            assert first in service_error(_pinned(url, first), 404, "unknown_version")
            kept = _pinned(url, second)  # the build the live one replaced is kept, and still answers
            assert kept.status_code == 200 and kept.json()["version"] == second, kept.text
        with pytest.raises(VersionError, match=first):
            asked.answer([QUESTION], 2, version=first)

        deadline = time.monotonic() + 60
        while _snapshots(store, collection_name(ALIAS, first)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _snapshots(store, collection_name(ALIAS, first)) == []  # no process keeps its files
        with pytest.raises(VersionError, match=first):
            idle.answer([QUESTION], 2, version=first)
    finally:
        asked.close()
        idle.close()
        for server in servers:
            stop(server)
