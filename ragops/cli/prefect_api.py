"""Prefect's ephemeral API for a command that runs a flow in its own process, started early.

With no ``PREFECT_API_URL``, Prefect 3 starts its ephemeral API at the flow's first API call: it imports
``prefect.server.api.server`` into the command's process (~2 s, only to reach ``SubprocessASGIServer``),
then starts ``python -m uvicorn --factory prefect.server.api.server:create_app`` and waits for it to
answer (~3.5 s: a new interpreter importing the whole server, plus a no-op ``alembic upgrade head``).
Both happen after the command has done everything else, so the command waits for all of it.

``early_prefect_api`` starts that same subprocess, with the same command line and environment, when the
command starts. The command imports, checks its inputs and loads the model (which the flow's
``load-model`` step then takes, ``flows.runs.given``) while the server boots on the other core, and the
flow runs against it through ``PREFECT_API_URL`` (for this process and what it starts, for the length of
the run). The API, its database (``$PREFECT_HOME``) and what the run records are the same as with
Prefect's own ephemeral start, but for flow heartbeats, which are off (``_api_url_for_this_process``).
When an API is configured (the variable, the active profile, a test harness) or ephemeral mode is off,
nothing is started and Prefect decides as before; if the early server dies before answering, Prefect's
own start takes over.

A Prefect server already running on this machine for the same Prefect home (``make server``, ``prefect
server start``: ``$PREFECT_HOME``, by default ``~/.prefect``) is used instead of starting one
(``running_server``): the run then shows in its UI while it runs, and nothing starts.

Measured figures and the alternatives (a server in-process, fewer migrations): docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

#: what Prefect's SubprocessASGIServer sets for its server: no UI, ephemeral services only
SERVER_ENVIRONMENT = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}

#: seconds between two health checks while the server starts
POLL_SECONDS = 0.05

#: longest wait for Prefect's log and event workers to send what they queue, before the server stops
DRAIN_SECONDS = 10.0


def _stop_with_the_command() -> None:
    # In the server's process: a command killed with -9 cannot stop it, so the kernel does (SIGTERM: the
    # server shuts down as it does when asked). Prefect's own ephemeral start leaves it running.
    from rag.runtime import die_with_parent

    die_with_parent(signal.SIGTERM)


class EarlyAPI:
    """The Prefect API a command's flow will use: a configured one, a server running for this Prefect home,
    or a subprocess started before the command needs it (Prefect's ephemeral API, started early).

    Args:
        ephemeral: start an ephemeral API when there is no other. Read-only commands pass False: with no
            API to report to they run without Prefect (ragops/cli/readonly.py).
    """

    def __init__(self, *, ephemeral: bool = True) -> None:
        self.ephemeral = ephemeral
        self.configured = False  # an API is configured (environment, profile, test harness)
        self.server: str | None = None  # the API of a running server of this Prefect home, used instead
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def api_url(self) -> str:
        """The early server's URL, as ``PREFECT_API_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def available(self) -> bool:
        """Whether a flow run here reports to a Prefect API (configured, running, or started early)."""
        return self.configured or self.server is not None or self.process is not None

    def start(self) -> None:
        """Find the API to use; start the early server when there is none and ``ephemeral`` allows it."""
        self.configured = _api_configured_cheaply()
        if self.configured:
            return
        self.server = running_server()
        if self.server is not None or not self.ephemeral:
            return
        self.port = _free_port()
        # A process group of its own: a terminal's Ctrl-C reaches the command only, which then records the
        # run as crashed on this server and stops it; in the command's group the server died at the same
        # moment, and the run stayed "Running" in Prefect for good.
        self.process = subprocess.Popen(_server_command(self.port), env={**os.environ, **SERVER_ENVIRONMENT},
                                        stdin=subprocess.DEVNULL, stdout=2,  # our stdout is the command's result
                                        preexec_fn=_stop_with_the_command, process_group=0)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Flows in this block use the running server found, or the early server (after it answers); then
        their queued logs are sent."""
        if (self.process is None and self.server is None) or not _ephemeral_wanted():
            self.stop()
            yield
            return
        if self.server is not None:
            url, ephemeral = self.server, False
        elif self._wait_healthy():
            url, ephemeral = self.api_url, True
        else:
            self.stop()  # Prefect's own start takes over, and reports what goes wrong
            yield
            return
        with _api_url_for_this_process(url, ephemeral=ephemeral):
            try:
                yield
            finally:
                _drain_prefect_workers()  # before the server goes: their last logs and events reach it

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s, as Prefect stops its own)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_healthy(self) -> bool:
        """Wait for ``/health`` to answer 200, as Prefect does (its startup timeout setting applies).

        Returns False when the server exited first. Raises RuntimeError on a timeout, as Prefect does.
        """
        import httpx
        from prefect.settings import get_current_settings

        assert self.process is not None
        timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    log.warning("the early Prefect API exited with code %s; Prefect starts its own",
                                self.process.returncode)
                    return False
                try:
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(POLL_SECONDS)
        self.stop()
        raise RuntimeError(f"Timed out after {timeout} s while starting the ephemeral Prefect API server; raise "
                           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine")


@contextmanager
def early_prefect_api(*, ephemeral: bool = True) -> Iterator[EarlyAPI]:
    """Find the Prefect API for this command, or start Prefect's ephemeral API now, in the background (with
    ``ephemeral``); stop it when the block ends.

    Use ``api.serving()`` around the flow call: it waits for the server there, not here.
    """
    api = EarlyAPI(ephemeral=ephemeral)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _api_configured_cheaply() -> bool:
    """True when flows here will use a configured API rather than an ephemeral one.

    Prefect's settings cost ~1 s to import in a fresh process, so this reads what Prefect would read
    without it: ``$PREFECT_API_URL``, then the active profile (``_profile_api_url``), and the settings when
    prefect is already imported (a test harness, an embedding application). Settings files in the working
    directory (prefect.toml, .env, pyproject.toml's [tool.prefect]) are left to Prefect: with one there, its
    settings are read. ``serving`` checks them properly later.
    """
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" in sys.modules or _settings_files_here():
        return not _ephemeral_wanted()
    return _profile_api_url() is not None


def _settings_files_here() -> bool:
    pyproject = Path("pyproject.toml")
    try:
        tool_prefect = pyproject.is_file() and "[tool.prefect" in pyproject.read_text(errors="replace")
    except OSError:
        tool_prefect = False
    return Path("prefect.toml").is_file() or Path(".env").is_file() or tool_prefect


def _profile_api_url() -> str | None:
    """``PREFECT_API_URL`` of the active Prefect profile, read as Prefect reads it: its own profiles.toml
    (which has a "local" profile), then the user's (``$PREFECT_PROFILES_PATH``, by default
    ``$PREFECT_HOME/profiles.toml``), the active one named by ``$PREFECT_PROFILE`` or the user's file."""
    import tomllib

    spec = importlib.util.find_spec("prefect")
    bundled = Path(next(iter(spec.submodule_search_locations))) / "settings" / "profiles.toml" if (
        spec and spec.submodule_search_locations) else None
    template = os.environ.get("PREFECT_PROFILES_PATH") or "$PREFECT_HOME/profiles.toml"
    users = Path(template.replace("${PREFECT_HOME}", "$PREFECT_HOME").replace("$PREFECT_HOME", str(prefect_home())))
    profiles: dict[str, dict] = {}
    active = None
    for file in (bundled, users.expanduser()):
        try:
            data = tomllib.loads(file.read_text()) if file else {}
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for name, values in (data.get("profiles") or {}).items():
            profiles.setdefault(name, {}).update(values or {})
        active = data.get("active") or active
    url = profiles.get(os.environ.get("PREFECT_PROFILE") or active or "ephemeral", {}).get("PREFECT_API_URL")
    return str(url) if url else None


