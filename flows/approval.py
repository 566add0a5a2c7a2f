"""Human approval before a swap: the reindex flow pauses until someone answers in the Prefect UI.

The paused run shows a form generated from ``Approval`` (approve yes/no, and a reason) under its
Resume button. No answer within ``gate.approval_timeout`` rejects the candidate; either way the alias
stays where it is until an approval arrives.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import get_current_settings
from prefect.states import Running
from pydantic import Field

from evals.gate import with_approval
from rag.config import DETAIL_METRICS, HEADLINE_METRICS
from rag.index import audit
from rag.models import GateResult, Manifest
from rag.store import IndexStore

#: seconds between checks for an answer (Prefect's default of 10 s makes short timeouts late)
POLL_SECONDS = 2


class Approval(RunInput):
    """The answer to "promote this build?", given in the Prefect UI on the paused run."""

    approve: bool
    reason: str = ""
    by: str = Field("", description="Who answers (name or e-mail): recorded in the audit trail.")


def ask_approval(store: IndexStore, manifest: Manifest, gate: GateResult, timeout: float) -> GateResult:
    """The gate's verdict with a person's answer added (``evals.gate.with_approval``).

    An embedded store is released while the run waits, so serving and ``ragops status`` can open it.
    """
    with store.released():
        approved, why, approver = await_approval(manifest, gate, timeout)
    with audit.acting(approver=approver):
        audit.record(store, manifest.alias, "approval", build=manifest.collection, why=why,
                     details={"approved": approved})
    return with_approval(gate, approved, why)


def await_approval(manifest: Manifest, gate: GateResult, timeout: float) -> tuple[bool, str, str | None]:
    """Pause this flow run until someone approves or refuses the promotion, or ``timeout`` seconds pass.

    Returns:
        (approved, the reason to record: the approver's words, or that the wait timed out, who answered
        as they gave it: None when nobody did).
    """
    logger = get_run_logger()
    ui = get_current_settings().ui_url
    if ui:
        logger.info("waiting up to %.0fs for approval in the Prefect UI: Resume on %s/runs/flow-run/%s", timeout,
                    ui.rstrip("/"), get_run_context().flow_run.id)
    else:  # Prefect's ephemeral API serves no UI, and stops with the command
        logger.warning("waiting up to %.0fs for approval, but this run is on an ephemeral Prefect API that no UI "
                       "shows: nobody can answer. Start a Prefect server on this Prefect home (`make server`) or "
                       "set PREFECT_API_URL, then run again", timeout)
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=approval_form(manifest, gate)),
            timeout=max(0, int(timeout)),
            poll_interval=min(POLL_SECONDS, max(1, int(timeout))),
        )
    except FlowPauseTimeout:
        # The server still holds the run as Paused (expired) and would replace our final state with its
        # own "never resumed"; take the run back so the rejection below is what gets recorded.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(get_run_context().flow_run.id, Running(), force=True)
        return False, f"approval timed out after {timeout:.0f}s; candidate rejected", None
    approver = answer.by.strip() or "someone who gave no name"
    if answer.approve:
        return True, "approved" + (f": {answer.reason}" if answer.reason else ""), approver
    return False, "refused by approver" + (f": {answer.reason}" if answer.reason else ""), approver


#: the candidate's metrics shown beside the live build's in the approval form (all of them are in the manifest)
FORM_METRICS = (*HEADLINE_METRICS, *DETAIL_METRICS)


def approval_form(manifest: Manifest, gate: GateResult) -> str:
    """The text above the approval form (Markdown): the question, the gate's checks with their figures, and
    the candidate's main metrics beside the live build's, so the answer needs no other page."""
    lines = [f"**Promote build {manifest.version} of alias {manifest.alias!r}?** {gate.reason}.", "",
             "Set *approve* and give a reason; no answer rejects it.", "",
             "| check | metric | candidate | live | threshold | passed |", "|---|---|---|---|---|---|"]
    lines += [f"| {c.kind} | {c.metric or ''} | {_figure(c.value)} | {_figure(c.baseline)} | {_figure(c.threshold)} | "
              f"{'yes' if c.passed else 'NO'} |" for c in gate.checks]
    candidate = manifest.evaluation.metrics if manifest.evaluation else {}
    live = gate.baseline.metrics if gate.baseline else {}
    shown = [name for name in FORM_METRICS if name in candidate or name in live]
    if shown:
        lines += ["", f"| metric | candidate {manifest.version} | live {gate.baseline.version if gate.baseline else '-'} |",
                  "|---|---|---|"]
        lines += [f"| {name} | {_figure(candidate.get(name))} | {_figure(live.get(name))} |" for name in shown]
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
