"""The ``ragops`` command line.

Every command takes ``--config``, ``--store``, ``--alias`` and ``--json``. With ``--json``, stdout carries
exactly one JSON object (the shapes are in docs/cli.md), success or error; progress and logs go to
stderr. Exit codes: 0 ok, 1 bug, 2 bad input or config, 3 refused (alias conflict, build not fit to
promote), 4 source or store unavailable, 5 a source breached its max_staleness, 6 drift detected.

Heavy imports (torch, prefect, qdrant) happen inside commands so that ``ragops --help`` is instant.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

from rag.errors import RagopsError
from rag.runtime import configure_offline_runtime
from rag.secrets import redact_tree, redact_url
from ragops import output

app = typer.Typer(
    name="ragops",
    help="Keep the retrieval side of RAG healthy: versioned index builds in Qdrant, promoted through an alias.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="ragops.yaml to read. Default: $RAGOPS_CONFIG, else ./ragops.yaml if present.",
                 envvar="RAGOPS_CONFIG", show_default=False),
]
StoreOption = Annotated[
    Optional[str],
    typer.Option("--store", help="Store: a folder (embedded Qdrant) or a Qdrant URL. Overrides store.location "
                 "and $RAGOPS_STORE__LOCATION.", show_default=False),
]
AliasOption = Annotated[
    Optional[str],
    typer.Option("--alias", help="Serving alias. Overrides `alias` and $RAGOPS_ALIAS.", show_default=False),
]
GoldenOption = Annotated[
    Optional[Path],
    typer.Option("--golden", "-g", help="Golden set (YAML or JSONL, docs/evaluation.md) instead of evaluation.golden.",
                 show_default=False),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (shapes in docs/cli.md); logs go to stderr.")
]


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    configure_offline_runtime()
    if version:
        from importlib.metadata import version as package_version

        typer.echo(f"ragops {package_version('ragops')}")
        raise typer.Exit()


@app.command()
def reindex(
    *,
    source: Annotated[
        Optional[list[str]],
        typer.Option("--source", "-s", help="Folder or s3://bucket/prefix to index (repeatable). Replaces the "
                     "configured sources.", show_default=False),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Re-parse every document instead of starting from the live build.")
    ] = False,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Build and keep the version, but leave the alias where it is.")
    ] = False,
    golden: GoldenOption = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Bring the index up to date with its sources (incrementally) and promote the new build if sound.

    Runs the `reindex` Prefect flow in this process (no server needed) and prints a run summary:
    documents new/changed/unchanged/deleted/failed, chunks embedded and reused, timings, the new
    version, whether it was promoted and why, and each source's freshness. Nothing changed: no build.
    """
    with cli_errors(json_output):
        _check_config(config, source, store, alias, golden)
        from flows.reindex import reindex as reindex_flow

        with _stdout_to_stderr(), _store_for_flow(store) as flow_store:
            summary = reindex_flow(
                config=str(config) if config else None,
                full_rebuild=full,
                sources=source or None,
                store=flow_store,
                alias=alias,
                promote=not no_promote,
                golden=str(golden.resolve()) if golden else None,
            )
        output.emit(summary, json_output, output.render_summary)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="What to search for.")],
    *,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=1000, help="How many results.")] = 5,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Search the live index through the alias, with the model the live build was embedded with."""
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from rag.serving import Retriever

        with Retriever(alias=settings.alias, store=settings.store, device=settings.embedding.device) as retriever:
            hits = retriever.search(text, k)
        result = {
            "alias": settings.alias,
            "query": text,
            "version": hits[0].version if hits else None,
            "hits": [hit.model_dump(mode="json") for hit in hits],
        }
        output.emit(result, json_output, output.render_hits)


@app.command()
def status(
    *,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show where the alias points and every build of it, with its manifest."""
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from rag.store import IndexStore
        from rag.versions import list_versions

        with IndexStore.open(settings.store) as index_store:
            live = index_store.alias_target(settings.alias)
            builds = list_versions(index_store, settings.alias)
            records = index_store.read_records(live) if live else {}
        result = {
            "alias": settings.alias,
            "store": redact_url(settings.store.location),
            "live": live,
            "versions": [b.model_dump(mode="json") for b in builds],
            "quarantined": [r.model_dump(mode="json") for r in records.values() if r.quarantine],
        }
        output.emit(result, json_output, output.render_status)


