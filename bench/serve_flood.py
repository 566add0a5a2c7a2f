"""Benchmark: the query service (``ragops serve``) under a body flood and thousands of slow clients, on a
small descriptor budget, while normal clients go on searching.

In one run, in a temporary folder (or ``--workdir``):

1. copies the demo corpus, writes a ragops.yaml (alias ``flood``, chunks of 96 tokens, one API key
   required, every other ``serve`` limit at its default) and builds the alias with ``ragops reindex`` (a
   ``--workdir`` holding the build of an earlier run is used as it is);
2. starts ``ragops serve`` under ``prlimit --nofile=--nofile`` (1,024 descriptors: ``serve.max_connections``
   is then 1,024 - 128 = 896) and waits for ``/v1/readyz``;
3. quiet phase, ``--quiet`` seconds: ``--clients`` normal clients, each in a loop opening a connection,
   POSTing ``/v1/search`` (k 5) with the key, reading the answer and pausing ``--think`` seconds;
4. attack phase, ``--attack`` seconds, the normal clients going on: an attacker process (this script with
   ``--attacker``) keeps ``--slow`` connections open from 100 client addresses (127.0.1.1 to 127.0.1.100;
   within any per-address bound), each sending a request line and ``--slow-header`` bytes of headers,
   then a byte every 2 s, never finishing its headers; ``--flooders`` connections stream a chunked body
   without end and without a key, and ``--keyed-flooders`` do so with the key (over the body bound);
   each connection the server closes is opened again at once (``--reopen``: after that many seconds).
   Throughout, the server's resident memory and open descriptors are sampled every 0.2 s.

It prints, per phase, the normal clients' requests, failures by kind and latency p50/p99/max; the
server's memory (at rest after warming, peak in each phase, and the kernel's high-water mark) and
descriptors; and what the attacker's connections got (answers by status, closed without an answer,
connect failures). ``--json`` prints the figures as JSON.

    .venv/bin/python bench/serve_flood.py [--slow 3000] [--flooders 50] [--keyed-flooders 50] [--clients 4]
                                          [--quiet 20] [--attack 40] [--nofile 1024] [--workdir DIR] [--keep]

Exit code 0 whatever the figures (it is a benchmark); 1 when the setup (the build, the server) failed.
Figures and the command line: docs/benchmarks.md ("The query service under a flood").
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import json
import os
import random
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_load import (  # noqa: E402 - after sys.path gets the repo (run as a script)
    QUERIES,
    READY_TIMEOUT,
    SetupError,
    free_port,
    kill_group,
    percentile,
    ragops_executable,
)

ALIAS = "flood"
KEY = "rk_bench_flood_key"
#: client addresses the attacker spreads its connections over (any 127.x.y.z reaches the server)
ATTACK_ADDRESSES = [f"127.0.1.{i}" for i in range(1, 101)]
#: bytes of body a flooder sends at a time
FLOOD_CHUNK = 64 * 1024
#: seconds between two bytes a slow client trickles
TRICKLE_EVERY = 2.0


def prepare(root: Path) -> tuple[Path, dict[str, str]]:
    """The demo corpus, a config requiring ``KEY``, the alias built; the config and the environment."""
    import yaml

    from rag.serving.auth import hash_key

    corpus, config = root / "corpus", root / "ragops.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "AWS_")) and k != "OMP_NUM_THREADS"}
    env.update(PREFECT_HOME=str(root / "prefect"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", DO_NOT_TRACK="1")
    if (root / "built").exists():  # a --workdir of an earlier run
        return config, env
    shutil.copytree(ROOT / "demo" / "corpus", corpus)
    config.write_text(yaml.safe_dump({
        "alias": ALIAS, "sources": [{"name": "demo", "path": str(corpus)}],
        "store": {"location": str(root / "store")}, "chunking": {"max_tokens": 96},
        "serve": {"api_keys": [{"id": "bench", "sha256": hash_key(KEY)}]},
    }))
    built = subprocess.run([ragops_executable(), "reindex", "--config", str(config)], env=env, cwd=root,
                           capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        raise SetupError(f"ragops reindex failed ({built.returncode}): {built.stderr[-2000:]}")
    (root / "built").touch()
    return config, env


def start_server(config: Path, env: dict[str, str], port: int, nofile: int, log: Path) -> subprocess.Popen:
    argv = ["prlimit", f"--nofile={nofile}:{nofile}", ragops_executable(), "serve", "--config", str(config),
            "--port", str(port)]
    server = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupError(f"ragops serve exited with {server.returncode}: see {log}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/readyz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    raise SetupError(f"ragops serve was not ready within {READY_TIMEOUT:.0f} s: see {log}")


class Sampler(threading.Thread):
    """The server's resident memory and open descriptors, every 0.2 s, labelled with the phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.phase, self.stop = pid, "quiet", threading.Event()
        self.rss: dict[str, int] = Counter()
        self.fds: dict[str, int] = Counter()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                rss, fds = status_kb(self.pid, "VmRSS") * 1024, len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, ValueError):
                return
            self.rss[self.phase] = max(self.rss[self.phase], rss)
            self.fds[self.phase] = max(self.fds[self.phase], fds)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(field)


