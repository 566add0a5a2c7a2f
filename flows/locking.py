"""One run per alias at a time: every flow that opens an alias's store holds the alias's lock.

The lock is kept with the store, not by Prefect (rag/store/locks.py says why and how): an OS file lock for
an embedded store, a renewed lease record for a Qdrant server. Two runs on the same alias (a
scheduled refresh and a manual reindex, a drift-triggered rebuild and a drift check) never overlap:
**the second waits**, logging what it waits for and since when, then runs against what the first
left. A killed holder frees the lock at once on an embedded store, and within the lease (60 s) on a
server. Runs on other aliases are not held up.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger

from rag.config import StoreSettings
from rag.store.locks import AliasLock


def run_label() -> str:
    """This flow run as others' waiting messages name it: ``flow run <name> (<id>)``."""
    from prefect.runtime import flow_run

    name, run_id = flow_run.get_name(), flow_run.get_id()
    return f"flow run {name} ({run_id})" if run_id else "a ragops process"


@contextmanager
def alias_lock(store: StoreSettings, alias: str) -> Iterator[None]:
    """Hold the alias's lock for the ``with`` block; wait for it while another live run holds it."""
    logger = get_run_logger()
    with AliasLock(store, alias).held(run=run_label(), report=logger.warning):
        logger.info("holding the lock of alias %r", alias)
        yield
