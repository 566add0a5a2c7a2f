"""The freshness-check flow: how far the live index lags behind each source, against its max_staleness.

May touch: nothing in the store (it reads the freshness ledger the last reindex wrote). It publishes
the ``freshness-<alias>`` artifact and ends Failed when a source breaches its limit, so a Prefect
automation (or the run list) shows the breach. It does not list sources: the scheduled ``refresh``
deployment does that, and a refresh that stops running is exactly what this check catches.

It takes no alias lock: it only reads, and a staleness alarm must not queue behind the build it watches
(or a run paused for approval, which holds the lock up to ``gate.approval_timeout``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.artifacts import publish_freshness
from flows.runs import alias_run_name, load_settings, refusals_fail_the_run
from flows.steps import read_freshness
from rag.index.freshness import breach
from rag.models import utc_now
from rag.runtime import configure_offline_runtime
from rag.store import open_store, require_store


@flow(name="freshness-check", flow_run_name=alias_run_name("freshness-check"))
@refusals_fail_the_run
def freshness_check(config: str | None = None, alias: str | None = None, store: str | None = None) -> list[dict]:
    """Report each source's staleness (up to now) against its ``max_staleness``; fail on a breach.

    Args:
        config: path to ragops.yaml; unset reads ``$RAGOPS_CONFIG`` or ./ragops.yaml if present.
        alias: alias instead of the configured one.
        store: store location instead of the configured one.

    Returns:
        One row per source (name, documents, staleness and limit in seconds, breach, message).

    Raises:
        FreshnessBreach: a source is staler than its max_staleness.
    """
    configure_offline_runtime()
    logger = get_run_logger()
    settings = load_settings(config, store=store, alias=alias)
    require_store(settings.store)  # before the lock: a mistyped folder must not become an empty store
    with open_store(settings.store) as index_store:
        assessed = read_freshness(index_store, settings.alias, settings.sources, utc_now())
    rows = publish_freshness(settings.alias, assessed)
    for s in assessed:
        (logger.warning if s.breach else logger.info)("%s: %s", s.state.name, s.message)
    refusal = breach(assessed)
    if refusal is not None:
        raise refusal
    return rows
