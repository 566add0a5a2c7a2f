"""One run per alias at a time: a Prefect global concurrency limit named ``ragops-alias-<alias>``.

Every flow that opens an alias's store holds the alias's slot for its whole run, so two runs on the
same alias (a scheduled refresh and a manual reindex, a drift-triggered rebuild and a drift check)
never overlap: **the second waits** until the first releases the slot, then runs against what the
first left. Runs on other aliases are not held up. The limit is created (limit 1) the first time an
alias is used; ``prefect gcl ls`` lists them.

Why a global limit inside the flow and not a deployment ``concurrency_limit``: a deployment's limit
counts only its own runs (a refresh would still overlap a full rebuild of the same alias) and holds
back every alias alike. A slot is leased and renewed while the run holds it; a run killed with
``kill -9`` frees its alias when the lease runs out (``LEASE_SECONDS``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

#: how long a dead run keeps its alias locked before the slot is freed (renewed while alive)
LEASE_SECONDS = 300


def alias_limit_name(alias: str) -> str:
    """Name of the alias's global concurrency limit."""
    return f"ragops-alias-{alias}"


def ensure_alias_limit(alias: str) -> str:
    """Create the alias's limit (1 slot) unless it exists; returns its name.

    Read first: creating an existing limit is refused cleanly (409) but logs an error in the server.
    """
    name = alias_limit_name(alias)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run created it meanwhile
                pass
    return name


@contextmanager
def alias_lock(alias: str) -> Iterator[None]:
    """Hold the alias's slot for the ``with`` block; wait for it if another run holds it."""
    name = ensure_alias_limit(alias)
    logger = get_run_logger()
    logger.info("waiting for the %s slot (one run per alias)", name)
    # strict: without the limit, concurrency() would silently run unguarded
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        logger.info("holding %s", name)
        yield