def search_once(port: int, rng: random.Random) -> tuple[float, str]:
    """One search on a new connection with the key, k 5: its latency in seconds and its outcome ("200",
    another status with its error kind, or the exception's name)."""
    body = json.dumps({"query": rng.choice(QUERIES), "k": 5})
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/search", body, {"Content-Type": "application/json", "X-API-Key": KEY})
        response = connection.getresponse()
        data = response.read()
        outcome = str(response.status)
        if response.status != 200:
            try:
                outcome += " " + json.loads(data)["error"]["kind"]
            except (ValueError, KeyError, TypeError):
                pass
    except (OSError, http.client.HTTPException) as exc:
        outcome = type(exc).__name__
    finally:
        connection.close()
    return time.perf_counter() - started, outcome


def client_loop(index: int, port: int, think: float, stop: threading.Event, phase: list[str],
                out: list[tuple[str, float, str]]) -> None:
    """A normal client: a new connection per search (so that it meets the attack at every connect), then a
    pause; records (phase, latency, outcome)."""
    rng = random.Random(index)
    while not stop.is_set():
        current = phase[0]
        latency, outcome = search_once(port, rng)
        out.append((current, latency, outcome))
        stop.wait(rng.expovariate(1.0 / think) if think > 0 else 0)


class Attacker:
    """Slow clients and body flooders on non-blocking sockets in one thread, each reopened once closed."""

    def __init__(self, port: int, slow: int, flooders: int, keyed: int, header_bytes: int, reopen: float) -> None:
        self.port, self.selector, self.reopen = port, selectors.DefaultSelector(), reopen
        self.due: list[tuple[float, int, str]] = []  # connections to open again: (when, index, kind)
        self.header = (b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-pad: "
                       + b"a" * max(0, header_bytes))
        self.flood_head = {
            "keyless": b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                       b"transfer-encoding: chunked\r\n\r\n",
            "keyed": b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     + f"x-api-key: {KEY}\r\n".encode() + b"transfer-encoding: chunked\r\n\r\n",
        }
        self.chunk = b"%x\r\n%s\r\n" % (FLOOD_CHUNK, b"a" * FLOOD_CHUNK)
        self.kinds = ["slow"] * slow + ["keyless"] * flooders + ["keyed"] * keyed
        self.counts: Counter[str] = Counter()
        self.open_now = 0
        self.most_open = 0

    def run(self, seconds: float) -> dict:
        deadline = time.monotonic() + seconds
        for index, kind in enumerate(self.kinds):
            self._open(index, kind)
        next_trickle = time.monotonic() + TRICKLE_EVERY
        while time.monotonic() < deadline:
            for key, events in self.selector.select(timeout=0.2):
                self._ready(key, events)
            while self.due and self.due[0][0] <= time.monotonic():
                _, index, kind = heapq.heappop(self.due)
                self._open(index, kind)
            if time.monotonic() >= next_trickle:
                next_trickle += TRICKLE_EVERY
                for key in list(self.selector.get_map().values()):
                    if key.data["kind"] == "slow" and key.data["connected"]:
                        self._send(key, b"a")
        return {**self.counts, "most_open": self.most_open, "open_at_end": self.open_now}

    def _open(self, index: int, kind: str) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((ATTACK_ADDRESSES[index % len(ATTACK_ADDRESSES)], 0))
            sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            self.counts["connect_failed"] += 1
            sock.close()
            return
        self.counts[f"{kind}_opened"] += 1
        data = {"index": index, "kind": kind, "connected": False, "received": b""}
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, data)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)

    def _ready(self, key, events) -> None:
        sock, data = key.fileobj, key.data
        if events & selectors.EVENT_READ:
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk:
                data["received"] += chunk
            elif chunk == b"":
                self._closed(key)
                return
        if events & selectors.EVENT_WRITE:
            if not data["connected"]:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.counts["connect_failed"] += 1
                    self._closed(key, record=False)
                    return
                data["connected"] = True
                first = self.header if data["kind"] == "slow" else self.flood_head[data["kind"]]
                if data["kind"] == "slow":
                    self.selector.modify(sock, selectors.EVENT_READ, data)
                self._send(key, first)
            elif data["kind"] != "slow":
                self._send(key, self.chunk)

    def _send(self, key, payload: bytes) -> None:
        try:
            key.fileobj.send(payload)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._closed(key)

    def _closed(self, key, record: bool = True) -> None:
        data = key.data
        if record:
            first = data["received"].split(b"\r\n", 1)[0]
            status = first.split(b" ")[1].decode() if first.startswith(b"HTTP/1.1 ") else "no answer"
            self.counts[f"{data['kind']}: {status}"] += 1
        self.selector.unregister(key.fileobj)
        key.fileobj.close()
        self.open_now -= 1
        if self.reopen > 0:
            heapq.heappush(self.due, (time.monotonic() + self.reopen, data["index"], data["kind"]))
        else:
            self._open(data["index"], data["kind"])


