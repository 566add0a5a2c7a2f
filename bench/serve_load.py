"""Benchmark: the query service (``ragops serve``) under concurrent load while the alias moves under it.

In one run, in a temporary folder (or ``--workdir``):

1. copies the demo corpus and golden set, writes a ragops.yaml (alias ``load``, chunks of 96 tokens) and a
   second one for another model (all-MiniLM-L6-v2's weights with CLS pooling: another vector space, made
   offline from the packaged model), and builds the alias with ``ragops reindex``;
2. starts ``ragops serve`` and waits for ``/v1/readyz``;
3. measures the baseline in this process: the same model (one thread) and the same store, a single query
   encoded then searched (``IndexStore.search_many``, top 10), p50/p99, back to back and then paced (each
   query after a 50 ms pause, as the clients pause between requests);
4. runs ``--clients`` concurrent clients for ``--duration`` seconds (longer if the moves below take longer),
   each POSTing ``/v1/search`` (k 5) in a loop, with an optional ``--think`` pause between requests
   (exponential, that mean);
5. meanwhile, one after another in other processes: change a document and reindex (a promotion), drift,
   eval, change again and reindex (a second promotion), rollback, then build with the other model without
   promoting and ``promote --force`` it (a third move, to a different model).

It prints requests, non-2xx (by status), transport errors, latency p50/p90/p99/max, throughput, the
versions answered in order of request start next to the moves made, responses mixing builds, and the
baseline, then checks the targets: p50 <= baseline p50 + 5 ms (against each baseline), p99 <= 3 x p50, no
errors, no mixed answers.

    .venv/bin/python bench/serve_load.py [--clients 32] [--duration 60] [--think 0] [--threads 1]
                                         [--workers 1] [--lead 10] [--settle 30] [--niceness N]
                                         [--workdir DIR] [--keep]

The moves start ``--lead`` seconds into the load (a phase with nothing beside it); after the last one the
load goes on until the service answers from the final version (at most ``--settle`` seconds), and at
least until ``--duration``. Logs of every command and of the server: ``--keep``, then ``<workdir>/logs``;
every request's start, latency, status and version: ``<workdir>/records.json``.

Exit code 0 whatever the figures (it is a benchmark); 1 when the setup failed (a build, the server).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALIAS = "load"
K = 5
#: seconds before each query of the paced baseline (the clients think ~1 s; 10 ms already cools the encoder)
PACED_PAUSE = 0.05
#: what users of the demo corpus ask, phrased in many ways (none is a golden query verbatim)
QUERIES = [
    "How do I undo a bad promotion?",
    "roll back the index to the previous build",
    "can I go back more than one version?",
    "what happens if someone else moved the alias while my build was running",
    "is the alias switch atomic?",
    "how is a new build promoted",
    "how often should the coffee machine be descaled",
    "what descaler do I use for the espresso machine",
    "cleaning the portafilter basket after use",
    "how do I backflush my espresso machine",
    "limescale in the boiler",
    "when must a worn bicycle chain be replaced?",
    "how much oil should I put on my chain",
    "best way to deep clean a bike chain",
    "chain elongation limit on an 11-speed drivetrain",
    "why does too much lubricant wear the drivetrain",
    "how many old index versions are kept?",
    "are old builds deleted automatically",
    "can the collection an alias points at be deleted",
    "how do I change the number of builds kept",
    "what makes an index stale and how is staleness limited?",
    "how far behind its sources may the index be",
    "when was each source last listed",
    "what is an alias",
    "what is a collection in Qdrant",
    "define embedding",
    "what is a chunk of a document",
    "why do applications query the alias instead of a collection",
    "six hours maximum staleness check",
    "Which build is live right now and how do I list versions?",
]
#: seconds allowed for ``/v1/readyz`` to answer 200 after the server starts
READY_TIMEOUT = 240.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ragops_executable() -> str:
    beside = Path(sys.executable).parent / "ragops"
    return str(beside) if beside.exists() else (shutil.which("ragops") or "ragops")


class SetupError(Exception):
    pass


@dataclass
class Record:
    start: float  # seconds since the load began
    latency: float  # seconds
    status: int | None  # None: transport error
    version: str | None = None
    model: str | None = None
    mixed: bool = False
    hits: int = 0
    error: str | None = None


@dataclass
class Move:
    name: str
    argv: list[str]
    rc: int | None = None
    started: float = 0.0
    finished: float = 0.0
    live: str | None = None  # the version the alias points at afterwards, when the output says
    note: str = ""


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    config: Path
    cls_config: Path
    golden: Path
    corpus: Path
    logs: Path
    children: list[subprocess.Popen] = field(default_factory=list)

    def run(self, argv: list[str], log_name: str, timeout: float = 900) -> tuple[int, str]:
        """Run a ragops command in its own session; its stdout back, its stderr to a log file."""
        with (self.logs / f"{log_name}.stderr").open("w") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=self.env, text=True,
                                    start_new_session=True, cwd=self.root)
            self.children.append(proc)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                out, _ = proc.communicate()
                return -9, out
            finally:
                kill_group(proc, quiet=True)  # anything it left behind (Prefect's ephemeral API)
        (self.logs / f"{log_name}.stdout").write_text(out)
        return proc.returncode, out


def kill_group(proc: subprocess.Popen, *, quiet: bool = False, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), then SIGKILL what is left after ``grace``."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is gone; its group may not be
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)
        if not quiet:
            print(f"process group {pgid} still alive after SIG{sig.name[3:]}", file=sys.stderr)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def make_cls_model(target: Path) -> Path:
    """all-MiniLM-L6-v2's weights with CLS pooling instead of mean pooling (tests/conftest.py ``cls_model``)."""
    from rag.embed.embedder import resolve_model_path

    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), target)
    pooling = target / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    return target


