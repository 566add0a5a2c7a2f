"""``drift.query_log_max_age`` decides how long logged queries are kept: the query service, and a Retriever
opened with ``Retriever.from_settings(settings, log_queries=True)``, prune rows older than it as they log.

The service pruned at a hard-coded 30 days whatever the setting said. Real components: a build of a small
corpus on the embedded store, `ragops serve` on 127.0.0.1, and the query log read back from the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from rag.config import Settings
from rag.models import utc_now
from rag.serving import Retriever
from rag.serving.querylog import QueryLog
from rag.store import open_store
from testkit.helpers import free_port, stop, wait_ready, write_notes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

RAGOPS = str(Path(sys.executable).parent / "ragops")
ALIAS = "kb"
MAX_AGE = "1h"
OLD, NEWER = 5, 4  # rows logged 2 hours ago (past the max age, well within 30 days) and 10 minutes ago


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ragops.yaml whose alias has one build, and whose query log keeps queries for ``MAX_AGE``."""
    from flows.reindex import reindex

    root = tmp_path_factory.mktemp("query-log-age")
    write_notes(root / "corpus", 2)
    config = root / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": ALIAS, "sources": [{"path": str(root / "corpus"), "name": "c"}],
        "store": {"location": str(root / "store")}, "drift": {"query_log_max_age": MAX_AGE},
    }))
    reindex(config=str(config))
    return config


def _seed(settings: Settings, now: datetime) -> None:
    """Rows in a fresh query log: ``OLD`` of 2 hours ago and ``NEWER`` of 10 minutes ago."""
    with open_store(settings.store, create=False) as store:
        model = store.read_manifest(store.alias_target(ALIAS)).model
        query_log = QueryLog(store, ALIAS, model)
        store.delete_rows(query_log.table, [p.payload["id"] for p in store.scan_rows(query_log.table)])
        vectors = np.random.default_rng(7).normal(size=(OLD + NEWER, model.dimension)).astype(np.float32)
        query_log.record(vectors[:OLD], at=now - timedelta(hours=2))
        query_log.record(vectors[OLD:], at=now - timedelta(minutes=10))
        assert len(query_log.read()) == OLD + NEWER


def _logged(settings: Settings, now: datetime) -> tuple[int, int]:
    """Rows logged before ``now`` less the max age, and since then."""
    with open_store(settings.store, create=False) as store:
        query_log = QueryLog(store, ALIAS, store.read_manifest(store.alias_target(ALIAS)).model)
        cutoff = now - settings.drift.query_log_max_age
        return len(query_log.read(until=cutoff)), len(query_log.read(since=cutoff))


def test_the_query_service_prunes_the_query_log_at_the_configured_max_age(built: Path, tmp_path: Path) -> None:
    settings = Settings.load(built)
    now = utc_now()
    _seed(settings, now)
    port = free_port()
    with open(tmp_path / "serve.log", "w") as sink:
        server = subprocess.Popen([RAGOPS, "serve", "--config", str(built), "--port", str(port)],
                                  env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")},
                                  stdout=subprocess.DEVNULL, stderr=sink)
    try:
        url = wait_ready(port, server, timeout=300)
        answer = httpx.post(f"{url}/v1/search", json={"query": "how do I undo a bad promotion?", "k": 2}, timeout=60)
        assert answer.status_code == 200, answer.text
    finally:
        stop(server)  # a clean stop writes what the query log's writer holds
    assert _logged(settings, now) == (0, NEWER + 1), (tmp_path / "serve.log").read_text()[-2000:]


def test_a_retriever_from_the_settings_prunes_its_query_log_at_the_configured_max_age(built: Path) -> None:
    settings = Settings.load(built)
    now = utc_now()
    _seed(settings, now)
    with Retriever.from_settings(settings, log_queries=True, follow_every=0) as retriever:
        assert retriever.search("how do I undo a bad promotion?", k=2)
    assert _logged(settings, now) == (0, NEWER + 1)
