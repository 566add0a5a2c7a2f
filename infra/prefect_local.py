"""A real Prefect server and process worker on 127.0.0.1, for tests and scripts (not for production:
see infra/compose and infra/kubernetes for that).

    with local_prefect(tmp_dir) as prefect:            # server up, ragops-process pool, deployments registered
        with prefect.worker(env={"RAGOPS_CONFIG": "..."}):
            ...                                         # run_deployment(...) against prefect.api_url

Every process starts in its own session and is stopped (SIGINT, then SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "ragops-process"


@dataclass
class LocalPrefect:
    """A running server: its API URL, its PREFECT_HOME and where its logs go."""

    api_url: str
    home: Path
    logs: Path

    def env(self, **extra: str) -> dict[str, str]:
        """An environment that talks to this server only (no profile or API inherited)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api_url, PREFECT_CLI_PROMPT="false",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PWD=str(ROOT), COLUMNS="200",
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        env.update(extra)
        return env

    def cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` from the repository root against this server; raise on failure."""
        # {{ $PWD }} in prefect.yaml reads the PWD variable, which cwd= alone does not set.
        result = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=self.env(**extra_env),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def deploy(self) -> None:
        """Create the process work pool and register every deployment of prefect.yaml."""
        self.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        self.cli("--no-prompt", "deploy", "--all")

    @contextmanager
    def worker(self, **extra_env: str) -> Iterator[subprocess.Popen]:
        """A process worker on the ragops pool, polling every second, for the ``with`` block."""
        env = self.env(PREFECT_WORKER_QUERY_SECONDS="1", **extra_env)
        with _started([str(BIN / "prefect"), "worker", "start", "--pool", POOL], env, self.logs / "worker.log") as proc:
            yield proc


@contextmanager
def local_prefect(folder: Path, *, scheduler: bool = False, timeout: float = 120) -> Iterator[LocalPrefect]:
    """Start ``prefect server`` on a free 127.0.0.1 port with its own PREFECT_HOME under ``folder``.

    Args:
        scheduler: run the scheduler service (cron and interval runs are then really created).
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    prefect = LocalPrefect(api_url=f"http://127.0.0.1:{port}/api", home=folder / "home", logs=folder)
    env = prefect.env(PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=str(scheduler).lower())
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _started(command, env, folder / "server.log") as proc:
        deadline = time.monotonic() + timeout
        while not _healthy(prefect.api_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start; see {folder / 'server.log'}")
            time.sleep(0.3)
        yield prefect


@contextmanager
def _started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as output:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # children (flow runs of a worker) may outlive their parent in the same session
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _healthy(api_url: str) -> bool:
    try:
        with urlopen(f"{api_url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