def prepare(root: Path, niceness: int | None = None) -> Workspace:
    import yaml

    corpus, logs = root / "corpus", root / "logs"
    shutil.copytree(ROOT / "demo" / "corpus", corpus)
    logs.mkdir()
    golden = root / "golden.yaml"
    shutil.copy(ROOT / "demo" / "golden.yaml", golden)
    cls_model = make_cls_model(root / "models" / "minilm-cls")
    base = {
        "alias": ALIAS,
        "sources": [{"name": "demo", "path": str(corpus)}],  # golden ids are demo/<path>
        "store": {"location": str(root / "store")},
        "chunking": {"max_tokens": 96},
        "pipeline": {"batch_documents": 4} | ({"niceness": niceness} if niceness is not None else {}),
        "evaluation": {"golden": str(golden)},
    }
    config, cls_config = root / "ragops.yaml", root / "ragops-cls.yaml"
    config.write_text(yaml.safe_dump(base))
    cls_config.write_text(yaml.safe_dump({**base, "embedding": {"model": str(cls_model)}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "AWS_")) and k != "OMP_NUM_THREADS"}
    env.update(PREFECT_HOME=str(root / "prefect"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    (root / "prefect").mkdir()
    return Workspace(root=root, env=env, config=config, cls_config=cls_config, golden=golden, corpus=corpus,
                     logs=logs)


def baseline(config: Path, queries: int) -> dict[str, float]:
    """A single query in this process, the same model and store as the service: encode, then search."""
    import torch

    torch.set_num_threads(1)
    from rag.config import Settings
    from rag.embed.embedder import load_embedder
    from rag.store import open_store

    settings = Settings.load(config)
    embedder = load_embedder(settings.embedding)
    figures: dict[str, float] = {"queries": queries}
    with open_store(settings.store, create=False) as store:
        live = store.alias_target(settings.alias)
        if live is None:
            raise SetupError(f"alias {settings.alias} has no live build")
        # Back to back, then each after a pause as the clients make: on this machine an encode that follows
        # a pause of 10 ms or more took ~1.5 ms longer than one right after another (docs/benchmarks.md).
        for prefix, pause in (("", 0.0), ("paced_", PACED_PAUSE)):
            encode, total = [], []
            for i in range(queries + 20):
                time.sleep(pause)
                text = QUERIES[i % len(QUERIES)]
                started = time.perf_counter()
                vector = embedder.embed([text])
                encoded = time.perf_counter()
                store.search_many(live, vector, 10)
                done = time.perf_counter()
                if i >= 20:  # after warming up
                    encode.append((encoded - started) * 1000)
                    total.append((done - started) * 1000)
            figures |= {f"{prefix}encode_p50": percentile(encode, 50), f"{prefix}encode_p99": percentile(encode, 99),
                        f"{prefix}p50": percentile(total, 50), f"{prefix}p99": percentile(total, 99)}
    return figures


def client_loop(index: int, base_url: str, think: float, t0: float, stop: threading.Event,
                out: list[Record]) -> None:
    """One user: POST /v1/search on one kept-alive connection, pausing ``think`` seconds on average.

    The client is the standard library's http.client, not httpx: what is timed should be the service,
    and under 32 threads httpx's own Python added ~2 ms at p50 and up to 100 ms at p99 on this machine
    (docs/benchmarks.md). A failed request opens a new connection.
    """
    rng = random.Random(index)
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    if think > 0:  # users arrive at different moments, not all in the same millisecond
        stop.wait(rng.uniform(0, think))
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        query = rng.choice(QUERIES)
        payload = json.dumps({"query": query, "k": K})
        started = time.perf_counter()
        try:
            if connection is None:
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connection.request("POST", "/v1/search", payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            out.append(Record(started - t0, time.perf_counter() - started, None, error=type(exc).__name__))
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.05)  # a refused connection would otherwise spin
            continue
        latency = time.perf_counter() - started
        record = Record(started - t0, latency, response.status)
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if 200 <= response.status < 300 and isinstance(body, dict):
            record.version = body.get("version")
            name = (body.get("model") or {}).get("name")
            record.model = Path(name).name if name and "/" in name else name  # a folder: its last part
            hits = body.get("hits") or []
            record.hits = len(hits)
            record.mixed = any(hit.get("version") != record.version for hit in hits)
        elif isinstance(body, dict):
            record.error = str((body.get("error") or {}).get("kind"))
        out.append(record)
        if think > 0:  # exponential pauses: arrivals like independent users', not in lockstep
            stop.wait(rng.expovariate(1.0 / think))
    if connection is not None:
        connection.close()


def edit(path: Path, sentence: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n{sentence}\n")


def run_moves(ws: Workspace, ragops: str, t0: float, lead: float, moves: list[Move]) -> None:
    """The moves, one after another, from ``lead`` seconds into the load; each records its exit code, when it
    started and finished, and the live version after it."""
    time.sleep(max(0.0, lead - (time.perf_counter() - t0)))

    def do(move: Move, parse=None) -> dict | None:
        moves.append(move)
        move.started = time.perf_counter() - t0
        rc, out = ws.run(move.argv, f"move-{len(moves)}-{move.name.split()[0]}")
        move.rc, move.finished = rc, time.perf_counter() - t0
        try:
            data = json.loads(out) if out.strip() else None
        except ValueError:
            data = None
        if parse is not None and isinstance(data, dict):
            parse(move, data)
        return data

    def from_reindex(move: Move, data: dict) -> None:
        error = data.get("error") or {}
        data = error.get("summary") or data  # a refused build: its summary rides in the error
        move.live = (data.get("live") or "").split("__")[-1] or None
        move.note = (f"{data.get('state')}, v {data.get('version')}, promoted {data.get('promoted')}"
                     + (f"; {error.get('kind')}: {str(error.get('message'))[:160]}" if error else ""))

    cfg = ["--config", str(ws.config)]
    edit(ws.corpus / "bicycle-chain.md", "Revised (bench): check the chain every 1,000 km and after wet rides.")
    do(Move("reindex (edit 1)", [ragops, "reindex", *cfg, "--json"]), from_reindex)
    do(Move("drift", [ragops, "drift", *cfg, "--json"]),
       lambda m, d: setattr(m, "note", f"drifted {d.get('drifted')}"))
    do(Move("eval", [ragops, "eval", *cfg, "--golden", str(ws.golden), "--json"]),
       lambda m, d: setattr(m, "note", "ndcg@10 {}".format(((d.get("evaluation") or {}).get("metrics") or {})
                                                            .get("ndcg@10"))))
    edit(ws.corpus / "bicycle-chain.md", "Revised again (bench): a quick-link lets you open the chain by hand.")
    do(Move("reindex (edit 2)", [ragops, "reindex", *cfg, "--json"]), from_reindex)

    def from_rollback(move: Move, data: dict) -> None:
        move.live = data.get("to_version")
        move.note = f"{data.get('from_version')} -> {data.get('to_version')}"

    do(Move("rollback", [ragops, "rollback", *cfg, "--json"]), from_rollback)
    ccfg = ["--config", str(ws.cls_config)]
    built = do(Move("reindex cls --no-promote", [ragops, "reindex", *ccfg, "--no-promote", "--json"]),
               from_reindex)
    version = (built or {}).get("version")
    if not version or (built or {}).get("state") not in ("complete", "rejected"):
        moves.append(Move("promote cls", [], note=f"skipped: the cls build did not complete ({built!r:.200})"))
        return

    def from_promote(move: Move, data: dict) -> None:
        move.live = data.get("version")
        move.note = f"forced {data.get('forced')}, replaced {(data.get('replaced') or '').split('__')[-1]}"

    do(Move("promote cls --force", [ragops, "promote", version, *ccfg, "--force", "--reason",
                                    "bench: another model", "--json"]), from_promote)


def wait_ready(server: subprocess.Popen, base_url: str, timeout: float) -> str:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupError(f"ragops serve exited with {server.returncode} before it was ready")
        try:
            response = httpx.get(f"{base_url}/v1/readyz", timeout=5)
            if response.status_code == 200:
                return response.json().get("version", "?")
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise SetupError(f"ragops serve not ready after {timeout:.0f} s: {last}")


def scrape_metrics(base_url: str) -> dict[str, str]:
    import httpx

    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
    except httpx.HTTPError as exc:
        return {"error": type(exc).__name__}
    wanted = ("ragops_swaps", "ragops_errors_total", "ragops_query_log_dropped", "ragops_live_info")
    return {line.split(" ")[0]: line.split(" ")[-1] for line in text.splitlines()
            if line.startswith(wanted) and not line.startswith("#")}


def report(args, records: list[Record], moves: list[Move], duration: float, base: dict, initial: str,
           metrics: dict[str, str], server_log: Path) -> None:
    ok = [r for r in records if r.status is not None and 200 <= r.status < 300]
    bad = [r for r in records if r.status is not None and not 200 <= r.status < 300]
    transport = [r for r in records if r.status is None]
    latencies = [r.latency * 1000 for r in records if r.status is not None]
    p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
    mixed = sum(r.mixed for r in ok)
    print()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"clients {args.clients}, think {args.think} s, serve --threads {args.threads} --workers {args.workers}, "
          f"builds at niceness {args.niceness if args.niceness is not None else 'default'}; "
          f"asked {args.duration:.0f} s, ran {duration:.1f} s")
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| requests | {len(records)} |")
    print(f"| 2xx | {len(ok)} |")
    print(f"| non-2xx (target 0) | {len(bad)}"
          + (f": {', '.join(f'{s} x{n}' for s, n in sorted(Counter(r.status for r in bad).items()))}" if bad else "")
          + " |")
    print(f"| transport errors | {len(transport)}"
          + (f": {', '.join(f'{e} x{n}' for e, n in Counter(r.error for r in transport).most_common())}"
             if transport else "") + " |")
    print(f"| latency p50 / p90 / p99 / max (ms) | {p50:.1f} / {p90:.1f} / {p99:.1f} / "
          f"{max(latencies, default=float('nan')):.1f} |")
    print(f"| throughput (req/s) | {len(records) / duration:.1f} |")
    print(f"| mixed responses (target 0) | {mixed} |")
    print(f"| responses with no hits | {sum(r.hits == 0 for r in ok)} |")
    print(f"| baseline encode+search p50 / p99 (ms, {base['queries']} queries back to back, 1 thread) | "
          f"{base['p50']:.2f} / {base['p99']:.2f} (encode alone {base['encode_p50']:.2f} / {base['encode_p99']:.2f}) |")
    print(f"| baseline, paced: each query after {PACED_PAUSE * 1000:.0f} ms | {base['paced_p50']:.2f} / "
          f"{base['paced_p99']:.2f} (encode alone {base['paced_encode_p50']:.2f} / {base['paced_encode_p99']:.2f}) |")
    print()
    print("moves (t: seconds since the load began):")
    print()
    print("| # | move | start t | end t | exit | live after | note |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 0 | initial build | - | - | 0 | {initial} | |")
    for number, move in enumerate(moves, 1):
        print(f"| {number} | {move.name} | {move.started:.1f} | {move.finished:.1f} | {move.rc} | "
              f"{move.live or '-'} | {move.note} |")
    print()
    print("versions answered, in order of request start (consecutive duplicates collapsed):")
    print()
    print("| version | model | requests | first start t | last start t | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    segments: list[list[Record]] = []
    overlapping = 0  # sent while the first answer of the next build was still on its way: in flight at the switch
    for record in sorted(ok, key=lambda r: r.start):
        if segments and segments[-1][0].version == record.version:
            segments[-1].append(record)
        elif (len(segments) >= 2 and segments[-2][0].version == record.version
              and record.start <= segments[-1][0].start + segments[-1][0].latency):
            segments[-2].append(record)
            overlapping += 1
        else:
            segments.append([record])
    for seg in segments:
        lat = [r.latency * 1000 for r in seg]
        print(f"| {seg[0].version} | {seg[0].model} | {len(seg)} | {seg[0].start:.2f} | {seg[-1].start:.2f} | "
              f"{percentile(lat, 50):.1f} | {percentile(lat, 99):.1f} | {max(lat):.1f} |")
    print()
    print("latency by what ran beside the load (requests by start time):")
    print()
    print("| phase | t | requests | req/s | p50 ms | p99 ms | max ms | non-2xx+errors |")
    print("|---|---|---|---|---|---|---|---|")
    edges = [("no move (lead)", 0.0, moves[0].started if moves else duration)]
    edges += [(m.name, m.started, m.finished) for m in moves if m.argv]
    edges.append(("no move (tail)", max((m.finished for m in moves), default=0.0), duration))
    for name, begin, end in edges:
        phase = [r for r in records if begin <= r.start < end]
        lat = [r.latency * 1000 for r in phase if r.status is not None]
        failed = sum(1 for r in phase if r.status is None or not 200 <= r.status < 300)
        span = max(end - begin, 1e-9)
        print(f"| {name} | {begin:.1f}-{end:.1f} | {len(phase)} | {len(phase) / span:.1f} | "
              f"{percentile(lat, 50):.1f} | {percentile(lat, 99):.1f} | {max(lat, default=float('nan')):.1f} | "
              f"{failed} |")
    seen = [seg[0].version for seg in segments]
    expected = [initial] + [m.live for m in moves if m.live]
    expected = [v for i, v in enumerate(expected) if i == 0 or v != expected[i - 1]]
    print()
    print(f"versions seen:     {' -> '.join(map(str, seen))}")
    print(f"alias moved to:    {' -> '.join(map(str, expected))}")
    print(f"same sequence: {seen == expected}  ({overlapping} requests in flight across a switch were answered "
          "by the build they reached first, each naming it)")
    # How long after a move's command finished the first request answered by its version started.
    lags, live = [], initial
    for move in moves:
        if move.live and move.live != live:
            live = move.live
            first = next((r.start for r in sorted(ok, key=lambda r: r.start)
                          if r.version == move.live and r.start >= move.started), None)
            lags.append(f"{move.name} (ran {move.started:.1f}-{move.finished:.1f}): "
                        + ("never answered" if first is None else f"first answer at t={first:.1f}"))
    print(f"when the service answered from each new version: {'; '.join(lags) or '-'}")
    print()
    print(f"server /metrics at the end: {', '.join(f'{k} {v}' for k, v in metrics.items()) or '-'}")
    problems = [line.rstrip() for line in server_log.read_text(errors="replace").splitlines()
                if any(word in line for word in ("ERROR", "Traceback", "WARNING", "CRITICAL"))]
    print(f"server log: {len(problems)} ERROR/WARNING/Traceback lines" + (":" if problems else ""))
    for line in problems[:10]:
        print(f"    {line[:300]}")
    print()
    print("targets:")
    for name, key in (("paced baseline", "paced_p50"), ("back-to-back baseline", "p50")):
        target_p50 = base[key] + 5
        print(f"- p50 {p50:.1f} ms <= {name} p50 + 5 ms = {target_p50:.1f} ms: {'PASS' if p50 <= target_p50 else 'FAIL'}")
    print(f"- p99 {p99:.1f} ms <= 3 x p50 = {3 * p50:.1f} ms: {'PASS' if p99 <= 3 * p50 else 'FAIL'}")
    print(f"- non-2xx {len(bad)}, transport errors {len(transport)}, mixed {mixed}: "
          f"{'PASS' if not bad and not transport and not mixed else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load at least (longer if the "
                        "moves take longer)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean seconds each client pauses between requests (exponentially distributed)")
    parser.add_argument("--threads", type=int, default=1, help="ragops serve --threads")
    parser.add_argument("--workers", type=int, default=1, help="ragops serve --workers")
    parser.add_argument("--lead", type=float, default=10.0, help="seconds of load before the first move")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds the load goes on after the last "
                        "move, at most, for the service to answer from the final version")
    parser.add_argument("--niceness", type=int, default=None, help="pipeline.niceness of the builds, drift and "
                        "eval run beside the load (default: the setting's default)")
    parser.add_argument("--baseline-queries", type=int, default=200, help="queries timed for the baseline")
    parser.add_argument("--workdir", type=Path, help="folder for corpus, store, logs (must be empty or absent)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs included)")
    args = parser.parse_args(argv)

    from rag.runtime import configure_offline_runtime

    configure_offline_runtime()
    if args.workdir:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            parser.error(f"--workdir {args.workdir} is not empty")
        args.workdir.mkdir(parents=True, exist_ok=True)
        root = args.workdir.resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="ragops-bench-serve-"))
    ragops = ragops_executable()
    server: subprocess.Popen | None = None
    ws: Workspace | None = None
    try:
        ws = prepare(root, args.niceness)
        print(f"workdir {root}", flush=True)
        started = time.perf_counter()
        rc, out = ws.run([ragops, "reindex", "--config", str(ws.config), "--json"], "setup-reindex")
        summary = json.loads(out) if rc == 0 and out.strip() else {}
        if rc != 0 or not summary.get("promoted"):
            raise SetupError(f"initial reindex exited {rc} (see {ws.logs / 'setup-reindex.stderr'})")
        initial = summary["version"]
        print(f"initial build {initial}: {summary['counts']['chunks']} chunks, "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server_log = ws.logs / "serve.log"
        with server_log.open("w") as log:
            server = subprocess.Popen(
                [ragops, "serve", "--config", str(ws.config), "--port", str(port), "--threads", str(args.threads),
                 "--workers", str(args.workers)],
                stdout=log, stderr=subprocess.STDOUT, env=ws.env, cwd=root, start_new_session=True)
        started = time.perf_counter()
        ready = wait_ready(server, base_url, READY_TIMEOUT)
        print(f"ragops serve ready on {base_url} ({ready}) after {time.perf_counter() - started:.1f} s", flush=True)

        base = baseline(ws.config, args.baseline_queries)
        print(f"baseline: encode+search p50 {base['p50']:.2f} ms, p99 {base['p99']:.2f} ms back to back; "
              f"p50 {base['paced_p50']:.2f} ms, p99 {base['paced_p99']:.2f} ms paced", flush=True)

        records: list[Record] = []  # list.append is atomic under the GIL
        moves: list[Move] = []
        stop = threading.Event()
        t0 = time.perf_counter()
        clients = [threading.Thread(target=client_loop, args=(i, base_url, args.think, t0, stop, records),
                                    name=f"client-{i}", daemon=True) for i in range(args.clients)]
        for thread in clients:
            thread.start()
        mover = threading.Thread(target=run_moves, args=(ws, ragops, t0, args.lead, moves), name="moves",
                                 daemon=True)
        mover.start()
        print(f"load: {args.clients} clients; moves from t={args.lead:.0f}s", flush=True)
        reported: set[int] = set()
        settle: float | None = None  # when the service answered from the alias's final version
        while True:
            time.sleep(0.5)
            now = time.perf_counter() - t0
            if not mover.is_alive() and settle is None:
                final = next((m.live for m in reversed(moves) if m.live), initial)
                end = max((m.finished for m in moves), default=0.0)
                if any(r.version == final and r.start >= end for r in records[-args.clients * 4:]):
                    settle = now
                elif now - end > args.settle:
                    print(f"  service still not answering from {final} {args.settle:.0f} s after the last move",
                          flush=True)
                    settle = now
            for move in list(moves):
                if id(move) not in reported and (move.rc is not None or not move.argv):
                    reported.add(id(move))
                    print(f"  t={move.finished:6.1f}s  {move.name}: exit {move.rc} {move.note}", flush=True)
            if now >= args.duration and settle is not None and now >= settle + 2:
                break
            if server.poll() is not None:
                print(f"ragops serve exited with {server.returncode} during the load", flush=True)
                break
        stop.set()
        for thread in clients:
            thread.join(timeout=90)
        duration = time.perf_counter() - t0
        mover.join(timeout=1)
        report(args, list(records), moves, duration, base, initial, scrape_metrics(base_url), server_log)
        if args.keep:  # every request, for a closer look (latency over time, around each move)
            (root / "records.json").write_text(json.dumps(
                {"t0": t0,  # time.perf_counter() at the load's start: CLOCK_MONOTONIC, shared by processes
                 "moves": [{"name": m.name, "started": m.started, "finished": m.finished} for m in moves],
                 "requests": [[round(r.start, 4), round(r.latency * 1000, 2), r.status, r.version] for r in records]}))
        return 0
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            kill_group(server)
        if ws is not None:
            for child in ws.children:
                kill_group(child, quiet=True, grace=2)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
