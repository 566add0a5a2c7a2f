"""The read-only commands stay fast by what they import, and reindex runs on the Prefect API it started early.

`status`, `freshness` and `config` must load no model (no torch, sentence-transformers, transformers or
onnxruntime) and start no Prefect server (``prefect.server.api.server`` is the module Prefect imports to
start its ephemeral one). Each command runs as a real subprocess of the CLI on a small real store (one
build of the demo corpus); what it imported is read from ``sys.modules`` as it exits. No timings are
asserted here: bench/commands.py measures them (docs/benchmarks.md, "Command timings").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.helpers import autogroup_enabled, autogroup_niceness
from testkit.paths import DEMO_CORPUS

#: the demo's golden set (its documents are the demo corpus the fixture builds)
DEMO_GOLDEN = DEMO_CORPUS.parent / "golden.yaml"

#: what a command that only reads the store must not import
MODEL_OR_SERVER = ("torch", "sentence_transformers", "transformers", "onnxruntime", "prefect.server.api.server")

#: runs the CLI as its entry point does; at exit writes the watched modules it imported (argv[1]) as JSON
PROBE = """
import atexit, json, sys

report, watched = sys.argv[1], json.loads(sys.argv[2])

def _write():
    found = sorted(m for m in sys.modules if any(m == w or m.startswith(w + ".") for w in watched))
    with open(report, "w") as handle:
        json.dump(found, handle)

atexit.register(_write)
sys.argv = ["ragops", *sys.argv[3:]]
from ragops.cli import main
main()
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> Path:
    """A ragops.yaml whose alias has one live build of the demo corpus; returns the config's path."""
    from flows.reindex import reindex

    root = tmp_path_factory.mktemp("fast")
    shutil.copytree(DEMO_CORPUS, root / "corpus")
    config = root / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "fast",
        "sources": [{"path": str(root / "corpus"), "name": "demo"}],
        "store": {"location": str(root / "store")},
        "chunking": {"max_tokens": 96},
        "pipeline": {"batch_documents": 4},
    }))
    assert reindex(config=str(config))["promoted"]
    return config


