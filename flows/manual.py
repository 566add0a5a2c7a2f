"""The manual-reindex flow: a re-index by hand from the Prefect UI, through a typed form.

May touch: what the reindex flow touches (its body runs in this flow's run). The `reindex` deployment of
prefect.yaml points here, so the UI shows ``ReindexRequest`` as a form.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.reindex import reindex


class ReindexRequest(BaseModel):
    """A manual re-index, as the form of the `reindex` deployment in the Prefect UI shows it."""

    alias: str | None = Field(None, description="Alias to rebuild. Empty: the configured one.")
    sources: list[str] = Field(
        default_factory=list,
        description="Folders or s3://bucket/prefix URLs to index instead of the configured sources. Empty: "
        "the configured ones.",
    )
    forget_sources: list[str] = Field(
        default_factory=list,
        description="Sources to delete the documents of (by name). A source left out of the run is otherwise kept.",
    )
    full_rebuild: bool = Field(False, description="Re-parse every document instead of starting from the live build.")
    promote: bool = Field(True, description="Move the alias to the new build if it passes the gate.")
    config: str | None = Field(None, description="ragops.yaml on the worker. Empty: $RAGOPS_CONFIG, else ./ragops.yaml.")
    store: str | None = Field(None, description="Store (folder or Qdrant URL) instead of the configured one.")


@flow(name="manual-reindex", flow_run_name="manual-reindex")
def manual_reindex(
    request: ReindexRequest = ReindexRequest(),  # noqa: B008 - the UI form shows its defaults; only read, never mutated
    reason: str = "",
) -> dict:
    """Re-index by hand from the Prefect UI: the reindex flow's work, with the form's fields, in this run.

    Args:
        request: what to re-index (every field optional).
        reason: why, for the run's log.

    Returns:
        The reindex run's summary; a refused run ends this one Failed with the same one-line reason.
    """
    get_run_logger().info("manual reindex: %s", reason or "no reason given")
    # In this run, not as a subflow: an approval (gate.require_approval) then pauses the run the person
    # started from the form, where they look for its Resume button (a subflow's pause left this one Running).
    return reindex.fn(config=request.config, full_rebuild=request.full_rebuild, sources=request.sources or None,
                      store=request.store, alias=request.alias, promote=request.promote,
                      forget_sources=request.forget_sources or None)
