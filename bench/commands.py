"""Benchmark: wall time of the everyday ``ragops`` commands, cold and warm, against the "fast commands" targets.

In a temporary folder (or ``--workdir``) it copies the demo (demo/ragops.yaml, demo/corpus, demo/golden.yaml)
with its store and PREFECT_HOME inside that folder and the Makefile's offline environment, runs one
``ragops reindex`` so that the alias has a live build, then times each command as a subprocess of the
``.venv/bin/ragops`` entry point, wall clock: once cold (its first run after the files were written;
nothing else is dropped: the OS page cache and the ONNX export cache stay as they are) and warm (the
median of ``--repeat`` further runs).

Each run also reports which heavy modules the process imported: a ``sitecustomize`` put on PYTHONPATH
(only for these runs) registers an atexit hook that writes ``name in sys.modules`` for ``WATCHED``.
``prefect.server.api.server`` imported means the process started (or was ready to start) Prefect's
ephemeral API.

Prefect's share of the no-change reindex is measured beside it, on the same PREFECT_HOME: ``import
prefect`` alone, an empty flow run on Prefect's own ephemeral API (import, API start, one flow run,
shutdown), and the same flow on the API ragops starts early (ragops/cli/prefect_api.py), when the
checkout has it. ``--flows`` also times ``eval`` and ``drift`` (no targets). The table's header gives
the machine's load average: other work on it slows every figure.

    .venv/bin/python bench/commands.py [--repeat 3] [--flows] [--no-prefect-parts] [--json] [--workdir DIR]
                                       [--keep]

Exit code 0 whatever the figures (it is a benchmark); 1 when the setup (the first reindex) failed.
Figures and the command line: docs/benchmarks.md ("Command timings").
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
QUESTION = "How do I undo a bad promotion?"

#: modules whose presence in sys.modules at exit is reported for every run
WATCHED = ("torch", "sentence_transformers", "transformers", "onnxruntime", "prefect", "prefect.server.api.server")
#: a command that reads the store only must import none of these
NO_MODEL_NO_SERVER = ("torch", "sentence_transformers", "transformers", "prefect.server.api.server")

#: the Makefile's exported environment (offline, no telemetry)
MAKEFILE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "RAGAS_DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

#: the hook every timed process loads at startup; it costs one atexit registration
SITECUSTOMIZE = f'''
import atexit, os, sys

_OUT = os.environ.get("BENCH_IMPORTS_REPORT")
if _OUT:
    def _dump():
        import json
        with open(_OUT, "w") as handle:
            json.dump({{name: name in sys.modules for name in {WATCHED!r}}}, handle)
    atexit.register(_dump)
'''

EMPTY_FLOW = "from prefect import flow\n\n@flow\ndef empty():\n    return 1\n\nempty()\n"
#: the same flow on the API ragops starts early (ragops/cli/prefect_api.py), with nothing to overlap it
EARLY_EMPTY_FLOW = (
    "from ragops.cli.prefect_api import early_prefect_api\n"
    "with early_prefect_api() as api:\n"
    "    from prefect import flow\n\n"
    "    @flow\n"
    "    def empty():\n"
    "        return 1\n\n"
    "    with api.serving():\n"
    "        empty()\n"
)


@dataclass(frozen=True)
class Command:
    """One command line to time, its wall-clock target and the modules it must not import."""

    name: str
    args: tuple[str, ...]
    target: float | None = None  # seconds, wall; None: no target (imports only)
    cold_target_only: bool = False  # the target is for the cold run (query: "<= 6 s cold")
    forbidden: tuple[str, ...] = ()
    ragops: bool = True  # False: args run under .venv/bin/python (Prefect's own share)


COMMANDS = (
    Command("status", ("status",), 2.0, forbidden=NO_MODEL_NO_SERVER),
    Command("status --json", ("status", "--json"), 2.0, forbidden=NO_MODEL_NO_SERVER),
    Command("freshness", ("freshness",), forbidden=NO_MODEL_NO_SERVER),
    Command("config", ("config",), forbidden=NO_MODEL_NO_SERVER),
    Command(f'query -k 3 "{QUESTION}"', ("query", "-k", "3", QUESTION), 6.0, cold_target_only=True,
            forbidden=("torch", "sentence_transformers", "prefect")),
    Command("reindex (no change)", ("reindex", "--json"), 12.0),
)
#: with --flows: the other commands that run a flow (no targets; their Prefect part is the reindex's)
FLOW_COMMANDS = (
    Command("eval", ("eval", "--json")),
    Command("drift", ("drift", "--json")),
)
PREFECT_PARTS = (
    Command("python -c 'import prefect'", ("-c", "import prefect"), ragops=False),
    Command("empty Prefect flow", ("-c", EMPTY_FLOW), ragops=False),
)
EARLY_PART = Command("empty Prefect flow, early API", ("-c", EARLY_EMPTY_FLOW), ragops=False)


@dataclass
class Run:
    """One timed process."""

    seconds: float
    returncode: int
    modules: dict[str, bool]
    stdout: str
    stderr: str


@dataclass
class Result:
    """A command's cold run and warm runs."""

    command: Command
    cold: Run
    warm: list[Run] = field(default_factory=list)

    @property
    def warm_median(self) -> float | None:
        """Median wall time of the warm runs (None without any)."""
        return statistics.median(r.seconds for r in self.warm) if self.warm else None

    @property
    def imported(self) -> dict[str, bool]:
        """Modules imported by any of its runs."""
        runs = [self.cold, *self.warm]
        return {name: any(r.modules.get(name, False) for r in runs) for name in WATCHED}

    @property
    def failed_runs(self) -> int:
        """Runs that exited non-zero."""
        return sum(r.returncode != 0 for r in [self.cold, *self.warm])

    def verdict(self) -> str:
        """PASS/FAIL against the wall-clock target and the forbidden imports; '-' when there is neither."""
        if self.failed_runs:
            return "FAIL (exit)"
        if any(self.imported[name] for name in self.command.forbidden):
            return "FAIL (imports)"
        if self.command.target is None:
            return "PASS" if self.command.forbidden else "-"
        times = [self.cold.seconds] + ([] if self.command.cold_target_only else [self.warm_median or 0.0])
        return "PASS" if max(times) <= self.command.target else "FAIL"


