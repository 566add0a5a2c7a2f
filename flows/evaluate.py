"""The evaluate flow: score one build (the live one by default) on the alias's golden set.

May touch: nothing. It reads the store (the build, its document table, and the live build when
comparing) and publishes the ``eval-<alias>`` artifact. It never writes a manifest or moves the alias.

``gate_for_promotion`` (a plain function, for ``ragops promote``) is the one exception: it gives a
kept build that was never gated (or was rejected) its verdict, through the reindex gate's own code, and records that
verdict in the build's manifest (never the live one's). It lives here, not in rag/, because gating
needs evals/ and rag/ must not depend on it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from evals.evaluate import QueryEmbedders
from evals.gate import gate_candidate
from evals.readonly import score_build
from flows.artifacts import headline, publish_evaluation
from flows.locking import alias_lock
from flows.runs import alias_run_name, given_embedder, load_golden, load_settings, refusals_fail_the_run, yield_cpu
from flows.steps import evaluate_build
from rag.config import Settings
from rag.errors import GateFailed, GoldenSetError, ModelError, PromotionRefused
from rag.index.versions import record_verdict
from rag.models import GateResult, Manifest
from rag.runtime import configure_offline_runtime
from rag.store import IndexStore, open_store, require_store
from rag.store.names import version_of


@flow(name="evaluate", flow_run_name=alias_run_name("evaluate"))
@refusals_fail_the_run
def evaluate(
    config: str | None = None,
    version: str | None = None,
    golden: str | None = None,
    store: str | None = None,
    alias: str | None = None,
    compare: bool = True,
) -> dict:
    """Measure a build's retrieval on the golden set: IR metrics, RAGAS context metrics, per-query rows.

    When the build is not the live one and ``compare`` is set, the live build is measured on the same
    golden set in the same run, and the gate's metric rules (floors, largest drops) are applied, so you
    can see whether the build would pass before promoting it.

    Args:
        config: path to ragops.yaml; unset reads ``$RAGOPS_CONFIG`` or ./ragops.yaml if present.
        version: the build to score; unset: the live one.
        golden: golden set file instead of ``evaluation.golden``.
        store: store location instead of the configured one.
        alias: alias instead of the configured one.
        compare: also score the live build and apply the gate's metric rules.

    Returns:
        ``{"alias", "version", "collection", "live", "evaluation", "per_query", "missing", "gate"}``
        (documented in docs/cli.md).
    """
    configure_offline_runtime()
    logger = get_run_logger()
    settings = load_settings(config, store=store, alias=alias, golden=golden)
    golden_set = load_golden(settings, required=True)
    yield_cpu(settings)  # yield to a query service
    # The command's model (flows.runs.given) serves every build embedded in its vector space.
    embedders = QueryEmbedders(settings.evaluation, settings.embedding, given_embedder(settings.embedding))

    require_store(settings.store)  # before the lock: a mistyped folder must not become an empty store
    with alias_lock(settings.store, settings.alias), open_store(settings.store) as index_store:
        scored = score_build(index_store, settings, golden_set, embedders, version, compare=compare,
                             evaluate=evaluate_build)
    for missing in scored.report.missing:
        logger.warning("relevant document not served by %s: %s", version_of(scored.collection), missing)
    publish_evaluation(settings.alias, scored.report, scored.verdict)
    logger.info("%s%s", headline(scored.report), f"; {scored.verdict}" if scored.verdict else "")
    return scored.as_json()


def gate_for_promotion(store: IndexStore, settings: Settings, candidate: Manifest) -> GateResult:
    """Gate a complete build that has no verdict, or gate a rejected one again, before ``ragops promote``
    moves the alias to it (a rejected build passes once what rejected it is fixed, without ``--force``).

    The same gate as a reindex (``evals.gate.gate_candidate``): sanity checks, then, with a golden
    set, the candidate and the live build scored on it in this call, floors and largest drops. The
    verdict and the evaluation go into the candidate's manifest (``rag.index.versions.record_verdict``; a fail
    marks it rejected). No approval is asked: whoever runs ``ragops promote`` is approving.

    Live documents the candidate lacks are explained by the deletions its own build recorded when it
    was built on the live build (what the reindex gate would have counted); otherwise none are.

    Returns:
        The verdict, passed.

    Raises:
        GateFailed: the build failed the gate; it is now rejected, the verdict recorded.
        PromotionRefused: it cannot be gated (golden set unreadable, query model unavailable).
    """
    live = store.alias_target(settings.alias)
    before = "was rejected" if candidate.state == "rejected" else "was never gated"
    deleted = candidate.counts.documents_deleted if live is not None and candidate.base == live else 0
    try:
        golden = load_golden(settings)
        embedders = QueryEmbedders(settings.evaluation, settings.embedding)
        gate, report, _ = gate_candidate(store, candidate, live, settings.gate, settings.evaluation, golden,
                                         embedders, deleted_from_live=deleted)
    except (GoldenSetError, ModelError) as exc:
        raise PromotionRefused(
            f"build {candidate.version} {before} and cannot be gated now: {exc}; fix that, or pass "
            "--force --reason TEXT to promote it ungated (recorded in its manifest)"
        ) from None
    record_verdict(store, candidate, gate, report.record if report else None)
    if not gate.passed:
        raise GateFailed(
            f"build {candidate.version} {before}; gated now against "
            f"{version_of(live) if live else 'no live build'}: {gate.reason}. The verdict is in its "
            "manifest (rejected); pass --force --reason TEXT to promote it anyway"
        )
    return gate
