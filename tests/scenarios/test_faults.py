"""S3 faults on the user's path (the CLI): the server answering 503 SlowDown, 500 or nothing at all, through
a proxy in front of a real S3 server. The kills are in tests/scenarios/test_crash_safety.py, the full disk in
tests/scenarios/test_disk_full.py; bench/faults.py runs the long loop and prints the figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from testkit.faultproxy import FaultProxy, every_nth
from testkit.helpers import assert_same_index, run_cli, snapshot
from testkit.paths import DEMO_CORPUS

pytestmark = [pytest.mark.slow, pytest.mark.long]


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
        done = run_cli("reindex", "--json", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["counts"]["documents_indexed"] == 6 and summary["failures"] == []
    assert all(count >= 1 for count in proxy.injected.values()), proxy.injected
    clean = _s3_config(tmp_path / "clean", s3_endpoint, name)
    assert run_cli("reindex", "--json", "--config", str(clean), env=env).returncode == 0
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