@dataclass
class Workspace:
    """The temporary demo: its config, environment and where the module reports go."""

    root: Path
    config: Path
    env: dict[str, str]

    def run(self, command: Command, label: str) -> Run:
        """Run ``command`` once, wall-timed, and read back what it imported."""
        report = self.root / "modules" / f"{label}.json"
        report.unlink(missing_ok=True)
        argv = ([str(VENV_BIN / "ragops"), *command.args, "--config", str(self.config)] if command.ragops
                else [str(VENV_BIN / "python"), *command.args])
        env = {**self.env, "BENCH_IMPORTS_REPORT": str(report)}
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=self.root, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - started
        modules = json.loads(report.read_text()) if report.exists() else {}
        return Run(seconds, done.returncode, modules, done.stdout, done.stderr)


def prepare(root: Path) -> Workspace:
    """Copy the demo into ``root`` with its store and Prefect home there; the environment of `make demo`."""
    import yaml

    shutil.copytree(ROOT / "demo" / "corpus", root / "corpus")
    shutil.copy(ROOT / "demo" / "golden.yaml", root / "golden.yaml")
    config = yaml.safe_load((ROOT / "demo" / "ragops.yaml").read_text())
    config["store"]["location"] = "store"  # relative to the config file: inside root
    (root / "ragops.yaml").write_text(yaml.safe_dump(config))
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (root / "modules").mkdir()
    # The defaults are what is measured: no inherited Prefect server, profile or ragops override.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_", "AWS_"))}
    env.update(MAKEFILE_ENV, PREFECT_HOME=str(root / "prefect"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    return Workspace(root=root, config=root / "ragops.yaml", env=env)


def measure(workspace: Workspace, commands: tuple[Command, ...], repeat: int) -> list[Result]:
    """Every command cold, in order, then each one ``repeat`` times more (warm)."""
    results = [Result(c, workspace.run(c, f"{i}-cold")) for i, c in enumerate(commands)]
    for i, result in enumerate(results):
        result.warm = [workspace.run(result.command, f"{i}-warm-{n}") for n in range(repeat)]
    return results


def prefect_parts() -> tuple[Command, ...]:
    """Prefect alone: its import, an empty flow on its own ephemeral API, and on ragops' early one (when
    this checkout has it: a "before" checkout does not)."""
    early = importlib.util.find_spec("ragops.cli.prefect_api") is not None
    return PREFECT_PARTS + ((EARLY_PART,) if early else ())


def reindex_split(result: Result) -> list[dict]:
    """For each no-change reindex run: wall time against the flow's own total (what ragops' code did)."""
    rows = []
    for run in [result.cold, *result.warm]:
        try:
            total = json.loads(run.stdout)["timings"]["total"]
        except (ValueError, KeyError, TypeError):
            total = None
        rows.append({"wall": round(run.seconds, 2), "flow_body": None if total is None else round(total, 2)})
    return rows


def _load_average() -> str:
    """The 1-minute load average (other work on the machine slows every figure)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _imports(result: Result) -> str:
    names = {"torch": "torch", "sentence_transformers": "st", "transformers": "transformers",
             "onnxruntime": "onnxruntime", "prefect": "prefect", "prefect.server.api.server": "prefect.server"}
    shown = [short for name, short in names.items() if result.imported.get(name)]
    return ", ".join(shown) or "none"


def render(results: list[Result], prefect: list[Result], setup: float, repeat: int, load: str) -> str:
    """The table: command, cold, warm median, target, verdict, heavy modules imported."""
    head = f"| command | cold | warm (median of {repeat}) | target | verdict | imported |"
    lines = [f"first reindex (setup, builds the live version): {setup:.2f} s; load average {load}", "", head,
             "|---|---|---|---|---|---|"]
    for r in results + prefect:
        target = "-" if r.command.target is None else (
            f"<= {r.command.target:g} s" + (" cold" if r.command.cold_target_only else ""))
        lines.append(f"| {r.command.name} | {_seconds(r.cold.seconds)} | {_seconds(r.warm_median)} | {target} | "
                     f"{r.verdict()} | {_imports(r)} |")
    reindex = next(r for r in results if r.command.name.startswith("reindex"))
    split = ", ".join(f"{row['wall']:.2f} s wall / {_seconds(row['flow_body'])} in the flow body"
                      for row in reindex_split(reindex))
    lines += ["", f"no-change reindex runs: {split}"]
    for r in results + prefect:
        for run in [r.cold, *r.warm]:
            if run.returncode != 0:
                lines.append(f"{r.command.name}: exit {run.returncode}: {run.stderr.strip()[-400:]}")
                break
    return "\n".join(lines)


def as_json(results: list[Result], prefect: list[Result], setup: float, repeat: int, load: str) -> dict:
    """The same figures as one JSON object."""
    def row(r: Result) -> dict:
        return {"command": r.command.name, "cold": round(r.cold.seconds, 3),
                "warm": [round(w.seconds, 3) for w in r.warm],
                "warm_median": None if r.warm_median is None else round(r.warm_median, 3),
                "target": r.command.target, "target_cold_only": r.command.cold_target_only,
                "verdict": r.verdict(), "imported": r.imported,
                "exit_codes": [run.returncode for run in [r.cold, *r.warm]]}

    reindex = next(r for r in results if r.command.name.startswith("reindex"))
    return {"setup_reindex": round(setup, 3), "repeat": repeat, "load_average": load,
            "commands": [row(r) for r in results],
            "prefect": [row(r) for r in prefect], "reindex_split": reindex_split(reindex)}


def main(argv: list[str] | None = None) -> int:
    """Set the demo up, build it once, time every command; print the table (or ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per command (median shown)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--workdir", type=Path, help="use this (empty or new) folder instead of a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-prefect-parts", action="store_true", help="skip timing Prefect alone")
    parser.add_argument("--flows", action="store_true", help="also time eval and drift (no targets)")
    args = parser.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-bench-commands-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        workspace = prepare(root)
        setup = workspace.run(Command("reindex (first)", ("reindex",)), "setup")
        if setup.returncode != 0:
            print(f"the first reindex failed (exit {setup.returncode}):\n{setup.stderr[-3000:]}", file=sys.stderr)
            return 1
        before = _load_average()
        results = measure(workspace, COMMANDS + (FLOW_COMMANDS if args.flows else ()), args.repeat)
        prefect = [] if args.no_prefect_parts else measure(workspace, prefect_parts(), args.repeat)
        load = f"{before} before, {_load_average()} after"  # the machine is shared: say how busy it was
        if args.json:
            print(json.dumps(as_json(results, prefect, setup.seconds, args.repeat, load), indent=2))
        else:
            print(render(results, prefect, setup.seconds, args.repeat, load))
    finally:
        if args.keep:
            print(f"work folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
