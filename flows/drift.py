"""The drift-check flow: is the live build of an alias still what was promoted?

May touch: nothing in the store (it reads the live build, its manifests, the query log). It publishes
the ``drift-<alias>`` artifact and, on drift, emits the Prefect event ``ragops.drift.detected`` for
the resource ``ragops.alias.<alias>``. The ``full-rebuild`` deployment's trigger (prefect.yaml) starts
a rebuild on that event, which is promoted only if it passes the gate.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from evals.models import DriftReport
from evals.readonly import check_live_build
from flows.artifacts import artifact_key
from flows.locking import alias_lock
from flows.runs import alias_run_name, load_golden, load_settings, refusals_fail_the_run, yield_cpu
from flows.steps import check_drift, load_or_take_model
from rag.config import config_file
from rag.runtime import configure_offline_runtime
from rag.store import open_store, require_store

#: the event a drift emits; automations match it with the resource id ``ragops.alias.<alias>``
DRIFT_EVENT = "ragops.drift.detected"

@flow(name="drift-check", flow_run_name=alias_run_name("drift-check"))
@refusals_fail_the_run
def drift_check(
    config: str | None = None,
    alias: str | None = None,
    store: str | None = None,
    golden: str | None = None,
    emit: bool = True,
) -> dict:
    """Check the live build for drift: golden-query re-scoring, model fingerprint, compatibility
    pre-flight, and the distribution of recent queries. Each check reports its figure and threshold.

    Args:
        config: path to ragops.yaml; unset reads ``$RAGOPS_CONFIG`` or ./ragops.yaml if present.
        alias: alias instead of the configured one.
        store: store location instead of the configured one.
        golden: golden set file instead of ``evaluation.golden``.
        emit: emit ``ragops.drift.detected`` when a check finds drift (starts the rebuild automation).

    Returns:
        The drift report (``DriftReport`` as JSON, documented in docs/cli.md under ``ragops drift``).
    """
    configure_offline_runtime()
    logger = get_run_logger()
    settings = load_settings(config, store=store, alias=alias, golden=golden)
    golden_set = load_golden(settings)
    yield_cpu(settings)  # yield to a query service
    embedder = load_or_take_model(settings.embedding)
    require_store(settings.store)  # before the lock: a mistyped folder must not become an empty store
    with alias_lock(settings.store, settings.alias), open_store(settings.store) as index_store:
        report = check_live_build(index_store, settings, golden_set, embedder, check=check_drift)
    publish_drift(report)
    for check in report.checks:
        (logger.warning if check.status == "drift" else logger.info)("%s: %s: %s", check.name, check.status,
                                                                      check.message)
    logger.info("%s", report.headline)
    if report.drifted and emit:
        emit_drift_event(report, config_file(config))
    return report.model_dump(mode="json")


def emit_drift_event(report: DriftReport, config: Path | None) -> None:
    """Tell Prefect's automations that an alias drifted (the full-rebuild deployment listens).

    The payload names the configuration the check used, so the rebuild it starts builds the same
    alias from the same sources.
    """
    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"ragops.alias.{report.alias}", "prefect.resource.name": report.alias},
        payload={"alias": report.alias, "config": str(config.resolve()) if config else "",
                 "live": report.live, "version": report.version,
                 "drifted": [c.name for c in report.checks if c.status == "drift"],
                 "messages": [c.message for c in report.checks if c.status == "drift"]},
    )


def publish_drift(report: DriftReport) -> None:
    """One row per check: status, figure, baseline, threshold and message."""
    rows = [
        {"check": c.name, "status": c.status, "value": None if c.value is None else round(c.value, 5),
         "baseline": None if c.baseline is None else round(c.baseline, 5), "threshold": c.threshold,
         "message": c.message}
        for c in report.checks
    ]
    create_table_artifact(table=rows, key=artifact_key("drift", report.alias), description=report.headline)