def summary(records: list[tuple[str, float, str]], phase: str) -> dict:
    mine = [r for r in records if r[0] == phase]
    ok = [latency * 1000 for _, latency, outcome in mine if outcome == "200"]
    return {"requests": len(mine), "answered_200": len(ok),
            "failures": dict(Counter(outcome for _, _, outcome in mine if outcome != "200")),
            "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99), "max_ms": max(ok) if ok else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=3000, help="slow clients holding partial headers")
    parser.add_argument("--slow-header", type=int, default=4096, help="bytes of headers each slow client sends")
    parser.add_argument("--flooders", type=int, default=50, help="connections streaming a keyless body")
    parser.add_argument("--keyed-flooders", type=int, default=50, help="connections streaming a body with the key")
    parser.add_argument("--reopen", type=float, default=0.0, help="seconds before the attacker opens a closed "
                        "connection again (0: at once)")
    parser.add_argument("--clients", type=int, default=4, help="normal clients")
    parser.add_argument("--think", type=float, default=0.2, help="mean pause of a normal client, seconds")
    parser.add_argument("--quiet", type=float, default=20.0, help="seconds without the attack")
    parser.add_argument("--attack", type=float, default=40.0, help="seconds of attack")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit")
    parser.add_argument("--workdir", type=Path, help="folder to work in (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (the server's log is in it)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--attacker", type=int, help=argparse.SUPPRESS)  # the attacker process: the port
    args = parser.parse_args(argv)
    if args.attacker is not None:
        print(json.dumps(Attacker(args.attacker, args.slow, args.flooders, args.keyed_flooders,
                                  args.slow_header, args.reopen).run(args.attack)))
        return 0

    root = args.workdir or Path(tempfile.mkdtemp(prefix="serve-flood-"))
    root.mkdir(parents=True, exist_ok=True)
    server, load_before = None, _load()
    try:
        started = time.monotonic()
        config, env = prepare(root)
        _say(f"built alias {ALIAS} in {time.monotonic() - started:.0f} s")
        port = free_port()
        server = start_server(config, env, port, args.nofile, root / "serve.log")
        pid = server.pid  # prlimit execs ragops, which runs its one worker in-process
        # Warm up (first requests load lazily what the model needs), then take the memory at rest.
        rng = random.Random(0)
        for _ in range(20):
            search_once(port, rng)
        at_rest = status_kb(pid, "VmRSS") * 1024
        sampler = Sampler(pid)
        sampler.start()
        records: list[tuple[str, float, str]] = []
        stop = threading.Event()
        phase = ["quiet"]
        clients = [threading.Thread(target=client_loop, args=(i, port, args.think, stop, phase, records))
                   for i in range(args.clients)]
        for thread in clients:
            thread.start()
        time.sleep(args.quiet)
        phase[0] = sampler.phase = "attack"
        _say(f"attack: {args.slow} slow clients, {args.flooders} keyless and {args.keyed_flooders} keyed "
             f"flooders for {args.attack:.0f} s")
        attacker = subprocess.run([sys.executable, __file__, "--attacker", str(port), "--slow", str(args.slow),
                                   "--slow-header", str(args.slow_header), "--flooders", str(args.flooders),
                                   "--keyed-flooders", str(args.keyed_flooders), "--attack", str(args.attack),
                                   "--reopen", str(args.reopen)],
                                  capture_output=True, text=True, timeout=args.attack + 120)
        phase[0] = sampler.phase = "after"
        time.sleep(5)
        stop.set()
        for thread in clients:
            thread.join(timeout=90)
        sampler.stop.set()
        sampler.join()
        figures = {
            "load_before": load_before,
            "nofile": args.nofile,
            "phases": {name: summary(records, name) for name in ("quiet", "attack", "after")},
            "server": {"rss_at_rest_mb": at_rest / 2**20,
                       **{f"rss_peak_{name}_mb": sampler.rss[name] / 2**20 for name in ("quiet", "attack", "after")},
                       "rss_high_water_mb": status_kb(pid, "VmHWM") / 1024,
                       **{f"fds_peak_{name}": sampler.fds[name] for name in ("quiet", "attack", "after")},
                       "alive": server.poll() is None},
            "attacker": json.loads(attacker.stdout) if attacker.returncode == 0 else {"error": attacker.stderr[-2000:]},
            "load_after": _load(),
        }
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            kill_group(server, quiet=True)
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(render(figures, args))
    return 0


def render(figures: dict, args: argparse.Namespace) -> str:
    lines = [f"attack: {args.slow} slow clients ({args.slow_header} bytes of headers each), {args.flooders} keyless "
             f"and {args.keyed_flooders} keyed body flooders, for {args.attack:g} s, closed connections opened again "
             + (f"after {args.reopen:g} s" if args.reopen > 0 else "at once"),
             f"server: ragops serve, 1 worker, open-file limit {figures['nofile']} (serve.max_connections "
             f"{figures['nofile'] - 128}), limits at their defaults; load average {figures['load_before']} before, "
             f"{figures['load_after']} after",
             f"normal clients: {args.clients}, a new connection per search, mean pause {args.think} s",
             "", "| phase | searches | 200 | failures | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for name, phase in figures["phases"].items():
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(phase["failures"].items())) or "none"
        lines.append(f"| {name} | {phase['requests']} | {phase['answered_200']} | {failures} | {phase['p50_ms']:.1f} "
                     f"| {phase['p99_ms']:.1f} | {phase['max_ms']:.1f} |")
    server = figures["server"]
    lines += ["", f"server memory (RSS): {server['rss_at_rest_mb']:.0f} MB at rest; peak {server['rss_peak_quiet_mb']:.0f} "
              f"MB quiet, {server['rss_peak_attack_mb']:.0f} MB under attack, {server['rss_peak_after_mb']:.0f} MB after; "
              f"high-water mark {server['rss_high_water_mb']:.0f} MB",
              f"server descriptors: peak {server['fds_peak_quiet']} quiet, {server['fds_peak_attack']} under attack, "
              f"{server['fds_peak_after']} after; alive at the end: {server['alive']}",
              "attacker: " + ", ".join(f"{k}: {v}" for k, v in sorted(figures["attacker"].items()))]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
