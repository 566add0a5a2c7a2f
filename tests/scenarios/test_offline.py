"""No network at run time: a full reindex, an eval, a drift check and a query service session, each as a
user runs it (the CLI, in processes of their own, with the Prefect API and the parsing child they
start), make no connection and no name lookup beyond this machine. testkit/socket_guard/ refuses and
records any attempt, in every one of those Python processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from testkit.helpers import free_port, wait_ready
from testkit.paths import DEMO_CORPUS, SOCKET_GUARD

pytestmark = pytest.mark.slow

DEMO = DEMO_CORPUS.parent


def _guarded_env(tmp_path: Path, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_API"))}
    env.update(PYTHONPATH=os.pathsep.join([str(SOCKET_GUARD), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               SOCKET_GUARD_LOG=str(log), PREFECT_HOME=str(tmp_path / "prefect"))
    return env


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _attempts(log: Path) -> list[dict]:
    return [r for r in _records(log) if r["what"] != "guarded"]


def test_the_guard_sees_an_outbound_attempt(tmp_path: Path) -> None:
    """The check below can fail: a connection to another machine is refused and recorded."""
    log = tmp_path / "sockets.jsonl"
    code = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    done = subprocess.run([sys.executable, "-c", code], env=_guarded_env(tmp_path, log), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "socket guard" in done.stderr
    assert [a["target"] for a in _attempts(log)] == ["('192.0.2.1', 80)"]


def test_reindex_eval_drift_and_serve_make_no_outbound_connection(tmp_path: Path) -> None:
    log = tmp_path / "sockets.jsonl"
    env = _guarded_env(tmp_path, log)
    shutil.copytree(DEMO / "corpus", tmp_path / "corpus")
    shutil.copy(DEMO / "golden.yaml", tmp_path / "golden.yaml")
    settings = yaml.safe_load((DEMO / "ragops.yaml").read_text())
    settings["store"]["location"] = "store"  # the demo's own store is outside its folder
    # Redaction too: Presidio's stock e-mail recognizer fetches the public suffix list at its first match.
    settings["sources"][0]["redact"] = {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}
    (tmp_path / "corpus" / "contacts.txt").write_text("Write to ops-team@example.org or call +1 415-555-0132.\n")
    (tmp_path / "ragops.yaml").write_text(yaml.safe_dump(settings))
    config = str(tmp_path / "ragops.yaml")

    for command in (["reindex"], ["eval"], ["drift"]):
        done = subprocess.run([sys.executable, "-m", "ragops", *command, "--config", config, "--json"], env=env,
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode in (0, 5), f"{command}: {done.stderr[-3000:]}"  # drift may report drift (5)
        if command == ["reindex"]:
            assert json.loads(done.stdout)["counts"]["redacted"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ragops", "serve", "--config", config, "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = wait_ready(port, server)
        answer = httpx.post(f"{url}/v1/search", json={"query": "How do I undo a bad promotion?", "k": 3}, timeout=30)
        assert answer.status_code == 200 and answer.json()["hits"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    guarded = " ".join(" ".join(r["argv"]) for r in _records(log) if r["what"] == "guarded")
    for process in ("reindex", "eval", "drift", "serve", "rag.ingest.sandbox", "uvicorn"):  # the CLI, parser, Prefect API
        assert process in guarded, f"no {process} process ran under the guard: {guarded}"
    attempts = _attempts(log)
    assert attempts == [], "\n".join(f"{a['what']} {a['target']} (pid {a['pid']}):\n{''.join(a['stack'])}"
                                     for a in attempts[:3])