def _ephemeral_wanted() -> bool:
    """Prefect's own rule: an ephemeral API when no API URL is configured and ephemeral mode is on."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


#: where ``prefect server start`` (and ``make server``) listens unless told otherwise
LOCAL_SERVER_HOST, LOCAL_SERVER_PORT = "127.0.0.1", "4200"

#: longest wait for a running server to say which Prefect home it serves (nothing listening: refused at once;
#: a server on a loaded machine took over 1 s, and the command then started an API of its own beside it)
PROBE_SECONDS = 10.0


def prefect_home() -> Path:
    """The Prefect home this process uses: ``$PREFECT_HOME``, else Prefect's default ``~/.prefect``."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser().resolve()


def running_server() -> str | None:
    """The API URL of a Prefect server running on this machine for this process's Prefect home, or None.

    It is looked for where ``prefect server start`` listens (``$PREFECT_SERVER_API_HOST`` and
    ``$PREFECT_SERVER_API_PORT``, by default 127.0.0.1:4200, as ``make server`` starts it) and used only
    when it serves the same Prefect home: its database is the one an ephemeral API here would write, so the
    run lands where that server's UI already shows runs. A server of another home (another checkout,
    another user, a test's) or one that does not answer within ``PROBE_SECONDS`` is left alone.
    """
    import urllib.request

    host = os.environ.get("PREFECT_SERVER_API_HOST") or LOCAL_SERVER_HOST
    host = LOCAL_SERVER_HOST if host in ("0.0.0.0", "::") else host  # listening everywhere: here too
    url = f"http://{host}:{os.environ.get('PREFECT_SERVER_API_PORT') or LOCAL_SERVER_PORT}/api"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # this machine: never a proxy
    try:
        with opener.open(f"{url}/admin/settings", timeout=PROBE_SECONDS) as response:
            home = json.load(response).get("home")
    except (OSError, ValueError, AttributeError):  # nothing there, not a Prefect server, an older one
        return None
    if not isinstance(home, str) or Path(home).expanduser().resolve() != prefect_home():
        return None
    return url


