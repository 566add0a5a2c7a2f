"""What every flow does first: name its run after the alias it touches, and load its settings."""

from __future__ import annotations

from typing import Callable

from rag.config import Settings, source_from_cli


def alias_run_name(flow_name: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``<flow>-<alias>`` when the run's ``alias`` parameter is set."""

    def name() -> str:
        from prefect.runtime import flow_run

        alias = flow_run.parameters.get("alias")
        return f"{flow_name}-{alias}" if alias else flow_name

    return name


def load_settings(
    config: str | None, *, sources: list[str] | None = None, store: str | None = None, alias: str | None = None,
    golden: str | None = None,
) -> Settings:
    """Settings from the config file and environment, with the flow's parameters on top.

    Empty strings count as unset: an automation renders a missing event value as "".
    """
    overrides: dict = {"store": {"location": store or None}, "alias": alias or None,
                       "evaluation": {"golden": golden or None}}
    if sources:
        overrides["sources"] = [source_from_cli(value) for value in sources]
    return Settings.load(config or None, overrides=overrides)
