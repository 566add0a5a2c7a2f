"""``ragops eval`` and ``ragops drift`` in the command's own process, without Prefect.

A read-only run reports to Prefect (its flow run, its artifact, the drift event) when a Prefect API is
configured or a server is running for this Prefect home (ragops/cli/prefect_api.py). With neither, Prefect
would start an ephemeral API that no UI shows and no automation listens to, at a cost of several seconds
of CPU (docs/benchmarks.md, "Command timings"); the command then runs the same steps here
(evals/readonly.py): the same figures, printed, and recorded in the alias's audit trail.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from evals.golden import GoldenSet
    from evals.models import DriftReport
    from rag.config import Settings
    from rag.embed.embedder import Embedder

log = logging.getLogger("ragops")


def evaluate_here(settings: Settings, golden: GoldenSet, embedder: Embedder, version: str | None, *,
                  compare: bool, quiet: bool) -> dict:
    """What the ``evaluate`` flow returns, computed in this process (``quiet``: warnings only on stderr)."""
    from evals.evaluate import QueryEmbedders
    from evals.readonly import score_build
    from rag.store import open_store
    from rag.store.names import version_of

    with _logged(quiet), _run_alone(settings, "eval"):
        embedders = QueryEmbedders(settings.evaluation, settings.embedding, embedder)
        with open_store(settings.store) as store:
            scored = score_build(store, settings, golden, embedders, version, compare=compare)
        for missing in scored.report.missing:
            log.warning("relevant document not served by %s: %s", version_of(scored.collection), missing)
    return scored.as_json()


def drift_here(settings: Settings, golden: GoldenSet | None, embedder: Embedder, *, emit: bool,
               quiet: bool) -> DriftReport:
    """What the ``drift-check`` flow returns, computed in this process. No event is emitted: nothing
    listens for it without a Prefect server (a scheduled ``drift-check`` on one does emit it)."""
    from evals.readonly import check_live_build
    from rag.store import open_store

    with _logged(quiet), _run_alone(settings, "drift"):
        with open_store(settings.store) as store:
            report = check_live_build(store, settings, golden, embedder)
        if report.drifted and emit:
            log.warning("ragops.drift.detected was not emitted: no Prefect API is configured or running for "
                        "this Prefect home, so no automation would receive it")
    return report


@contextmanager
def _run_alone(settings: Settings, command: str) -> Iterator[None]:
    """As the flows do: the CPU yielded as the work begins, one run per alias (the alias's lock)."""
    from rag.runtime import lower_cpu_priority
    from rag.store import require_store
    from rag.store.locks import AliasLock

    log.info("%s", lower_cpu_priority(settings.pipeline.niceness, idle=settings.pipeline.idle_class))
    require_store(settings.store)  # before the lock: a mistyped folder must not become an empty store
    with AliasLock(settings.store, settings.alias).held(run=f"ragops {command} (pid {os.getpid()})",
                                                         report=log.warning):
        yield


@contextmanager
def _logged(quiet: bool) -> Iterator[None]:
    """ragops's own log lines on stderr for the block, as a flow run shows them on the terminal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                                           "%H:%M:%S"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    loggers = [logging.getLogger(name) for name in ("ragops", "rag", "evals")]
    saved = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
