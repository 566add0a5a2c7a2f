"""The reindex flow: build a new index version from the configured sources and promote it.

May touch: the configured sources (read only), the store's build collections of the alias (creates one,
deletes old unaliased ones by retention), and the alias (one compare-and-swap move). Never writes to or
deletes the live collection.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

import connectors
from rag import build, versions
from rag.chunking import Chunker
from rag.config import Settings
from rag.embedding import load_embedder
from rag.errors import ConfigError, PromotionRefused, RagopsError
from rag.models import BuildSummary
from rag.runtime import configure_offline_runtime
from rag.store import IndexStore


def _transient(task, task_run, state) -> bool:
    """Retry unexpected errors and transient store/source errors; not diagnosed, deterministic ones."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, RagopsError) or exc.transient


# Tasks wrap the domain functions; results stay in memory (models and clients are not cacheable).
list_documents = task(
    connectors.list_documents,
    name="list-documents",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
)
load_model = task(load_embedder, name="load-model", cache_policy=NO_CACHE)
begin_build = task(build.begin_build, name="begin-build", cache_policy=NO_CACHE)
# Idempotent (deterministic point ids), so a retry after a store hiccup rewrites the same points.
index_batch = task(
    build.index_batch,
    name="index-batch",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
)
finish_build = task(build.finish_build, name="finish-build", cache_policy=NO_CACHE)
promote_build = task(versions.promote, name="promote", cache_policy=NO_CACHE)
apply_retention = task(versions.apply_retention, name="apply-retention", cache_policy=NO_CACHE)


def _run_name() -> str:
    from prefect.runtime import flow_run

    alias = flow_run.parameters.get("alias")
    return f"reindex-{alias}" if alias else "reindex"


@flow(name="reindex", flow_run_name=_run_name)
def reindex(
    config: str | None = None,
    full_rebuild: bool = False,
    sources: list[str] | None = None,
    store: str | None = None,
    alias: str | None = None,
    promote: bool = True,
) -> dict:
    """Build a new version of the index from the configured sources; promote it if it is sound.

    Every build is a new Qdrant collection ``<alias>__<version>`` with its manifest. When the build
    completes and passes the sanity checks, the alias moves to it in one compare-and-swap request, and
    builds beyond ``retention`` are deleted (never a live one, never the rollback target).

    Args:
        config: path to ragops.yaml; unset reads ``$RAGOPS_CONFIG`` or ./ragops.yaml if present.
        full_rebuild: rebuild every document from scratch (today every build is full; incremental
            refresh honours this flag).
        sources: folders to index instead of the configured sources.
        store: store location (folder or Qdrant URL) instead of the configured one.
        alias: alias to build and promote instead of the configured one.
        promote: False builds and keeps the version without moving the alias.

    Returns:
        The run summary (``BuildSummary`` as JSON; documented in docs/cli.md).

    Raises:
        PromotionRefused: the build completed but failed a sanity check; the alias did not move.
            Its ``details["summary"]`` holds the run summary.
    """
    configure_offline_runtime()
    logger = get_run_logger()
    settings = load_settings(config, sources=sources, store=store, alias=alias)
    if not settings.sources:
        raise ConfigError("no sources to index: add `sources:` to ragops.yaml or pass --source DIR")

    run_started = time.perf_counter()
    embedder = load_model(settings.embedding)
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    progress = build.BuildProgress()

    with IndexStore.open(settings.store) as index_store:
        started = time.perf_counter()
        refs = [ref for source in settings.sources for ref in list_documents(source)]
        progress.timings.list = time.perf_counter() - started
        progress.counts.documents_seen = len(refs)
        logger.info("%d documents listed from %d source(s)", len(refs), len(settings.sources))

        previous = index_store.alias_target(settings.alias)
        manifest = begin_build(index_store, settings, embedder, chunker)
        try:
            batches = list(build.batched(refs, settings.pipeline.batch_documents))
            for number, batch in enumerate(batches, start=1):
                report = index_batch(
                    index_store,
                    manifest.collection,
                    batch,
                    embedder,
                    chunker,
                    max_bytes=int(settings.pipeline.max_file_mb * 1_000_000),
                )
                progress.add(report)
                done = min(number * settings.pipeline.batch_documents, len(refs))
                logger.info(
                    "batch %d/%d: %d/%d documents, %d chunks, %d failed",
                    number, len(batches), done, len(refs), progress.counts.chunks,
                    progress.counts.documents_failed,
                )
            manifest = finish_build(index_store, manifest, progress)
        except BaseException as exc:  # includes KeyboardInterrupt: leave a truthful manifest behind
            build.fail_build(index_store, manifest, f"{type(exc).__name__}: {exc}")
            raise

        started = time.perf_counter()
        promoted, reason = False, "not requested (--no-promote)"
        if promote:
            try:
                reason = versions.check_promotable(index_store, manifest)
                promote_build(
                    index_store, settings.alias, manifest.collection, expected=previous, by="reindex", reason=reason
                )
                promoted = True
            except PromotionRefused as exc:
                reason = str(exc)
                build.reject_build(index_store, manifest, reason)
        progress.timings.promote = time.perf_counter() - started
        deleted = apply_retention(index_store, settings.alias, settings.retention, protect={manifest.collection})
        live = index_store.alias_target(settings.alias)

    progress.timings.total = time.perf_counter() - run_started
    summary = BuildSummary(
        alias=settings.alias,
        version=manifest.version,
        collection=manifest.collection,
        state="rejected" if promote and not promoted else manifest.state,
        counts=progress.counts,
        failures=progress.failures,
        timings=progress.timings,
        promoted=promoted,
        reason=reason,
        live=live,
        previous=previous,
        deleted=deleted,
    )
    publish_summary(summary)
    logger.info("%s", summary_headline(summary))
    if promote and not promoted:
        raise PromotionRefused(
            f"build {manifest.version} was not promoted: {reason}",
            details={"summary": summary.model_dump(mode="json")},
        )
    return summary.model_dump(mode="json")