@app.command()
def freshness(
    *,
    documents: Annotated[
        bool, typer.Option("--documents", help="Also list every document's freshness record.")
    ] = False,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """How far the live index lags behind each source, against each source's max_staleness.

    Reads the freshness the last reindex recorded (no listing is done here); staleness is measured
    up to now. Exit code 5 when a source breaches its limit.
    """
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from datetime import datetime, timezone

        from rag.errors import FreshnessBreach
        from rag.freshness import assess
        from rag.models import utc_now
        from rag.store import IndexStore, version_of

        with IndexStore.open(settings.store) as index_store:
            live = index_store.alias_target(settings.alias)
            states = index_store.read_source_states(settings.alias)
            records = index_store.read_records(live) if live and documents else {}
        assessed = assess(states, settings.sources, utc_now())
        result = {
            "alias": settings.alias,
            "live": live,
            "sources": [
                {**a.state.model_dump(mode="json"), "staleness_seconds": a.staleness_seconds,
                 "max_staleness_seconds": a.max_staleness_seconds, "breach": a.breach, "message": a.message}
                for a in assessed
            ],
            "documents": [
                {**r.model_dump(mode="json"), "build": version_of(live),
                 "modified_at": datetime.fromtimestamp(r.modified, tz=timezone.utc).isoformat()}
                for r in records.values()
            ] if documents else None,
        }
        breaches = [a for a in assessed if a.breach]
        failure = FreshnessBreach("; ".join(f"{a.state.name}: {a.message}" for a in breaches)) if breaches else None
        _emit_report(result, json_output, output.render_freshness, failure)


@app.command()
def rollback(
    *,
    to: Annotated[
        Optional[str],
        typer.Option("--to", help="Version to go back to. Default: the build the live one replaced.",
                     show_default=False),
    ] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point the alias back at the previous build (compare-and-swap; nothing is deleted)."""
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from rag.store import IndexStore, version_of
        from rag.versions import rollback as rollback_alias

        with IndexStore.open(settings.store) as index_store:
            before, after = rollback_alias(index_store, settings.alias, to)
        result = {
            "alias": settings.alias,
            "from": before,
            "to": after,
            "from_version": version_of(before),
            "to_version": version_of(after),
        }
        output.emit(result, json_output, output.render_rollback)


@app.command()
def unlock(
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Free a server store's lease even though its holder looks alive.")
    ] = False,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show who holds the alias's lock (one run per alias), and free it if its holder is gone.

    An embedded store's lock is freed by the system the moment its holder exits, so there is never a
    stale one to free: a live holder is named with the process to stop. A server store's lease is
    freed when its holder's process is gone (same host) or its lease expired; `--force` frees it anyway.
    """
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from rag.locks import AliasLock

        lock = AliasLock(settings.store, settings.alias)
        freed = lock.break_stale(force=force)
        result = {
            "alias": settings.alias,
            "kind": lock.kind,
            "freed": freed.model_dump(mode="json") if freed else None,
        }
        output.emit(result, json_output, output.render_unlock)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version (or full collection name) to make live.")],
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a build its gate rejected, or one never gated that "
                           "cannot be gated now (needs --reason).")
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why; recorded with the promotion in the build's manifest.")
    ] = "",
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Point the alias at a kept build (compare-and-swap). A build its gate rejected needs --force --reason.

    A complete build that was never gated (its run died before the gate) is gated first, as a reindex
    would gate it: scored with the live build on the golden set, the verdict recorded in its manifest,
    promoted only on a pass. One that cannot be gated needs --force --reason. The override is recorded
    in the build's manifest (`ragops status` shows it); `ragops rollback` undoes it.
    """
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        from rag.store import IndexStore
        from rag.versions import needs_gate, promote_version

        with IndexStore.open(settings.store) as index_store:
            ungated = None if force else needs_gate(index_store, settings.alias, version)
            if ungated is not None:
                from flows.evaluate import gate_for_promotion  # loads evals and the model: only when needed

                with _stdout_to_stderr():
                    gate_for_promotion(index_store, settings, ungated)
            manifest = promote_version(index_store, settings.alias, version, force=force, reason=reason)
        event = manifest.promotions[-1]
        result = {
            "alias": settings.alias,
            "version": manifest.version,
            "collection": manifest.collection,
            "replaced": event.replaced,
            "forced": event.forced,
            "reason": event.reason,
            "state": manifest.state,
            "gated_now": ungated is not None,
            "gate": manifest.gate.model_dump(mode="json") if manifest.gate else None,
        }
        output.emit(result, json_output, output.render_promote)


@app.command("eval")
def evaluate(
    *,
    version: Annotated[
        Optional[str], typer.Option("--version", "-v", help="Build to score. Default: the live one.",
                                    show_default=False),
    ] = None,
    golden: GoldenOption = None,
    no_compare: Annotated[
        bool, typer.Option("--no-compare", help="Do not score the live build to apply the gate's rules.")
    ] = False,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score a build on the golden set: nDCG, recall, precision, hit rate, MRR, MAP and RAGAS context metrics.

    Prints the means and the worst queries (--json: every per-query row). For a build that is not
    live, the live build is scored too and the gate's rules applied: would it pass? Reads only; runs
    the `evaluate` Prefect flow in this process and publishes the `eval-<alias>` artifact.
    """
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        _check_golden(golden, settings)
        from flows.evaluate import evaluate as evaluate_flow

        with _stdout_to_stderr(), _store_for_flow(store) as flow_store:
            result = evaluate_flow(
                config=str(config) if config else None,
                version=version,
                golden=str(golden.resolve()) if golden else None,
                store=flow_store,
                alias=settings.alias,
                compare=not no_compare,
            )
        output.emit(result, json_output, output.render_eval)


