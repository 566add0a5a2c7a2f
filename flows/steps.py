"""Every step of every flow, as a Prefect task made one way: named, never cached, one retry rule.

The functions are the domain's plain functions (rag/, evals/, connectors/); this module only gives
them a name in the UI and the retry rule. **Retry only what ragops marked transient**
(``rag.errors.is_transient``: the network, throttling, a store briefly unavailable); a bug, a bad
input or a refusal fails its task at once, with its traceback in the log when it is a bug. The rule
is the same on the local runner and on Dask (flows/fanout.py makes its tasks here too).

Steps that are safe to repeat (deterministic ids, cached vectors, reads) retry twice; steps that must
not run twice (creating a build, moving the alias) do not retry at all.

Results stay in memory: models, clients and stores are not cacheable.
"""

from __future__ import annotations

from typing import Callable

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

import connectors
from evals import drift, evaluate, gate
from flows import runs
from rag.embed import embedder
from rag.errors import is_transient
from rag.index import batches, build, cache, freshness, versions

#: seconds before each retry of a repeatable step
RETRY_DELAYS = [5, 30]


def transient_only(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn``: retry when the task failed with an error marked transient."""
    return is_transient(state.result(raise_on_failure=False))


def step(fn: Callable, name: str, *, repeatable: bool = True) -> Task:
    """A task for ``fn``: retried on transient errors when ``repeatable``, never otherwise."""
    retries = {"retries": len(RETRY_DELAYS), "retry_delay_seconds": RETRY_DELAYS,
               "retry_condition_fn": transient_only} if repeatable else {}
    return task(fn, name=name, cache_policy=NO_CACHE, **retries)


# Each task is named as the function it wraps (``plan_against_store``, not ``plan_build``, which is
# another function, rag.index.plan's); the names Prefect shows (the second argument) are unchanged.
# reindex
list_source = step(connectors.list_source, "list-source")
load_or_take_model = step(runs.load_or_take_model, "load-model")
plan_against_store = step(build.plan_against_store, "plan-build")
begin_build = step(build.begin_build, "begin-build", repeatable=False)
carry_documents = step(build.carry_documents, "carry-documents")
finish_build = step(build.finish_build, "finish-build")
gate_candidate = step(gate.gate_candidate, "evaluate-and-gate")
record_verdict = step(versions.record_verdict, "record-verdict")
promote = step(versions.promote, "promote", repeatable=False)
apply_retention = step(versions.apply_retention, "apply-retention")
prune_caches = step(cache.prune_caches, "prune-caches")
record_freshness = step(freshness.record_freshness, "record-freshness")
# a batch's two halves (rag.index.batches.index_batches on the local runner; flows/fanout.py on Dask)
prepare_batch = step(batches.prepare_batch, "prepare-batch")
write_batch = step(batches.write_batch, "write-batch")
embed_in_worker = step(embedder.embed_in_worker, "embed-batch")
# evaluate, drift-check, freshness-check
evaluate_build = step(evaluate.evaluate_build, "evaluate-build")
check_drift = step(drift.check_drift, "drift-checks")
read_freshness = step(freshness.read_freshness, "read-freshness")
