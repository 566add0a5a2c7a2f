"""``ragops bench``: benchmarks on public datasets, through the same pipeline and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ragops import output
from ragops.cli.options import Common, config_options

app = typer.Typer(help="Benchmarks on public datasets, through the same pipeline and metrics.", no_args_is_help=True,
                  rich_markup_mode=None)  # click's help, as the ragops app's (ragops/cli/__init__.py)


#: --backend choices: the embedding settings each one sets
BACKENDS = {"torch": {"backend": "torch", "quantization": "none"}, "onnx": {"backend": "onnx", "quantization": "none"},
            "onnx-int8": {"backend": "onnx", "quantization": "int8"}}


@app.command("beir")
@config_options
def bench_beir(
    path: Annotated[Path, typer.Argument(help="BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")],
    *,
    split: Annotated[str, typer.Option("--split", help="Which qrels/<split>.tsv to score.")] = "test",
    backend: Annotated[
        Optional[list[str]],
        typer.Option("--backend", "-b", help="Encoder backend to index and query with: torch, onnx or onnx-int8 "
                     "(repeatable; each gets its own build). Default: the configured one.", show_default=False),
    ] = None,
    keep: Annotated[
        Optional[Path], typer.Option("--keep", help="Keep the index in this folder (embedded store). Default: "
                                     "a temporary folder, deleted afterwards.", show_default=False),
    ] = None,
    common: Common,
) -> None:
    """Index a BEIR dataset (one vector per document, title + text, as MTEB) and print its retrieval metrics.

    Uses the configured embedding model and the evaluation's k values. With the default model on
    SciFact (test) it reproduces MTEB's all-MiniLM-L6-v2 figures (docs/evaluation.md) on torch and
    onnx alike; onnx-int8 is a vector space of its own and scores a little lower.
    """
    settings = common.settings()
    import re
    import tempfile
    import time

    from evals.beir import evaluate_beir, index_beir, load_beir
    from rag.config import EmbeddingSettings, StoreSettings
    from rag.embed.embedder import load_embedder
    from rag.errors import ConfigError
    from rag.store import open_store
    from ragops.contracts import BenchBackend, BenchResponse, BenchSeconds

    unknown = [name for name in backend or [] if name not in BACKENDS]
    if unknown:
        raise ConfigError(f"unknown --backend {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    embeddings = {name: EmbeddingSettings.model_validate({**settings.embedding.model_dump(), **BACKENDS[name]})
                  for name in dict.fromkeys(backend or [])} or {settings.embedding.backend: settings.embedding}
    started = time.perf_counter()
    dataset = load_beir(path, split)
    typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} {split} queries", err=True)
    folder = keep or Path(tempfile.mkdtemp(prefix="ragops-bench-"))
    base = "bench-" + (re.sub(r"[^a-z0-9]+", "-", dataset.name.lower()).strip("-") or "beir")
    runs = []
    with open_store(StoreSettings(location=str(folder))) as index_store:
        for name, embedding in embeddings.items():
            began = time.perf_counter()
            embedder = load_embedder(embedding)
            typer.echo(f"{name}: indexing", err=True)
            alias = base if len(embeddings) == 1 else f"{base}-{name}"
            manifest = index_beir(index_store, alias, dataset, embedder, _progress("embedded"))
            indexing = time.perf_counter() - began
            report = evaluate_beir(index_store, manifest.collection, dataset, settings.evaluation, embedder)
            runs.append(BenchBackend(
                backend=name, model=report.record.query_model, space=embedder.fingerprint.space,
                metrics=report.record.metrics,
                seconds=BenchSeconds(index=round(indexing, 1), evaluate=report.record.seconds,
                                     total=round(time.perf_counter() - began, 1))))
    if keep is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    first = runs[0]
    response = BenchResponse(
        dataset=dataset.name,
        split=split,
        documents=len(dataset.corpus),
        queries=report.record.queries,
        model=first.model,
        metrics=first.metrics,
        seconds=BenchSeconds(index=first.seconds.index, evaluate=first.seconds.evaluate,
                             total=round(time.perf_counter() - started, 1)),
        store=str(folder) if keep else None,
        backends=runs,
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