def load_settings(
    config: str | None, *, sources: list[str] | None = None, store: str | None = None, alias: str | None = None
) -> Settings:
    """Settings from the config file and environment, with the flow's parameters on top."""
    overrides: dict = {"store": {"location": store}, "alias": alias}
    if sources:
        overrides["sources"] = [{"path": path} for path in sources]
    return Settings.load(config, overrides=overrides)


def summary_headline(summary: BuildSummary) -> str:
    """One line for logs and the artifact description."""
    counts = summary.counts
    verdict = "promoted" if summary.promoted else "not promoted"
    return (
        f"{summary.alias} {summary.version}: {counts.documents_indexed}/{counts.documents_seen} documents "
        f"indexed, {counts.documents_failed} failed, {counts.chunks} chunks in {summary.timings.total:.1f}s; "
        f"{verdict}: {summary.reason}"
    )


def publish_summary(summary: BuildSummary) -> None:
    """The run summary as a Markdown artifact, keyed per alias so the UI shows its history."""
    rows = [
        f"| documents seen | {summary.counts.documents_seen} |",
        f"| documents indexed | {summary.counts.documents_indexed} |",
        f"| documents failed | {summary.counts.documents_failed} |",
        f"| chunks | {summary.counts.chunks} |",
        f"| promoted | {'yes' if summary.promoted else 'no'}: {summary.reason} |",
        f"| live | {summary.live or '-'} (was {summary.previous or '-'}) |",
        f"| deleted by retention | {', '.join(summary.deleted) or '-'} |",
    ]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.model_dump().items())
    failures = "\n".join(f"| {f.doc_id} | {f.stage} | {f.reason.replace('|', '/')} |" for f in summary.failures)
    markdown = "\n".join(
        [
            f"# Reindex {summary.alias}: {summary.version}",
            "",
            "| | |",
            "|---|---|",
            *rows,
            "",
            f"Timings: {timings}",
        ]
        + (["", "## Failed documents", "", "| document | stage | reason |", "|---|---|---|", failures] if failures else [])
    )
    create_markdown_artifact(
        markdown=markdown,
        key=f"reindex-{summary.alias}".replace("_", "-").lower(),
        description=summary_headline(summary),
    )


