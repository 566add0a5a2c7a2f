"""What every flow does first: name its run after the alias it touches, load its inputs once, and end
on an expected refusal with a one-line Failed state.

A flow started by a deployment loads its settings (and golden set) from its parameters. A flow that the
``ragops`` command runs in its own process has already loaded and checked them (a typo costs
milliseconds there, not a Prefect start): the command hands them over with ``given(...)`` and the flow
uses those, so a run loads its configuration once. The handover is a context variable, scoped to the
``with`` block of the caller, never a module global.

An expected refusal (a ``RagopsError``: gate failed, freshness breach, no source, store unavailable)
ends the run as a Failed state whose message is the refusal's one line, which the Prefect UI shows;
the log gets that line, not a traceback. The caller of the flow still gets the error itself raised
(with its ``details``), so the CLI keeps its exit codes. A bug raises as before, traceback and all.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from prefect import get_run_logger
from prefect.states import Failed

from evals.golden import GoldenSet, configured_golden_set
from rag.config import EmbeddingSettings, Settings, source_from_cli
from rag.errors import RagopsError
from rag.secrets import redact_url

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder


@dataclass(frozen=True)
class RunInputs:
    """Settings (and the golden set they name, and the model, when loaded) that a caller already read and
    checked."""

    settings: Settings
    golden: GoldenSet | None = None
    embedder: Embedder | None = None


_given: ContextVar[RunInputs | None] = ContextVar("ragops_run_inputs", default=None)


@contextmanager
def given(settings: Settings, golden: GoldenSet | None = None, embedder: Embedder | None = None) -> Iterator[None]:
    """Flows started inside this block use these inputs instead of loading their own.

    ``embedder``: the model of ``settings.embedding``, which the command loaded while Prefect's API
    started (ragops/cli/prefect_api.py); the flow's ``load-model`` step then takes it instead of loading it.
    """
    token = _given.set(RunInputs(settings, golden, embedder))
    try:
        yield
    finally:
        _given.reset(token)


def given_embedder(embedding: EmbeddingSettings) -> Embedder | None:
    """The model the caller loaded, when it was loaded with exactly these settings; else None."""
    inputs = _given.get()
    if inputs is None or inputs.embedder is None or inputs.settings.embedding != embedding:
        return None
    return inputs.embedder


def load_or_take_model(settings: EmbeddingSettings) -> Embedder:
    """The configured model: the one the ``ragops`` command already loaded with these settings (it loads
    it while Prefect's API starts, ``given``), else loaded now."""
    from rag.embed.embedder import load_embedder

    loaded = given_embedder(settings)
    return loaded if loaded is not None else load_embedder(settings)


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
    """Settings from the config file and environment, with the flow's parameters on top (or the given ones).

    Empty strings count as unset: an automation renders a missing event value as "".
    """
    inputs = _given.get()
    if inputs is not None:
        return inputs.settings
    overrides: dict = {"store": {"location": store or None}, "alias": alias or None,
                       "evaluation": {"golden": golden or None}}
    if sources:
        overrides["sources"] = [source_from_cli(value) for value in sources]
    return Settings.load(config or None, overrides=overrides)


def load_golden(settings: Settings, *, required: bool = False) -> GoldenSet | None:
    """The golden set ``evaluation.golden`` names (the given one if a caller loaded it), or None.

    Raises:
        ConfigError: ``required`` and no golden set is configured.
        GoldenSetError: the file cannot be read or is malformed.
    """
    path = settings.evaluation.golden
    inputs = _given.get()
    if inputs is not None and inputs.golden is not None and path is not None and Path(inputs.golden.path) == Path(path):
        return inputs.golden
    return configured_golden_set(path, required=required)


def yield_cpu(settings: Settings) -> None:
    """Lower this run's CPU priority (``pipeline.niceness``, ``pipeline.idle_class``) as its work begins, so
    that a query service on the machine keeps its answers fast, and say in the run's log what was done
    (rag/runtime.py: a command typed in a shell leaves the shell's scheduling group alone)."""
    from rag.runtime import lower_cpu_priority

    get_run_logger().info("%s", lower_cpu_priority(settings.pipeline.niceness, idle=settings.pipeline.idle_class))


def refusals_fail_the_run(body: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a flow function (under ``@flow``): a ``RagopsError`` it raises ends the run Failed, one line.

    The returned state carries the error, so calling the flow in-process raises it unchanged.
    """

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        _quiet_expected_tracebacks()
        try:
            return body(*args, **kwargs)
        except RagopsError as exc:
            message = redact_url(" ".join(str(exc).split()))
            get_run_logger().error("%s", message)
            return Failed(message=message, data=exc)

    return run


class _ExpectedFailures(logging.Filter):
    """Drops the traceback Prefect's engines log for a task or flow that raised a ``RagopsError``.

    The error's message stays in the line ("Task run failed with exception: GateFailed(...)"); a
    traceback says "look at the code", which for an expected refusal is wrong. Bugs keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RagopsError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_expected_tracebacks() -> None:
    """Install the filter on the loggers of Prefect's task and flow run engines (once per process)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        engine_logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedFailures) for f in engine_logger.filters):
            engine_logger.addFilter(_ExpectedFailures())