@contextmanager
def _api_url_for_this_process(url: str, *, ephemeral: bool) -> Iterator[None]:
    """``PREFECT_API_URL`` for every thread of this process (and the processes it starts) for the block.

    The variable plus Prefect's ``refresh_global_settings_context`` reach threads that start without
    the caller's context (Prefect's own comments name this case: such a thread would otherwise see no
    URL and start a second ephemeral server); ``temporary_settings`` covers this thread's context.

    Args:
        ephemeral: the server is this command's own early API (no UI, stops with the command).
    """
    import prefect.context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_UI_URL,
        temporary_settings,
    )

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    prefect.context.refresh_global_settings_context()
    try:
        updates = {PREFECT_API_URL: url}
        if ephemeral:
            # No UI is served: an empty UI URL keeps Prefect from logging a "View at" link to nothing. No flow
            # heartbeats: they let a server notice a crashed run, and this one stops with the process; a flow
            # run's exit also waits up to 1 s for its heartbeat thread (flow_engine._send_heartbeats).
            updates |= {PREFECT_UI_URL: "", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        with temporary_settings(updates=updates):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        prefect.context.refresh_global_settings_context()


def _server_command(port: int) -> list[str]:
    """The command line Prefect's ``SubprocessASGIServer`` runs, found without importing prefect."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("prefect is not installed")
    app_dir = Path(next(iter(spec.submodule_search_locations))).parent
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server exiting on a taken one falls back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers still queue, as ``prefect_test_harness`` does before it
    stops its server (otherwise they report connection errors at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # Draining a worker whose queue is not empty yet logs a "Still processing items" warning: let the
    # events (a few per task run) go out first. queue.join has no timeout, hence the thread.
    waiter = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True)
    waiter.start()
    waiter.join(DRAIN_SECONDS)
    for worker in (APILogWorker, EventsWorker):
        result = worker.drain_all(timeout=DRAIN_SECONDS, at_exit=False)
        if inspect.isawaitable(result):  # only inside an event loop; the CLI calls flows synchronously
            from prefect.utilities.asyncutils import run_coro_as_sync

            run_coro_as_sync(result)