@app.command()
def drift(
    *,
    golden: GoldenOption = None,
    no_event: Annotated[
        bool, typer.Option("--no-event", help="Do not emit ragops.drift.detected (which can start a rebuild).")
    ] = False,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check the live build for drift: golden re-scoring, model fingerprint, compatibility, query distribution.

    Each check prints its figure and threshold. Runs the `drift-check` Prefect flow in this process
    (artifact `drift-<alias>`); on drift it emits the event that starts the full-rebuild deployment
    on a Prefect server. Exit code 6 when any check finds drift.
    """
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        _check_golden(golden, settings)
        from flows.drift import drift_check
        from rag.errors import DriftDetected

        with _stdout_to_stderr(), _store_for_flow(store) as flow_store:
            report = drift_check(config=str(config) if config else None, alias=settings.alias, store=flow_store,
                                 golden=str(golden.resolve()) if golden else None, emit=not no_event)
        failure = DriftDetected("drift: " + "; ".join(
            c["message"] for c in report["checks"] if c["status"] == "drift")) if report["drifted"] else None
        _emit_report(report, json_output, output.render_drift, failure)


bench_app = typer.Typer(help="Benchmarks on public datasets, through the same pipeline and metrics.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("beir")
def bench_beir(
    path: Annotated[Path, typer.Argument(help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    *,
    split: Annotated[str, typer.Option("--split", help="Which qrels/<split>.tsv to score.")] = "test",
    keep: Annotated[
        Optional[Path], typer.Option("--keep", help="Keep the index in this folder (embedded store). Default: "
                                     "a temporary folder, deleted afterwards.", show_default=False),
    ] = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Index a BEIR dataset (one vector per document, title + text, as MTEB) and print its retrieval metrics.

    Uses the configured embedding model and the evaluation's k values. With the default model on
    SciFact (test) it reproduces MTEB's all-MiniLM-L6-v2 figures (docs/evaluation.md).
    """
    with cli_errors(json_output):
        settings = _settings(config, None, None)
        import re
        import tempfile
        import time

        from evals.beir import evaluate_beir, index_beir, load_beir
        from rag.config import StoreSettings
        from rag.embedding import load_embedder
        from rag.store import IndexStore

        started = time.perf_counter()
        dataset = load_beir(path, split)
        typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} {split} queries",
                   err=True)
        embedder = load_embedder(settings.embedding)
        folder = keep or Path(tempfile.mkdtemp(prefix="ragops-bench-"))
        alias = "bench-" + (re.sub(r"[^a-z0-9]+", "-", dataset.name.lower()).strip("-") or "beir")
        with IndexStore.open(StoreSettings(location=str(folder))) as index_store:
            indexing = time.perf_counter()
            manifest = index_beir(index_store, alias, dataset, embedder, _progress("embedded"))
            indexing = time.perf_counter() - indexing
            report = evaluate_beir(index_store, manifest.collection, dataset, settings.evaluation, embedder)
        if keep is None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        result = {
            "dataset": dataset.name,
            "split": split,
            "documents": len(dataset.corpus),
            "queries": report.record.queries,
            "model": report.record.query_model,
            "metrics": report.record.metrics,
            "seconds": {"index": round(indexing, 1), "evaluate": report.record.seconds,
                        "total": round(time.perf_counter() - started, 1)},
            "store": str(folder) if keep else None,
        }
        output.emit(result, json_output, output.render_bench)


