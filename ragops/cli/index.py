"""Commands that build and move the index: reindex, status, rollback, unlock, promote, migrate."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ragops import output
from ragops.cli.flowrun import (
    check_reindex_inputs,
    check_store_free,
    golden_set,
    load_while_api_starts,
    stdout_to_stderr,
    store_for_flow,
    yield_cpu,
)
from ragops.cli.options import Common, GoldenOption, common_options
from ragops.cli.prefect_api import early_prefect_api


@common_options
def reindex(
    *,
    source: Annotated[
        Optional[list[str]],
        typer.Option("--source", "-s", help="Folder or s3://bucket/prefix to index (repeatable), instead of the "
                     "configured sources. Sources left out keep their documents.", show_default=False),
    ] = None,
    forget_source: Annotated[
        Optional[list[str]],
        typer.Option("--forget-source", help="Delete the documents of this source (by name, repeatable): one "
                     "this run does not list, e.g. removed from the configuration.", show_default=False),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Re-parse every document instead of starting from the live build.")
    ] = False,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Build and keep the version, but leave the alias where it is.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (what would be parsed or deleted, and why) and stop: "
                           "nothing is built, locked or written, and Prefect is not started.")
    ] = False,
    golden: GoldenOption = None,
    common: Common,
) -> None:
    """Bring the index up to date with its sources (incrementally) and promote the new build if sound.

    Runs the `reindex` Prefect flow in this process (no server needed) and prints a run summary:
    documents new/changed/unchanged/deleted/failed, chunks embedded and reused, timings, the new
    version, whether it was promoted and why, and each source's freshness. Nothing changed: no build.
    """
    settings = common.settings(sources=source, golden=golden)
    check_reindex_inputs(settings)  # everything a person can get wrong, before anything starts
    if dry_run:
        output.emit(_plan(settings, full=full, forget=forget_source or []), common.json_output, output.render_plan)
        return
    yield_cpu(settings)  # from here on, and before the Prefect API starts: it inherits the priority
    golden_queries = golden_set(settings)  # before the store: a bad golden set must leave no store behind
    check_store_free(settings)
    with early_prefect_api() as api:  # boots beside the imports and the model load below (docs/benchmarks.md)
        from flows.reindex import reindex as reindex_flow
        from flows.runs import given
        from ragops.contracts import ReindexResponse

        with stdout_to_stderr():
            embedder = load_while_api_starts(settings, scoring=False)  # a no-change run scores nothing
            with api.serving(), store_for_flow(common.store) as flow_store, given(settings, golden_queries, embedder):
                summary = reindex_flow(
                    config=common.config_param,
                    full_rebuild=full,
                    sources=source or None,
                    store=flow_store,
                    alias=common.alias,
                    promote=not no_promote,
                    golden=str(golden.resolve()) if golden else None,
                    forget_sources=forget_source or None,
                )
    output.emit(ReindexResponse.model_validate(summary), common.json_output, output.render_summary)


def _plan(settings, *, full: bool, forget: list[str]):
    """``reindex --dry-run``: list the sources and plan against the store as the flow would; read only."""
    import connectors
    from rag.embed.embedder import load_embedder
    from rag.errors import ConfigError
    from rag.index.build import StartingPoint, plan_against_store
    from rag.index.plan import explain, plan_build, require_a_listing
    from rag.index.result import planned_counts
    from rag.ingest.chunking import Chunker
    from rag.ingest.parsing import describe_parsing
    from rag.ingest.redaction import redactors_for
    from rag.models import utc_now
    from rag.store import open_store, require_store
    from rag.store.names import version_of
    from ragops.contracts import ReindexPlanResponse

    redactors = redactors_for(settings.sources)
    with stdout_to_stderr():
        embedder = load_embedder(settings.embedding)  # the fingerprint and tokenizer decide the base
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens)
    policy = {**chunker.describe(), **describe_parsing(settings.pipeline.text_parser)}
    listings = [connectors.list_source(source) for source in settings.sources]
    require_a_listing(listings)
    try:
        require_store(settings.store)
    except ConfigError:  # no store yet: everything is new, and nothing is created to find that out
        start = StartingPoint(live=None, plan=plan_build(listings, None, {}, utc_now()))
        start.plan.full = f"there is no store at {settings.store.location} yet"
    else:
        with open_store(settings.store, create=False) as store:
            start = plan_against_store(store, settings.alias, listings, embedder.fingerprint, policy,
                                       full_rebuild=full, now=utc_now(),
                                       redaction={n: r.policy for n, r in redactors.items()}, forget=forget)
    return ReindexPlanResponse(
        alias=settings.alias, live=start.live, base=start.plan.base, full_build=start.plan.full,
        would_build=not start.nothing_changed and start.regate is None,
        regate=version_of(start.regate.collection) if start.regate else None,
        counts=planned_counts(start.plan), documents=explain(start.plan), notes=start.plan.notes,
    )


@common_options
def status(*, common: Common) -> None:
    """Show where the alias points and every build of it, with its manifest."""
    settings = common.settings()
    from rag.errors import DamagedBuildError
    from rag.index.versions import list_versions
    from rag.secrets import redact_url
    from rag.store import open_store
    from ragops.contracts import StatusResponse

    with open_store(settings.store, create=False) as index_store:
        live = index_store.alias_target(settings.alias)
        builds = list_versions(index_store, settings.alias)
        try:
            records = index_store.read_records(live) if live else {}
        except DamagedBuildError as exc:  # shown on the live build's row; the rest of the status stands
            records = {}
            for build in builds:
                if build.live and not build.damage:
                    build.damage = str(exc)
    response = StatusResponse(
        alias=settings.alias, store=redact_url(settings.store.location), live=live, versions=builds,
        quarantined=[r for r in records.values() if r.quarantine],
    )
    output.emit(response, common.json_output, output.render_status)


SinceOption = Annotated[
    Optional[str],
    typer.Option("--since", help="Only events at or after this time: ISO 8601 (2026-12-01, 2026-12-01T09:30Z) "
                 "or an age (30m, 12h, 7d).", show_default=False),
]


@common_options
def audit(*, since: SinceOption = None, common: Common) -> None:
    """The alias's audit trail: every build, evaluation, gate verdict, approval, promotion, rollback,
    retention delete and drift check, with when, by whom and why (oldest first)."""
    settings = common.settings()
    from rag.index.audit import parse_since, read_trail
    from rag.store import open_store
    from ragops.contracts import AuditResponse

    start = parse_since(since) if since else None
    with open_store(settings.store, create=False) as index_store:
        events = read_trail(index_store, settings.alias, since=start)
    response = AuditResponse(alias=settings.alias, since=start.isoformat() if start else None, events=events)
    output.emit(response, common.json_output, output.render_audit)


@common_options
def rollback(
    *,
    to: Annotated[
        Optional[str],
        typer.Option("--to", help="Version to go back to. Default: the build the live one replaced.",
                     show_default=False),
    ] = None,
    common: Common,
) -> None:
    """Point the alias back at the previous build (compare-and-swap; nothing is deleted)."""
    settings = common.settings()
    from rag.index.versions import rollback as rollback_alias
    from rag.store import open_store
    from rag.store.names import version_of
    from ragops.contracts import RollbackResponse

    with open_store(settings.store, create=False) as index_store:
        before, after = rollback_alias(index_store, settings.alias, to)
    response = RollbackResponse(alias=settings.alias, from_=before, to=after, from_version=version_of(before),
                                to_version=version_of(after))
    output.emit(response, common.json_output, output.render_rollback)


BreakLeaseFlag = Annotated[
    bool, typer.Option("--force", help="Free a server store's lease even though its holder looks alive.")
]


@common_options
def unlock(*, force: BreakLeaseFlag = False, common: Common) -> None:
    """Show who holds the alias's lock (one run per alias), and free it if its holder is gone.

    An embedded store's lock is freed by the system the moment its holder exits, so there is never a
    stale one to free: a live holder is named with the process to stop. A server store's lease is
    freed when its holder's process is gone (same host) or its lease expired; `--force` frees it anyway.
    """
    settings = common.settings()
    from rag.store.locks import AliasLock
    from ragops.contracts import UnlockResponse

    lock = AliasLock(settings.store, settings.alias)
    freed = lock.break_stale(force=force)
    output.emit(UnlockResponse(alias=settings.alias, kind=lock.kind, freed=freed), common.json_output,
                output.render_unlock)


@common_options
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
    common: Common,
) -> None:
    """Point the alias at a kept build (compare-and-swap). A build its gate rejected needs --force --reason.

    A complete build that was never gated (its run died before the gate) is gated first, as a reindex
    would gate it: scored with the live build on the golden set, the verdict recorded in its manifest,
    promoted only on a pass. One that cannot be gated needs --force --reason. The override is recorded
    in the build's manifest (`ragops status` shows it); `ragops rollback` undoes it.
    """
    settings = common.settings()
    from rag.index.versions import needs_gate, promote_version
    from rag.store import open_store
    from ragops.contracts import PromoteResponse

    with open_store(settings.store, create=False) as index_store:
        ungated = None if force else needs_gate(index_store, settings.alias, version)
        if ungated is not None:
            from flows.evaluate import gate_for_promotion  # loads evals and the model: only when needed

            with stdout_to_stderr():
                gate_for_promotion(index_store, settings, ungated)
        manifest = promote_version(index_store, settings.alias, version, force=force, reason=reason)
    event = manifest.promotions[-1]
    response = PromoteResponse(
        alias=settings.alias, version=manifest.version, collection=manifest.collection, replaced=event.replaced,
        forced=event.forced, reason=event.reason, state=manifest.state, gated_now=ungated is not None,
        gate=manifest.gate,
    )
    output.emit(response, common.json_output, output.render_promote)


@common_options
def migrate(*, common: Common) -> None:
    """Carry a store made by an earlier ragops (qdrant-client's local mode) over to Qdrant Edge.

    Copies every build, manifest, alias, embedding cache, ledger and query log into a new store made
    beside it (<folder>.migrating), then renames that into place; the old folder is kept beside it as
    <folder>.local-mode. Until then every other command refuses the store; a rerun after a kill finishes.
    """
    settings = common.settings()
    from rag.store.migrate import migrate_store
    from ragops.contracts import MigrateResponse

    report = migrate_store(settings.store.location)
    output.emit(MigrateResponse.model_validate(report.model_dump()), common.json_output, output.render_migration)
