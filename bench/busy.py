"""Benchmark: a no-change refresh and ``ragops eval`` of the demo on a busy machine, as typed in a shell and
as a scheduler starts them, alternating two checkouts (before and after a change) in the same conditions.

In a temporary folder (or ``--workdir``) it copies the demo (demo/ragops.yaml, its corpus and golden set;
the store in ``<folder>/.ragops/qdrant``, as demo/ragops.yaml puts it beside the demo folder) with
PREFECT_HOME there and the Makefile's offline environment, and builds the alias once with this checkout.
It then starts ``--burners`` CPU burners (``yes > /dev/null``), each in a session of its own as another
user's work is, and times, wall clock, round after round:

- ``ragops reindex`` (nothing changed) and ``ragops eval``, with each checkout in turn (``--before DIR``:
  a checkout or ``git archive`` of the older code, run through PYTHONPATH; this one otherwise), started
  "typed in a shell" (``sh -c 'ragops ...; true'`` in a new session: the command shares the shell's
  scheduling group) and, with ``--scheduled``, "as scheduled" (the command leads a new session, as
  systemd, a Prefect worker or ``setsid`` start it);
- with this checkout, ``ragops status``, "the evaluation itself" (the same evaluation through the domain
  functions in a plain Python process: settings, golden set, model, store, ``evals.evaluate.evaluate_build``;
  no CLI, no Prefect) and ``ragops eval`` again, for the target ``eval <= 2 x (status + evaluation)``.

Each line gives the 1-minute load average when the run ended. ``--burners 0`` measures without burners.

    .venv/bin/python bench/busy.py [--before DIR] [--burners 2] [--rounds 3] [--scheduled] [--workdir DIR]

Exit code 0 whatever the figures (it is a benchmark); 1 when the setup (the first reindex) failed.
Figures and the command line: docs/benchmarks.md ("Start-up and CPU priority on a busy machine").
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the Makefile's exported environment (offline, no telemetry)
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", "RAGAS_DO_NOT_TRACK": "true",
           "SCARF_NO_ANALYTICS": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

#: the evaluation itself: what `ragops eval` computes, through the domain functions in a plain process
EVALUATION = """
import sys
from evals.evaluate import evaluate_build
from evals.golden import load_golden_set
from rag.config import Settings
from rag.embed.embedder import load_embedder
from rag.runtime import configure_offline_runtime
from rag.store import IndexStore, open_store

configure_offline_runtime()
settings = Settings.load(sys.argv[1])
golden = load_golden_set(settings.evaluation.golden)
embedder = load_embedder(settings.embedding)
with open_store(settings.store) as store:
    evaluate_build(store, store.alias_target(settings.alias), golden, settings.evaluation, embedder, strict=False)
"""


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


class Bench:
    def __init__(self, root: Path, before: Path | None) -> None:
        self.root, self.config = root, root / "demo" / "ragops.yaml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "PREFECT_API"))}
        self.env.update(OFFLINE, PREFECT_HOME=str(root / "prefect"))
        self.code = {"after": ROOT} | ({"before": before.resolve()} if before else {})

    def _env(self, code: str) -> dict[str, str]:
        return {**self.env, "PYTHONPATH": str(self.code[code])}

    def time(self, argv: list[str], code: str, *, scheduled: bool = False) -> tuple[float, int]:
        """Wall seconds and exit code of ``argv`` started typed in a shell, or (``scheduled``) leading its
        own session."""
        line = argv if scheduled else ["/bin/sh", "-c", shlex.join(argv) + "; code=$?; true; exit $code"]
        started = time.perf_counter()
        done = subprocess.run(line, env=self._env(code), cwd=self.root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        return time.perf_counter() - started, done.returncode

    def ragops(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ragops", *args, "--config", str(self.config)]


def prepare(root: Path) -> None:
    shutil.copytree(ROOT / "demo", root / "demo", ignore=shutil.ignore_patterns("__pycache__"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout (or git archive) of the code to compare with")
    parser.add_argument("--burners", type=int, default=2, help="CPU burners, each in a session of its own")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--scheduled", action="store_true", help="also time the commands leading their session")
    parser.add_argument("--workdir", type=Path, help="use this (empty or new) folder instead of a temporary one")
    args = parser.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-busy-"))
    root.mkdir(parents=True, exist_ok=True)
    prepare(root)
    bench = Bench(root, args.before)
    seconds, code = bench.time(bench.ragops("reindex"), "after")
    if code != 0:
        print(f"setup failed: ragops reindex exited {code}", file=sys.stderr)
        return 1
    print(f"setup: first reindex {seconds:.1f}s; burners: {args.burners}; load before them {_load()}")
    burners = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, start_new_session=True)
               for _ in range(args.burners)]
    try:
        time.sleep(10 if burners else 0)
        modes = [False, True] if args.scheduled else [False]
        for round_ in range(1, args.rounds + 1):
            for command in ("reindex", "eval"):
                for scheduled in modes:
                    for code in bench.code:
                        wall, exit_code = bench.time(bench.ragops(command), code, scheduled=scheduled)
                        print(f"round {round_} {command:7s} {'scheduled' if scheduled else 'shell':9s} {code:6s} "
                              f"{wall:7.2f}s exit {exit_code} load {_load()}", flush=True)
            status, _ = bench.time(bench.ragops("status"), "after")
            itself, _ = bench.time([sys.executable, "-c", EVALUATION, str(bench.config)], "after")
            evaluated, _ = bench.time(bench.ragops("eval"), "after")
            print(f"round {round_} target: status {status:.2f}s + evaluation itself {itself:.2f}s; eval {evaluated:.2f}s "
                  f"= {evaluated / (status + itself):.2f} x (target <= 2); load {_load()}", flush=True)
    finally:
        for burner in burners:
            burner.send_signal(signal.SIGTERM)
            burner.wait()
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
