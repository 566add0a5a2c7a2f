"""The reindex flow: bring the alias's index up to date with its sources, incrementally, and promote.

May touch: the configured sources (read only); the store's collections of the alias (creates one build
and its document table, deletes old unaliased builds by retention), its embedding cache and freshness
ledger; and the alias (one compare-and-swap move). Never writes to or deletes the live collection.

The flow only orchestrates: each line is a step (flows/steps.py), and every decision is a plain
function of rag/ or evals/ (planning in rag/index/plan.py, the run's result in rag/index/result.py, the gate in
evals/gate.py). ``manual_reindex`` (flows/manual.py) starts it from a form in the Prefect UI.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

import connectors
from evals.evaluate import QueryEmbedders
from evals.golden import GoldenSet
from flows import steps  # called as steps.X: the `promote` parameter would hide the task imported by name
from flows.approval import ask_approval
from flows.artifacts import publish_summary, publish_verdict
from flows.fanout import index_on_dask
from flows.locking import alias_lock
from flows.runs import alias_run_name, load_golden, load_settings, refusals_fail_the_run, yield_cpu
from rag.config import Settings
from rag.embed.embedder import Embedder
from rag.index import build, result
from rag.index.batches import batched, index_batches
from rag.index.cache import EmbeddingCache
from rag.index.freshness import assess
from rag.index.journal import ParseJournal
from rag.index.plan import BuildPlan, require_a_listing
from rag.index.progress import BuildProgress, Pulse, Throughput, reporting
from rag.ingest.chunking import Chunker
from rag.ingest.parsing import describe_parsing, parser_group
from rag.ingest.redaction import Redactor, best_effort_notes, redactors_for
from rag.ingest.sandbox import ParseSandbox, shared_sandbox
from rag.models import BuildSummary, Manifest, utc_now
from rag.runtime import configure_offline_runtime
from rag.store import IndexStore, open_store
from rag.store.names import version_of

#: documents per copy batch when carrying unchanged documents (no parsing: large batches are cheap)
CARRY_BATCH = 256


@flow(name="reindex", flow_run_name=alias_run_name("reindex"))
@refusals_fail_the_run
def reindex(
    config: str | None = None,
    full_rebuild: bool = False,
    sources: list[str] | None = None,
    store: str | None = None,
    alias: str | None = None,
    promote: bool = True,
    golden: str | None = None,
    forget_sources: list[str] | None = None,
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
        forget_sources: sources to delete the documents of. A source the live build holds but this run
            does not list is otherwise kept as it was (leaving a source out deletes nothing).

    Returns:
        The run summary (``BuildSummary`` as JSON; documented in docs/cli.md).

    Raises:
        PromotionRefused: the build completed but failed a sanity check; the alias did not move.
        FreshnessBreach: a source is staler than its max_staleness (after everything else was done).
        Both carry the run summary in ``details["summary"]``; the run ends Failed with their one line.
    """
    configure_offline_runtime()
    settings = load_settings(config, sources=sources, store=store, alias=alias, golden=golden)
    settings.require_sources()
    yield_cpu(settings)  # yield to a query service
    golden_set = load_golden(settings)  # first: a typo in it should cost milliseconds, not a build
    redactors = redactors_for(settings.sources)  # likewise a missing redaction key
    if golden_set is None:
        get_run_logger().warning("no golden set (evaluation.golden): promotion is gated on sanity checks only")
    with alias_lock(settings.store, settings.alias):  # one run per alias at a time: a second one waits here
        return _reindex(settings, golden_set, redactors, full_rebuild=full_rebuild, promote=promote,
                        forget=forget_sources or []).model_dump(mode="json")


def _reindex(settings: Settings, golden: GoldenSet | None, redactors: dict[str, Redactor], *, full_rebuild: bool,
             promote: bool, forget: list[str]) -> BuildSummary:
    """The whole operation, while holding the alias's lock: list, plan, build, gate, promote, retain, record."""
    logger, started = get_run_logger(), time.perf_counter()
    embedder = steps.load_or_take_model(settings.embedding)
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    policy = {**chunker.describe(), **describe_parsing(settings.pipeline.text_parser)}  # what decides chunks
    progress = BuildProgress()
    with open_store(settings.store) as store:
        listings = [steps.list_source(source) for source in settings.sources]
        require_a_listing(listings)
        progress.timings.list = time.perf_counter() - started
        start = steps.plan_against_store(store, settings.alias, listings, embedder.fingerprint, policy,
                                         full_rebuild=full_rebuild, now=utc_now(),
                                         redaction={name: r.policy for name, r in redactors.items()}, forget=forget)
        start.plan.notes.extend(best_effort_notes(redactors))
        _log_plan(start.plan)
        if start.nothing_changed:
            outcome = result.nothing_changed(start.plan, start.base_manifest)
        else:
            if start.regate is not None:  # a rejected build already is what this run would build: gate it again
                candidate = start.regate
            else:
                progress.counts = result.planned_counts(start.plan)
                sandbox = _start_sandbox(settings, start.plan)
                candidate = _build(store, settings, start.plan, embedder, chunker, policy, sandbox, progress,
                                   redactors)
            gating = time.perf_counter()
            compared_to = None if start.live_damage else start.live  # a damaged build is no yardstick
            outcome = _gate(store, settings, candidate, compared_to, start.deleted_from_live, golden, embedder,
                            promote=promote)
            if start.regate is not None:
                outcome = result.regated(outcome)
            if outcome.promoted:
                steps.promote(store, settings.alias, candidate.collection, expected=start.live, by="reindex",
                              reason=outcome.reason)
            progress.timings.promote = time.perf_counter() - gating
        # Every run, changes or not: it also clears what killed runs left (husks, orphaned tables).
        deleted = steps.apply_retention(store, settings.alias, settings.retention,
                                        protect={outcome.manifest.collection}, grace=settings.store.grace)
        if deleted or outcome.built:
            steps.prune_caches(store, settings.alias)
        states = steps.record_freshness(store, settings.alias, settings.sources, listings)
    progress.timings.total = time.perf_counter() - started
    summary = result.summarize(settings.alias, start.plan, outcome, timings=progress.timings,
                               failures=progress.failures, previous=start.live, deleted=deleted, sources=states,
                               redacted=progress.redacted)
    assessed = assess({s.name: s for s in states}, settings.sources, utc_now())
    publish_summary(summary, assessed)
    logger.info("%s", result.headline(summary))
    refusal = result.refusal(summary, assessed, requested=promote)
    if refusal is not None:
        raise refusal
    return summary


