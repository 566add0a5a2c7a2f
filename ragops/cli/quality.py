"""Commands that measure the live index: freshness, eval, drift."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ragops import output
from ragops.cli.errors import emit_report
from ragops.cli.flowrun import (
    check_build,
    golden_set,
    load_while_api_starts,
    stdout_to_stderr,
    store_for_flow,
    yield_cpu,
)
from ragops.cli.options import Common, GoldenOption, common_options
from ragops.cli.prefect_api import early_prefect_api

DocumentsFlag = Annotated[bool, typer.Option("--documents", help="Also list every document's freshness record.")]


@common_options
def freshness(*, documents: DocumentsFlag = False, common: Common) -> None:
    """How far the live index lags behind each source, against each source's max_staleness.

    Reads the freshness the last reindex recorded (no listing is done here); staleness is measured
    up to now. Exit code 5 when a source breaches its limit.
    """
    settings = common.settings()
    from datetime import datetime, timezone

    from rag.index.freshness import breach, read_freshness
    from rag.models import utc_now
    from rag.store import open_store
    from rag.store.names import version_of
    from ragops.contracts import DocumentRow, FreshnessResponse, SourceFreshnessRow

    with open_store(settings.store, create=False) as index_store:
        live = index_store.alias_target(settings.alias)
        assessed = read_freshness(index_store, settings.alias, settings.sources, utc_now())
        records = index_store.read_records(live) if live and documents else {}
    response = FreshnessResponse(
        alias=settings.alias,
        live=live,
        sources=[
            SourceFreshnessRow(**a.state.model_dump(), staleness_seconds=a.staleness_seconds,
                               max_staleness_seconds=a.max_staleness_seconds, breach=a.breach, message=a.message)
            for a in assessed
        ],
        documents=[
            DocumentRow(**r.model_dump(), build=version_of(live),
                        modified_at=datetime.fromtimestamp(r.modified, tz=timezone.utc).isoformat())
            for r in records.values()
        ] if documents else None,
    )
    emit_report(response, common.json_output, output.render_freshness, breach(assessed))


BuildOption = Annotated[
    Optional[str], typer.Option("--version", "-v", help="Build to score. Default: the live one.", show_default=False)
]
NoCompareFlag = Annotated[
    bool, typer.Option("--no-compare", help="Do not score the live build to apply the gate's rules.")
]


@common_options
def evaluate(
    *, version: BuildOption = None, golden: GoldenOption = None, no_compare: NoCompareFlag = False, common: Common
) -> None:
    """Score a build on the golden set: nDCG, recall, precision, hit rate, MRR, MAP and RAGAS context metrics.

    Prints the means and the worst queries (--json: every per-query row). For a build that is not
    live, the live build is scored too and the gate's rules applied: would it pass? Reads only. With a
    Prefect API configured or a Prefect server running for this Prefect home, runs the `evaluate` flow
    on it and publishes the `eval-<alias>` artifact; otherwise scores here, without Prefect. Either way
    the evaluation is recorded in the alias's audit trail.
    """
    settings = common.settings(golden=golden)
    yield_cpu(settings)  # from here on (a scheduled run: the query service keeps the CPU while this loads)
    golden_queries = golden_set(settings, required=True)  # what a person can get wrong, before anything starts
    check_build(settings, version)
    with early_prefect_api(ephemeral=False) as api:  # a configured or running API; none is started
        from ragops.contracts import EvalResponse

        with stdout_to_stderr():
            embedder = load_while_api_starts(settings, scoring=True)  # used for a build made with this model
            if not api.available:
                from ragops.cli.readonly import evaluate_here

                result = evaluate_here(settings, golden_queries, embedder, version, compare=not no_compare,
                                       quiet=common.json_output)
            else:
                from flows.evaluate import evaluate as evaluate_flow
                from flows.runs import given

                with api.serving(), store_for_flow(common.store) as flow_store, \
                        given(settings, golden_queries, embedder):
                    result = evaluate_flow(config=common.config_param, version=version,
                                           golden=str(golden.resolve()) if golden else None, store=flow_store,
                                           alias=settings.alias, compare=not no_compare)
    output.emit(EvalResponse.model_validate(result), common.json_output, output.render_eval)


NoEventFlag = Annotated[
    bool, typer.Option("--no-event", help="Do not emit ragops.drift.detected (which can start a rebuild).")
]


@common_options
def drift(*, golden: GoldenOption = None, no_event: NoEventFlag = False, common: Common) -> None:
    """Check the live build for drift: golden re-scoring, model fingerprint, compatibility, query distribution.

    Each check prints its figure and threshold. Exit code 6 when any check finds drift. With a Prefect
    API configured or a Prefect server running for this Prefect home, runs the `drift-check` flow on it
    (artifact `drift-<alias>`), and on drift emits the event that starts the full-rebuild deployment;
    otherwise checks here, without Prefect, and emits nothing (nothing would receive it). Either way the
    check is recorded in the alias's audit trail.
    """
    settings = common.settings(golden=golden)
    yield_cpu(settings)  # from here on (a scheduled run: the query service keeps the CPU while this loads)
    golden_queries = golden_set(settings)  # what a person can get wrong, before anything starts
    check_build(settings)
    with early_prefect_api(ephemeral=False) as api:  # a configured or running API; none is started
        from rag.errors import DriftDetected
        from ragops.contracts import DriftResponse

        with stdout_to_stderr():
            embedder = load_while_api_starts(settings, scoring=golden_queries is not None)
            if not api.available:
                from ragops.cli.readonly import drift_here

                result = drift_here(settings, golden_queries, embedder, emit=not no_event,
                                    quiet=common.json_output).model_dump(mode="json")
            else:
                from flows.drift import drift_check
                from flows.runs import given

                with api.serving(), store_for_flow(common.store) as flow_store, \
                        given(settings, golden_queries, embedder):
                    result = drift_check(config=common.config_param, alias=settings.alias, store=flow_store,
                                         golden=str(golden.resolve()) if golden else None, emit=not no_event)
    report = DriftResponse.model_validate(result)
    failure = DriftDetected("drift: " + "; ".join(
        c.message for c in report.checks if c.status == "drift")) if report.drifted else None
    emit_report(report, common.json_output, output.render_drift, failure)
