"""``ragops bench``: benchmarks on public datasets, through the same pipeline and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ragops import output
from ragops.cli.options import Common, config_options

app = typer.Typer(help="Benchmarks on public datasets, through the same pipeline and metrics.", no_args_is_help=True)


@app.command("beir")
@config_options
def bench_beir(
    path: Annotated[Path, typer.Argument(help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    *,
    split: Annotated[str, typer.Option("--split", help="Which qrels/<split>.tsv to score.")] = "test",
    keep: Annotated[
        Optional[Path], typer.Option("--keep", help="Keep the index in this folder (embedded store). Default: "
                                     "a temporary folder, deleted afterwards.", show_default=False),
    ] = None,
    common: Common,
) -> None:
    """Index a BEIR dataset (one vector per document, title + text, as MTEB) and print its retrieval metrics.

    Uses the configured embedding model and the evaluation's k values. With the default model on
    SciFact (test) it reproduces MTEB's all-MiniLM-L6-v2 figures (docs/evaluation.md).
    """
    settings = common.settings()
    import re
    import tempfile
    import time

    from evals.beir import evaluate_beir, index_beir, load_beir
    from rag.config import StoreSettings
    from rag.embedding import load_embedder
    from rag.store import IndexStore
    from ragops.contracts import BenchResponse, BenchSeconds

    started = time.perf_counter()
    dataset = load_beir(path, split)
    typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} {split} queries", err=True)
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
    response = BenchResponse(
        dataset=dataset.name,
        split=split,
        documents=len(dataset.corpus),
        queries=report.record.queries,
        model=report.record.query_model,
        metrics=report.record.metrics,
        seconds=BenchSeconds(index=round(indexing, 1), evaluate=report.record.seconds,
                             total=round(time.perf_counter() - started, 1)),
        store=str(folder) if keep else None,
    )
    output.emit(response, common.json_output, output.render_bench)


def _progress(verb: str) -> Callable[[int, int], None]:
    """A progress callback printing to stderr about every tenth of the work."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if done >= state["next"] * total or done == total:
            typer.echo(f"  {verb} {done}/{total}", err=True)
            state["next"] = done / total + 0.1

    return report
