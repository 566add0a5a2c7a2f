"""The reindex flow: bring the alias's index up to date with its sources, incrementally, and promote.

May touch: the configured sources (read only); the store's collections of the alias (creates one build
and its document table, deletes old unaliased builds by retention), its embedding cache and freshness
ledger; and the alias (one compare-and-swap move). Never writes to or deletes the live collection.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

import connectors
from evals.evaluate import QueryEmbedders
from evals.gate import gate_candidate
from evals.golden import load_golden_set
from flows.approval import await_approval
from flows.artifacts import artifact_key, publish_evaluation, publish_freshness, publish_gate
from flows.fanout import index_on_dask
from flows.locking import alias_lock
from flows.runs import alias_run_name, load_settings
from rag import build, freshness, versions
from rag.cache import EmbeddingCache, prune_caches
from rag.chunking import Chunker
from rag.config import Settings
from rag.embedding import load_embedder
from rag.errors import ConfigError, FreshnessBreach, GateFailed, PromotionRefused, RagopsError, SourceError
from rag.journal import ParseJournal
from rag.models import BuildSummary, Counts, GateCheck, utc_now
from rag.runtime import configure_offline_runtime
from rag.sandbox import ParseSandbox, shared_sandbox
from rag.store import IndexStore, version_of

#: documents per copy batch when carrying unchanged documents (no parsing: large batches are cheap)
CARRY_BATCH = 256


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
# Both idempotent (deterministic point ids, cached vectors): a retry after a store hiccup is safe.
carry_documents = task(
    build.carry_documents, name="carry-documents", retries=2, retry_delay_seconds=[5, 30],
    retry_condition_fn=_transient, cache_policy=NO_CACHE,
)
index_batch = task(
    build.index_batch, name="index-batch", retries=2, retry_delay_seconds=[5, 30],
    retry_condition_fn=_transient, cache_policy=NO_CACHE,
)
finish_build = task(build.finish_build, name="finish-build", cache_policy=NO_CACHE)
gate_build = task(gate_candidate, name="evaluate-and-gate", cache_policy=NO_CACHE)
promote_build = task(versions.promote, name="promote", cache_policy=NO_CACHE)
apply_retention = task(versions.apply_retention, name="apply-retention", cache_policy=NO_CACHE)


@flow(name="reindex", flow_run_name=alias_run_name("reindex"))
def reindex(
    config: str | None = None,
    full_rebuild: bool = False,
    sources: list[str] | None = None,
    store: str | None = None,
    alias: str | None = None,
    promote: bool = True,
    golden: str | None = None,
) -> dict:
    """Bring the index up to date with its sources; promote the new build if it is sound.

    Incremental by default: documents whose listing signal (size+mtime, S3 ETag) did not move are
    carried from the live build without parsing; new and changed ones are parsed, and only chunks
    never embedded with this model are embedded. When nothing changed, no build is made. A failing
    document is quarantined and its previous version kept; a source that cannot be listed keeps its
    documents. Each source's freshness is recorded; the run fails if one is staler than its
    ``max_staleness``.

    Args:
        config: path to ragops.yaml; unset reads ``$RAGOPS_CONFIG`` or ./ragops.yaml if present.
        full_rebuild: re-parse every document instead of starting from the live build (the
            embedding cache still supplies vectors already computed with the same model).
        sources: folders or s3://bucket/prefix URLs to index instead of the configured sources.
        store: store location (folder or Qdrant URL) instead of the configured one.
        alias: alias to build and promote instead of the configured one.
        promote: False builds and keeps the version without moving the alias.
        golden: golden set file instead of ``evaluation.golden``.

    Returns:
        The run summary (``BuildSummary`` as JSON; documented in docs/cli.md).

    Raises:
        PromotionRefused: the build completed but failed a sanity check; the alias did not move.
        FreshnessBreach: a source is staler than its max_staleness (after everything else was done).
        Both carry the run summary in ``details["summary"]``.
    """
    configure_offline_runtime()
    settings = load_settings(config, sources=sources, store=store, alias=alias, golden=golden)
    with alias_lock(settings.store, settings.alias):  # one run per alias at a time: a second one waits here
        return _reindex(settings, full_rebuild=full_rebuild, promote=promote)


class ReindexRequest(BaseModel):
    """A manual re-index, as the form of the `reindex` deployment in the Prefect UI shows it."""

    alias: str | None = Field(None, description="Alias to rebuild. Empty: the configured one.")
    sources: list[str] = Field(
        default_factory=list,
        description="Folders or s3://bucket/prefix URLs to index instead of the configured sources. Empty: "
        "the configured ones.",
    )
    full_rebuild: bool = Field(False, description="Re-parse every document instead of starting from the live build.")
    promote: bool = Field(True, description="Move the alias to the new build if it passes the gate.")
    config: str | None = Field(None, description="ragops.yaml on the worker. Empty: $RAGOPS_CONFIG, else ./ragops.yaml.")
    store: str | None = Field(None, description="Store (folder or Qdrant URL) instead of the configured one.")


@flow(name="manual-reindex", flow_run_name="manual-reindex")
def manual_reindex(request: ReindexRequest = ReindexRequest(), reason: str = "") -> dict:
    """Re-index by hand from the Prefect UI: the form's fields start the reindex flow (as a subflow).

    Args:
        request: what to re-index (every field optional).
        reason: why, for the run's log.

    Returns:
        The reindex run's summary.
    """
    get_run_logger().info("manual reindex: %s", reason or "no reason given")
    return reindex(config=request.config, full_rebuild=request.full_rebuild, sources=request.sources or None,
                   store=request.store, alias=request.alias, promote=request.promote)


def _reindex(settings: Settings, *, full_rebuild: bool, promote: bool) -> dict:
    """The reindex flow's body, run while holding the alias's slot."""
    logger = get_run_logger()
    if not settings.sources:
        raise ConfigError("no sources to index: add `sources:` to ragops.yaml or pass --source DIR")
    # Read the golden set first: a typo in it should cost milliseconds, not a build.
    golden = load_golden_set(settings.evaluation.golden) if settings.evaluation.golden else None
    if golden is None:
        logger.warning("no golden set (evaluation.golden): promotion is gated on sanity checks only")

    run_started = time.perf_counter()
    sandbox = shared_sandbox(settings.pipeline)
    if settings.pipeline.task_runner == "local":  # (on Dask, each worker parses in its own)
        sandbox.start()  # its parsers import while the model loads and the sources are listed
    return _refresh(settings, golden, sandbox, run_started, full_rebuild=full_rebuild, promote=promote)


def _refresh(settings: Settings, golden, sandbox: ParseSandbox, run_started: float, *, full_rebuild: bool,
             promote: bool) -> dict:
    """Plan, build, gate and promote, then record freshness (the rest of ``_reindex``)."""
    logger = get_run_logger()
    embedder = load_model(settings.embedding)
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    progress = build.BuildProgress()
    fetch = connectors.Fetcher(settings.sources)

    with IndexStore.open(settings.store) as index_store:
        started = time.perf_counter()
        listings = [_list_source(source) for source in settings.sources]
        progress.timings.list = time.perf_counter() - started
        if all(not listing.complete for listing in listings):
            raise SourceError("no source could be listed: " + "; ".join(l.error or "" for l in listings))
        listed = sum(len(listing.refs) for listing in listings)
        logger.info("%d documents listed from %d source(s)", listed, len(listings))

        previous = index_store.alias_target(settings.alias)
        base = None if full_rebuild else build.choose_base(index_store, settings.alias, embedder, chunker)
        base_records = index_store.read_records(base) if base else {}
        plan = build.plan_build(listings, base, base_records, utc_now())
        for note in plan.notes:
            logger.warning(note)
        progress.counts = Counts(
            documents_seen=listed + plan.kept,
            documents_new=sum(1 for w in plan.work if w.status == "new"),
            documents_changed=sum(1 for w in plan.work if w.status == "changed"),
            documents_unchanged=plan.unchanged,
            documents_deleted=len(plan.deleted),
        )
        logger.info(
            "plan against %s: %d new, %d changed, %d unchanged, %d deleted",
            version_of(base) if base else "nothing (full build)", progress.counts.documents_new,
            progress.counts.documents_changed, plan.unchanged, len(plan.deleted),
        )

        if base is not None and not plan.has_changes:
            manifest = index_store.read_manifest(base)
            progress.counts = progress.counts.model_copy(
                update={"documents_indexed": manifest.counts.documents_indexed,
                        "documents_failed": manifest.counts.documents_failed, "chunks": manifest.counts.chunks}
            )
            state, promoted, reason = "unchanged", False, f"no changes since build {manifest.version}"
            gate, evaluation = None, None
        else:
            manifest = _build(index_store, settings, embedder, chunker, plan, fetch, progress, logger, sandbox)
            started = time.perf_counter()
            live_records = base_records if base == previous else index_store.read_records(previous) if previous else {}
            manifest, gate, evaluation, promoted, reason = _gate_and_promote(
                index_store, settings, manifest, previous, golden, embedder,
                deleted_from_live=build.deleted_at_source(listings, live_records), promote=promote,
            )
            state = manifest.state
            progress.timings.promote = time.perf_counter() - started
        # Every run, changes or not: it also clears what killed runs left (husks, orphaned tables).
        deleted = apply_retention(index_store, settings.alias, settings.retention, protect={manifest.collection})
        if deleted or state != "unchanged":
            prune_caches(index_store, settings.alias)

        live = index_store.alias_target(settings.alias)
        live_records = index_store.read_records(live) if live else {}
        known = index_store.read_source_states(settings.alias)
        states = [
            freshness.update_source_state(known.get(source.name), source, listing, live_records)
            for source, listing in zip(settings.sources, listings)
        ]
        index_store.write_source_states(settings.alias, states)

    progress.timings.total = time.perf_counter() - run_started
    summary = BuildSummary(
        alias=settings.alias, version=manifest.version, collection=manifest.collection, state=state,
        base=plan.base, counts=progress.counts, failures=progress.failures, timings=progress.timings,
        promoted=promoted, reason=reason, live=live, previous=previous, deleted=deleted,
        sources=states, notes=plan.notes, gate=gate, evaluation=evaluation,
    )
    assessed = freshness.assess({s.name: s for s in states}, settings.sources, utc_now())
    publish_summary(summary, assessed)
    logger.info("%s", summary_headline(summary))
    details = {"summary": summary.model_dump(mode="json")}
    if promote and state == "rejected":
        # The first check is the build's own soundness; anything after it is the bar it did not clear.
        error = GateFailed if gate is not None and gate.checks[0].passed else PromotionRefused
        raise error(f"build {manifest.version} was not promoted: {reason}", details=details)
    breaches = [f"{s.state.name}: {s.message}" for s in assessed if s.breach]
    if breaches:
        raise FreshnessBreach("freshness limit breached: " + " | ".join(breaches), details=details)
    return summary.model_dump(mode="json")


def _gate_and_promote(index_store, settings, manifest, previous, golden, embedder, *, deleted_from_live, promote):
    """Evaluate the candidate beside the live build, record the verdict, ask for approval, promote on a pass.

    Returns:
        (the candidate's manifest as recorded, the gate's verdict, its evaluation, promoted, reason).
    """
    embedders = QueryEmbedders(settings.evaluation, settings.embedding, embedder)
    gate, report, baseline = gate_build(index_store, manifest, previous, settings, golden, embedders,
                                        deleted_from_live=deleted_from_live)
    evaluation = report.record if report else None
    manifest = build.record_verdict(index_store, manifest, gate, evaluation)  # recorded before any wait
    _publish_verdict(settings.alias, manifest, gate, report, baseline)
    if gate.passed and promote and settings.gate.require_approval:
        with index_store.released():  # an embedded store stays usable while a person decides
            approved, why = await_approval(manifest, gate, settings.gate.approval_timeout.total_seconds())
        gate.checks.append(GateCheck(kind="approval", passed=approved, message=why))
        gate.passed = approved
        manifest = build.record_verdict(index_store, manifest, gate, evaluation)
    if not gate.passed:
        return manifest, gate, evaluation, False, gate.reason
    if not promote:
        return manifest, gate, evaluation, False, f"not requested (--no-promote); {gate.reason}"
    promote_build(index_store, settings.alias, manifest.collection, expected=previous, by="reindex",
                  reason=gate.reason)
    return manifest, gate, evaluation, True, gate.reason


def _publish_verdict(alias, manifest, gate, report, baseline) -> None:
    """The gate's checks, and the candidate's (and live build's) evaluation, as artifacts."""
    publish_gate(alias, manifest.version, gate)
    if baseline is not None:
        publish_evaluation(alias, baseline, "live build, for comparison")
    if report is not None:
        publish_evaluation(alias, report, "PASSED" if gate.passed else "FAILED: " + gate.reason)


def _list_source(source) -> build.Listing:
    """A source's complete listing, or a failed one: one source's outage never stops the others."""
    listed_at = utc_now()
    try:
        listed = list_documents(source)
    except SourceError as exc:
        return build.Listing(source=source.name, kind=source.kind, uri=source.uri, listed_at=listed_at,
                             error=str(exc))
    return build.Listing(source=source.name, kind=source.kind, uri=source.uri, listed_at=listed_at,
                         refs=listed.refs, skipped=listed.skipped, unreadable=listed.unreadable)


def _build(index_store, settings, embedder, chunker, plan, fetch, progress, logger, sandbox):
    """Write a new build from the plan; leave a truthful manifest behind whatever happens."""
    manifest = begin_build(index_store, settings, embedder, chunker, plan.base)
    cache = EmbeddingCache(index_store, settings.alias, embedder.fingerprint)
    journal = ParseJournal(index_store, settings.alias)
    try:
        for batch in build.batched(plan.carry, CARRY_BATCH):
            progress.add(carry_documents(index_store, plan.base, manifest.collection, batch))
        if plan.carry:
            logger.info("carried %d unchanged documents (%d chunks)", len(plan.carry), progress.counts.chunks)
        batches = list(build.batched(plan.work, settings.pipeline.batch_documents))
        if settings.pipeline.task_runner == "dask":
            reports = index_on_dask(index_store, settings, manifest, batches, embedder, chunker, cache, sandbox)
        else:
            reports = (
                index_batch(index_store, manifest, batch, embedder, chunker, cache, fetch,
                            max_bytes=int(settings.pipeline.max_file_mb * 1_000_000), now=utc_now(),
                            sandbox=sandbox, journal=journal, max_attempts=settings.pipeline.max_parse_attempts)
                for batch in batches
            )
        for number, report in enumerate(reports, start=1):
            progress.add(report)
            logger.info(
                "batch %d/%d: %d/%d documents, %d chunks (%d embedded), %d failed",
                number, len(batches), min(number * settings.pipeline.batch_documents, len(plan.work)),
                len(plan.work), progress.counts.chunks, progress.counts.chunks_embedded,
                progress.counts.documents_failed,
            )
        return finish_build(index_store, manifest, progress)
    except BaseException as exc:  # includes KeyboardInterrupt
        build.fail_build(index_store, manifest, f"{type(exc).__name__}: {exc}")
        raise


def summary_headline(summary: BuildSummary) -> str:
    """One line for logs and the artifact description."""
    c = summary.counts
    if summary.state == "unchanged":
        return f"{summary.alias}: {summary.reason}; {c.documents_unchanged} documents unchanged"
    verdict = "promoted" if summary.promoted else "not promoted"
    return (
        f"{summary.alias} {summary.version}: {c.documents_new} new, {c.documents_changed} changed, "
        f"{c.documents_unchanged} unchanged, {c.documents_deleted} deleted, {c.documents_failed} failed; "
        f"{c.chunks} chunks ({c.chunks_embedded} embedded) in {summary.timings.total:.1f}s; {verdict}: {summary.reason}"
    )


def publish_summary(summary: BuildSummary, assessed: list[freshness.SourceFreshness]) -> None:
    """The run summary (Markdown) and source freshness (table), keyed per alias for history in the UI."""
    c = summary.counts
    rows = [
        f"| state | {summary.state} |",
        f"| documents | {c.documents_seen} seen: {c.documents_new} new, {c.documents_changed} changed, "
        f"{c.documents_unchanged} unchanged, {c.documents_deleted} deleted |",
        f"| indexed / failed | {c.documents_indexed} / {c.documents_failed} |",
        f"| chunks | {c.chunks} ({c.chunks_embedded} embedded, {c.chunks_reused} reused) |",
        f"| promoted | {'yes' if summary.promoted else 'no'}: {summary.reason} |",
        f"| live | {summary.live or '-'} (was {summary.previous or '-'}) |",
        f"| deleted by retention | {', '.join(summary.deleted) or '-'} |",
    ]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.model_dump().items())
    failures = "\n".join(f"| {f.doc_id} | {f.stage} | {f.reason.replace('|', '/')} |" for f in summary.failures)
    markdown = "\n".join(
        [f"# Reindex {summary.alias}: {summary.version}", "", "| | |", "|---|---|", *rows, "",
         f"Timings: {timings}"]
        + [f"\n> {note}" for note in summary.notes]
        + (["", "## Quarantined documents", "", "| document | stage | reason |", "|---|---|---|", failures]
           if failures else [])
    )
    create_markdown_artifact(markdown=markdown, key=artifact_key("reindex", summary.alias),
                             description=summary_headline(summary))
    publish_freshness(summary.alias, assessed)
