"""Flow run names that say which alias a run touched (``reindex-docs``), shown in the Prefect UI."""

from __future__ import annotations

from typing import Callable


def alias_run_name(flow_name: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``<flow>-<alias>`` when the run's ``alias`` parameter is set."""

    def name() -> str:
        from prefect.runtime import flow_run

        alias = flow_run.parameters.get("alias")
        return f"{flow_name}-{alias}" if alias else flow_name

    return name