def _progress(verb: str):
    """A progress callback printing to stderr about every tenth of the work."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if done >= state["next"] * total or done == total:
            typer.echo(f"  {verb} {done}/{total}", err=True)
            state["next"] = done / total + 0.1

    return report


@app.command("config")
def show_config(
    *,
    config: ConfigOption = None,
    store: StoreOption = None,
    alias: AliasOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the effective configuration (file + environment + flags); secrets are masked."""
    with cli_errors(json_output):
        settings = _settings(config, store, alias)
        # The JSON dump masks SecretStr fields; passwords inside URLs are plain strings to pydantic.
        output.emit(redact_tree(settings.model_dump(mode="json")), json_output, output.render_config)


def _settings(config: Path | None, store: str | None, alias: str | None, sources: list[str] | None = None):
    from rag.config import Settings, source_from_cli

    overrides: dict[str, Any] = {"store": {"location": store}, "alias": alias}
    if sources:
        overrides["sources"] = [source_from_cli(value) for value in sources]
    return Settings.load(config, overrides=overrides)


def _check_config(
    config: Path | None, sources: list[str] | None, store: str | None, alias: str | None, golden: Path | None = None
) -> None:
    """Check what a person can get wrong before starting Prefect: a typo then costs milliseconds and
    prints one line, not a failed flow run with its logs."""
    from rag.embedding import resolve_model_path
    from rag.errors import ConfigError, SourceError
    from rag.store import IndexStore

    settings = _settings(config, store, alias, sources)
    if not settings.sources:
        raise ConfigError("no sources to index: add `sources:` to ragops.yaml or pass --source DIR")
    for source in settings.sources:
        if source.kind == "folder" and not source.path.is_dir():
            raise SourceError(f"source folder {source.path} does not exist or is not a folder")
    resolve_model_path(settings.embedding.model)
    _check_golden(golden, settings)
    if not settings.store.is_remote:
        with IndexStore.open(settings.store):  # locked by another process? say so now
            pass


def _emit_report(result: dict[str, Any], json_output: bool, render, failure: RagopsError | None) -> None:
    """Print a report that may also be a failure (a breach, drift): the report either way, then the
    failure's exit code; with ``--json`` the failure rides along as ``error`` in the same object."""
    if failure is not None and json_output:
        result["error"] = {"kind": failure.kind, "exit_code": failure.exit_code, "message": str(failure)}
    output.emit(result, json_output, render)
    if failure is not None:
        raise typer.Exit(failure.exit_code)


def _check_golden(golden: Path | None, settings) -> None:
    """Read the golden set before any flow starts: a typo costs milliseconds and one line (exit 2)."""
    if golden or settings.evaluation.golden:
        from evals.golden import load_golden_set

        load_golden_set(golden or settings.evaluation.golden)


@contextmanager
def cli_errors(json_output: bool) -> Iterator[None]:
    """Expected failures -> one line (or one JSON object) and their exit code; bugs keep their traceback."""
    try:
        yield
    except RagopsError as exc:
        # Messages are redacted where they are made; this is the last line, for any that slipped by.
        message, details = redact_url(str(exc)), redact_tree(exc.details)
        if json_output:
            error = {"kind": exc.kind, "message": message, "exit_code": exc.exit_code, **details}
            typer.echo(json.dumps({"error": error}))
        else:
            if "summary" in details:  # a run that finished but was refused: show what it did
                typer.echo(output.render_summary(details["summary"]))
            typer.echo(f"error: {message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for our one result: anything a library prints goes to stderr."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


#: how a flow run in this process gets a --store that must not be one of its parameters
STORE_ENV = "RAGOPS_STORE__LOCATION"


@contextmanager
def _store_for_flow(store: str | None) -> Iterator[str | None]:
    """The ``store`` parameter for a flow run in this process; a URL with a password is not one.

    Prefect keeps a run's parameters in its database, its UI and its events. So a ``--store`` with
    credentials goes to the flow through ``$RAGOPS_STORE__LOCATION`` for the length of the run (the
    flow's ``load_settings`` reads it; over the file, as the flag would be) and the parameter stays
    unset. Such a URL holds no whitespace, so the variable's YAML reading returns it unchanged.
    Anything else (a folder, a URL without a password) is passed as the parameter, as before.
    """
    if store is None or redact_url(store) == store:
        yield store
        return
    saved = os.environ.get(STORE_ENV)
    os.environ[STORE_ENV] = store
    try:
        yield None
    finally:
        if saved is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = saved


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (systemd, Kubernetes, `kill`): unwind like Ctrl-C, so that the flow is marked crashed and
    the ephemeral Prefect server this process started is stopped, not left running on its own."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    app()