def _build(store: IndexStore, settings: Settings, plan: BuildPlan, embedder: Embedder, chunker: Chunker,
           policy: dict, sandbox: ParseSandbox, progress: BuildProgress,
           redactors: dict[str, Redactor]) -> Manifest:
    """Write a new build from the plan: begin, carry, prepare and write, finish. Its manifest tells the truth
    whatever happens (a failure marks it failed)."""
    logger = get_run_logger()
    manifest = steps.begin_build(store, settings.alias, settings.sources, embedder.fingerprint, policy,
                                 plan.base, redactors)
    with build.failing_on_error(store, manifest):
        for batch in batched(plan.carry, CARRY_BATCH):
            progress.add(steps.carry_documents(store, plan.base, manifest.collection, batch))
        if plan.carry:
            logger.info("carried %d unchanged documents (%d chunks)", len(plan.carry), progress.counts.chunks)
        batches = list(batched(plan.work, settings.pipeline.batch_documents))
        cache = EmbeddingCache(store, settings.alias, embedder.fingerprint)
        pulse = Pulse()
        if settings.pipeline.task_runner == "dask":
            reports = index_on_dask(store, settings, manifest, batches, embedder, chunker, cache, sandbox, redactors)
        else:
            pipeline = settings.pipeline
            reports = index_batches(
                store, manifest, batches, embedder, chunker, cache, connectors.Fetcher(settings.sources),
                max_bytes=int(pipeline.max_file_mb * 1_000_000), sandbox=sandbox,
                journal=ParseJournal(store, settings.alias), max_attempts=pipeline.max_parse_attempts,
                prepare=steps.prepare_batch, write=steps.write_batch, redactors=redactors, pulse=pulse,
                retry_backoff=pipeline.parse_retry_backoff)
        meter = Throughput(len(plan.work))
        # Every 10 s, also inside a long batch: documents prepared and chunks embedded so far.
        with reporting(meter, pulse, lambda line: logger.info("%s (%d failed)", line,
                                                              progress.counts.documents_failed)):
            done = 0
            for items, report in zip(batches, reports):
                progress.add(report)
                done += len(items)
                pulse.documents = max(pulse.documents, done)  # on Dask, whole batches are the only count
                pulse.chunks = max(pulse.chunks, progress.counts.chunks_embedded)
        if plan.work:
            logger.info("%s (%d failed)", meter.line(len(plan.work), progress.counts.chunks_embedded),
                        progress.counts.documents_failed)
        return steps.finish_build(store, manifest, progress)


def _gate(store: IndexStore, settings: Settings, candidate: Manifest, live: str | None, deleted_from_live: int,
          golden: GoldenSet | None, embedder: Embedder, *, promote: bool) -> result.Outcome:
    """Evaluate the candidate beside the live build, record the verdict, ask for approval when required."""
    embedders = QueryEmbedders(settings.evaluation, settings.embedding, embedder)
    gate, report, baseline = steps.gate_candidate(store, candidate, live, settings.gate, settings.evaluation, golden,
                                                  embedders, deleted_from_live=deleted_from_live)
    evaluation = report.record if report else None
    candidate = steps.record_verdict(store, candidate, gate, evaluation)  # recorded before any wait
    publish_verdict(settings.alias, candidate.version, gate, report, baseline)
    if result.asks_approval(gate, requested=promote, required=settings.gate.require_approval):
        gate = ask_approval(store, candidate, gate, settings.gate.approval_timeout.total_seconds())
        candidate = steps.record_verdict(store, candidate, gate, evaluation)
    return result.gated(candidate, gate, evaluation, requested=promote)


def _start_sandbox(settings: Settings, plan: BuildPlan) -> ParseSandbox:
    """This process's parsing sandbox, started now on the local runner with the parsers the plan's
    documents need (on Dask, each worker has its own)."""
    sandbox = shared_sandbox(settings.pipeline)
    if settings.pipeline.task_runner == "local":
        text_parser = settings.pipeline.text_parser
        groups = {parser_group(item.ref.doc_id, text_parser) for item in plan.work}
        sandbox.start(groups=groups | {"chunking"} if groups else groups)  # it cuts sections too
    return sandbox


def _log_plan(plan: BuildPlan) -> None:
    logger = get_run_logger()
    for note in plan.notes:
        logger.warning(note)
    logger.info("%d documents listed; plan against %s: %d new, %d changed, %d retried, %d unchanged, %d deleted",
                plan.listed, version_of(plan.base) if plan.base else "nothing (full build)", plan.new, plan.changed,
                plan.retried, plan.unchanged, len(plan.deleted))