def run_cli(args: list[str], tmp_path: Path, watched: tuple[str, ...] = MODEL_OR_SERVER,
            **env_extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``ragops ARGS`` in a new process (its own, empty PREFECT_HOME); returns it and what it imported
    of ``watched``."""
    report = tmp_path / "imported.json"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", PROBE, str(report), json.dumps(watched), *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert report.exists(), done.stderr[-2000:]
    return done, json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["freshness"], ["config"]],
                         ids=["status", "status-json", "freshness", "config"])
def test_read_only_commands_load_no_model_and_start_no_prefect_server(built: Path, tmp_path: Path,
                                                                      args: list[str]) -> None:
    done, imported = run_cli([*args, "--config", str(built)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert imported == []
    assert not (tmp_path / "prefect").exists() or not any((tmp_path / "prefect").glob("*.db"))  # no API database
    if args == ["status", "--json"]:  # the store was really read: the live build and its manifest
        status = json.loads(done.stdout)
        assert status["live"] and status["versions"][0]["manifest"]["model"]["name"] == "all-MiniLM-L6-v2"


@pytest.mark.slow
def test_a_no_change_reindex_runs_its_flow_on_the_api_it_started_early(built: Path, tmp_path: Path) -> None:
    done, imported = run_cli(["reindex", "--config", str(built), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["counts"]["documents_unchanged"] == 6 and not summary["promoted"]
    # Prefect's own ephemeral start imports prefect.server.api.server into this process; the early
    # server (ragops/cli/prefect_api.py) is a subprocess, and its database is in this PREFECT_HOME.
    assert "prefect.server.api.server" not in imported
    assert "torch" not in imported and "sentence_transformers" not in imported  # onnx backend, export cached
    assert any((tmp_path / "prefect").glob("*.db"))


@pytest.mark.slow
@pytest.mark.parametrize("args", [["eval", "--golden", str(DEMO_GOLDEN), "--version", "20990101-000000"],
                                  ["eval", "--golden", "missing.yaml"], ["drift", "--alias", "nothing-built"]],
                         ids=["version", "golden", "alias"])
def test_a_wrong_argument_fails_before_prefect_or_a_model_starts(built: Path, tmp_path: Path, args: list[str]) -> None:
    """A typo costs a store read and one line: not a Prefect API's start, a model load and a flow run."""
    done, imported = run_cli([*args, "--config", str(built), "--json"], tmp_path, (*MODEL_OR_SERVER, "prefect"))
    assert done.returncode == 2, done.stderr[-2000:]
    error = json.loads(done.stdout)["error"]
    assert error["kind"] in ("version", "golden_set") and error["message"], error
    assert imported == []
    assert not any((tmp_path / "prefect").glob("*.db"))  # no Prefect API ever started


@pytest.mark.slow
def test_eval_and_drift_with_no_prefect_api_run_here_without_prefect(built: Path, tmp_path: Path) -> None:
    """Read-only: with no Prefect API configured or running for this Prefect home there is nothing to report
    to, so no ephemeral API is started (seconds of CPU); the figures are the flow's, and the audit trail has them."""
    evaluated, imported = run_cli(["eval", "--config", str(built), "--golden", str(DEMO_GOLDEN), "--json"], tmp_path,
                                  (*MODEL_OR_SERVER, "prefect"))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads(evaluated.stdout)
    assert report["live"] is True and report["evaluation"]["queries"] == 9 and len(report["per_query"]) == 9
    assert report["evaluation"]["metrics"]["ndcg@10"] > 0.5
    assert {name.split(".")[0] for name in imported} == {"onnxruntime", "transformers"}  # the query model; no prefect
    drifted, imported = run_cli(["drift", "--config", str(built), "--golden", str(DEMO_GOLDEN), "--json"], tmp_path,
                                (*MODEL_OR_SERVER, "prefect"))
    assert drifted.returncode == 0, drifted.stderr[-2000:]
    assert {c["name"] for c in json.loads(drifted.stdout)["checks"]} >= {"golden", "model", "compatibility"}
    assert "prefect" not in imported
    assert not any((tmp_path / "prefect").glob("*.db"))
    trail = json.loads(subprocess.run([sys.executable, "-m", "ragops", "audit", "--config", str(built), "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert [e["kind"] for e in trail["events"]][-2:] == ["evaluation", "drift"]


@pytest.mark.slow
def test_commands_report_to_a_prefect_server_running_for_their_prefect_home(built: Path, tmp_path: Path) -> None:
    """`make server` and a shell that did not export PREFECT_API_URL: the runs go to that server (shown in its
    UI while they run) when it serves the command's Prefect home; a server of another home is left alone."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.prefect_local import local_prefect

    with local_prefect(tmp_path / "server") as prefect:
        ui, port = prefect.api_url.removesuffix("/api"), prefect.api_url.rsplit(":", 1)[1].split("/")[0]
        home = {"PREFECT_HOME": str(prefect.home), "PREFECT_SERVER_API_PORT": port}
        # Without --json: the terminal shows the run's INFO lines, Prefect's link among them.
        reindexed, imported = run_cli(["reindex", "--config", str(built)], tmp_path, **home)
        evaluated, _ = run_cli(["eval", "--config", str(built), "--golden", str(DEMO_GOLDEN)], tmp_path, **home)
        elsewhere, _ = run_cli(["eval", "--config", str(built), "--golden", str(DEMO_GOLDEN), "--json"], tmp_path,
                               PREFECT_SERVER_API_PORT=port)  # another Prefect home: tmp_path / "prefect"
        with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), get_client(sync_client=True) as client:
            runs = {run.name: run.state.type.value for run in client.read_flow_runs()}
    for done in (reindexed, evaluated, elsewhere):
        assert done.returncode == 0, done.stderr[-2000:]
    assert runs == {"reindex": "COMPLETED", "evaluate-fast": "COMPLETED"}
    assert f"View at {ui}/runs/flow-run/" in reindexed.stderr  # Prefect links the run in that server's UI
    assert f"View at {ui}/runs/flow-run/" in evaluated.stderr
    assert "prefect.server.api.server" not in imported and not any((tmp_path / "prefect").glob("*.db"))


def test_an_api_named_by_the_active_prefect_profile_is_found_without_importing_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prefect profile use local` or `prefect config set PREFECT_API_URL=...` configure the API in a profile:
    the command reads it as Prefect would (~1 s cheaper than asking Prefect) and starts no API of its own."""
    from ragops.cli.prefect_api import EarlyAPI

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_SERVER_API_PORT", "9")  # nothing runs there: no server of this home to find
    monkeypatch.delitem(sys.modules, "prefect.settings", raising=False)  # as in a fresh command
    (tmp_path / "profiles.toml").write_text('active = "team"\n[profiles.team]\n'
                                            'PREFECT_API_URL = "http://prefect.internal:4200/api"\n')
    api = EarlyAPI(ephemeral=True)
    api.start()
    assert (api.configured, api.process) == (True, None)
    monkeypatch.setenv("PREFECT_PROFILE", "local")  # Prefect's own profile of that name
    assert _configured() is True
    monkeypatch.setenv("PREFECT_PROFILE", "ephemeral")
    assert _configured() is False


def _configured() -> bool:
    from ragops.cli.prefect_api import EarlyAPI

    api = EarlyAPI(ephemeral=False)
    api.start()
    return api.configured


def test_the_early_api_is_the_server_prefect_starts_for_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same command line and server environment as Prefect's SubprocessASGIServer (a guard for upgrades)."""
    from prefect.server.api.server import SubprocessASGIServer

    from ragops.cli.prefect_api import SERVER_ENVIRONMENT, _server_command

    started: dict = {}
    monkeypatch.setattr(subprocess, "Popen", lambda args, env, **kwargs: started.update(args=args, env=env))
    try:
        SubprocessASGIServer(port=8765)._run_uvicorn_command()
    finally:
        SubprocessASGIServer._instances.pop(8765, None)
    assert started["args"] == _server_command(8765)
    assert {name: started["env"][name] for name in SERVER_ENVIRONMENT} == SERVER_ENVIRONMENT


def _servers_of(parent: int) -> list[int]:
    """Prefect API server processes whose parent is ``parent`` (read from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if int(fields.get("PPid", "0").strip()) == parent and "prefect.server.api.server" in command:
            found.append(int(status.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_reindex_killed_with_9_leaves_no_prefect_server_running(built: Path, tmp_path: Path) -> None:
    """kill -9 cannot run the command's cleanup: the kernel stops the server it started (PR_SET_PDEATHSIG)."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    # In a session of its own, as cron, systemd or a terminal start it (and so in a scheduling group of its own)
    command = subprocess.Popen([sys.executable, "-m", "ragops", "reindex", "--config", str(built), "--json"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (servers := _servers_of(command.pid)) and time.monotonic() < deadline and command.poll() is None:
        time.sleep(0.05)
    assert servers, "the command started no Prefect API server"
    # It yields the CPU as the command does (pipeline.niceness, 10): on Linux a niceness is per thread,
    # so a server started before the command lowered its own would have stayed at the usual priority.
    assert {_niceness(pid) for pid in servers} == {max(10, os.getpriority(os.PRIO_PROCESS, 0))}
    if autogroup_enabled():  # and so does its session's group: niceness alone did not reach across sessions
        assert {autogroup_niceness(pid) for pid in servers} == {10}
        assert {_policy(pid) for pid in servers} == {5}  # SCHED_IDLE (pipeline.idle_class)
    command.send_signal(signal.SIGKILL)
    command.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in servers if _alive(pid)]
    for pid in alive:  # do not leave it to the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the server outlived the command"


@pytest.mark.slow
@pytest.mark.skipif(not autogroup_enabled(), reason="the kernel here schedules without session groups")
def test_a_reindex_typed_in_a_shell_starts_at_normal_priority_and_leaves_the_shells_group_alone(
    built: Path, tmp_path: Path
) -> None:
    """Typed in a shell, the command shares the shell's scheduling group: lowering it slowed everything
    started from that terminal, and the command's own start-up ran in the idle class inside a lowered group
    (a minute before its flow began on a busy machine). The "shell" is a process of its own session."""
    import time

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    log = tmp_path / "stderr.log"
    line = f'"{sys.executable}" -m ragops reindex --config "{built}" >/dev/null 2>"{log}"; echo "exit $?"'
    shell = subprocess.Popen(["/bin/sh", "-c", line], env=env, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline, servers, command = time.monotonic() + 120, [], None
    while not servers and time.monotonic() < deadline and shell.poll() is None:
        command = command or next(iter(_children_of(shell.pid)), None)
        servers = _servers_of(command) if command else []
        time.sleep(0.05)
    assert servers, "the command started no Prefect API server"
    seen = {"shell's group": autogroup_niceness(shell.pid), "server's class": {_policy(pid) for pid in servers}}
    out, _ = shell.communicate(timeout=600)
    assert out.strip() == "exit 0", log.read_text()[-2000:]
    assert seen == {"shell's group": 0, "server's class": {0}}  # untouched; SCHED_OTHER, as the shell runs it
    assert "the scheduling group of the session that started it (a shell's) is left as it is" in log.read_text()


def _children_of(parent: int) -> list[int]:
    return [int(status.parent.name) for status in Path("/proc").glob("[0-9]*/status")
            if _field(status, "PPid") == str(parent)]


def _field(status: Path, name: str) -> str | None:
    try:
        return next((line.split(":", 1)[1].strip() for line in status.read_text().splitlines()
                     if line.startswith(name + ":")), None)
    except OSError:
        return None  # gone meanwhile


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)


def _policy(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[38])  # field 41 of proc(5)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _a_build_of_its_own(built: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config like ``built``'s on a copy of the corpus and a new store (the next reindex builds from
    scratch), and the environment of a command with its own Prefect home under ``tmp_path``."""
    shutil.copytree(DEMO_CORPUS, tmp_path / "corpus")
    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(built.read_text()), "sources": [
        {"path": str(tmp_path / "corpus"), "name": "demo"}], "store": {"location": str(tmp_path / "store")}}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    return config, env


def _flow_run_states(prefect_home: Path) -> list[str]:
    """The state of each flow run in the database of ``prefect_home`` (Prefect's own SQLite file)."""
    return _read_prefect(prefect_home, "select state_type from flow_run")


def _read_prefect(prefect_home: Path, query: str) -> list:
    """The first column of ``query``'s rows in the database of ``prefect_home``; [] before it exists."""
    import sqlite3

    database = prefect_home / "prefect.db"
    if not database.exists():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return [value for (value, *_) in connection.execute(query)]
    except sqlite3.OperationalError:  # the server is still creating its tables
        return []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_at_a_terminal_records_the_run_crashed_and_stops_the_server(built: Path, tmp_path: Path) -> None:
    """A terminal sends Ctrl-C's SIGINT to the whole foreground process group. The server the command
    started must not get it with the command: it died at once then, the run stayed "Running" in Prefect
    for good and the command hung for a minute on its events."""
    import signal
    import time

    config, env = _a_build_of_its_own(built, tmp_path)  # a flow that is running when stopped
    command = subprocess.Popen([sys.executable, "-m", "ragops", "reindex", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,  # leads its process group, as a shell's foreground job
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 900  # a start-up on a machine at load 20 took over 180 s
    while _flow_run_states(tmp_path / "prefect") != ["RUNNING"]:
        assert command.poll() is None, command.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the flow run never started"
        time.sleep(0.1)
    servers = _servers_of(command.pid)
    assert servers, "the command started no Prefect API server"
    os.killpg(command.pid, signal.SIGINT)  # Ctrl-C
    try:
        code = command.wait(timeout=60)
    finally:
        command.kill()
    assert code == 128 + signal.SIGINT, command.stderr.read()[-2000:]
    assert _flow_run_states(tmp_path / "prefect") == ["CRASHED"]
    assert not [pid for pid in servers if _alive(pid)], "the server outlived the command"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_through_a_pipe_exits_130_and_the_build_says_it_was_stopped(built: Path, tmp_path: Path) -> None:
    """`ragops reindex 2>&1 | tee log`, then Ctrl-C: the terminal stops tee too, and the next log line meets a
    broken pipe. The command exited 1 and the build's reason read "SystemExit: 1" (rich's exit on a broken
    pipe) or "KeyboardInterrupt: "; it is a stop by Ctrl-C, whatever ends the unwinding."""
    import signal
    import time

    config, env = _a_build_of_its_own(built, tmp_path)
    command = subprocess.Popen([sys.executable, "-m", "ragops", "reindex", "--config", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = tmp_path / "log"
    with log.open("wb") as sink:  # the pipe's reader, as tee: Ctrl-C stops it too (SIGINT's default)
        tee = subprocess.Popen(["cat"], stdin=command.stdout, stdout=sink, start_new_session=True)
    command.stdout.close()  # tee alone holds the reading end
    deadline = time.monotonic() + 900  # a start-up on a machine at load 20 took over 180 s
    completed = "select name from task_run where state_type = 'COMPLETED'"
    while not any(name.startswith("begin-build") for name in _read_prefect(tmp_path / "prefect", completed)):
        assert command.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    os.killpg(command.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the command and tee alike
    tee.send_signal(signal.SIGINT)
    try:
        code = command.wait(timeout=120)
    finally:
        command.kill()
        tee.wait(timeout=30)
    assert code == 128 + signal.SIGINT, log.read_text()[-3000:]
    status = subprocess.run([sys.executable, "-m", "ragops", "status", "--config", str(config), "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    (build,) = json.loads(status.stdout)["versions"]
    assert (build["manifest"]["state"], build["manifest"]["error"]) == ("failed", "stopped by Ctrl-C (SIGINT)")
