"""Running a Prefect flow inside the command's own process: checked inputs, a clean stdout, no secrets.

The command loads the settings and golden set once, checks what a person can get wrong (a typo then
costs milliseconds and one line, not a failed flow run with its logs), and hands both to the flow with
``flows.runs.given``. The flow's parameters are still passed as before, since the Prefect UI shows them.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from rag.secrets import redact_url

if TYPE_CHECKING:
    from evals.golden import GoldenSet
    from rag.config import Settings
    from rag.embed.embedder import Embedder


def check_reindex_inputs(settings: Settings) -> None:
    """What a reindex needs before Prefect starts: sources that exist and the embedding model.

    Raises:
        ConfigError: no sources are configured or given.
        SourceError: a source folder does not exist.
        ModelError: the embedding model's folder does not exist.
    """
    from rag.embed.embedder import resolve_model_path
    from rag.errors import SourceError

    settings.require_sources()
    for source in settings.sources:
        if source.kind == "folder" and not source.path.is_dir():
            raise SourceError(f"source folder {source.path} does not exist or is not a folder")
    resolve_model_path(settings.embedding.model)


def check_store_free(settings: Settings) -> None:
    """An embedded store another process holds fails now, in one line, rather than inside the flow.

    Raises:
        StoreLockedError: another process holds the embedded store.
    """
    from rag.store import open_store

    if not settings.store.is_remote:
        with open_store(settings.store):
            pass


def golden_set(settings: Settings, *, required: bool = False) -> GoldenSet | None:
    """The golden set ``evaluation.golden`` names (after ``--golden``), read and validated once, before
    anything starts (it imports neither prefect nor a model).

    Raises:
        ConfigError: ``required`` and none is configured.
        GoldenSetError: it cannot be read or is malformed (exit 2, before anything runs).
    """
    from evals.golden import configured_golden_set

    return configured_golden_set(settings.evaluation.golden, required=required)


def check_build(settings: Settings, version: str | None = None) -> None:
    """The build an eval or a drift check reads exists (``--version``'s, else the live one): a typo costs
    a store open, before Prefect starts and a model loads, not a flow run.

    Raises:
        ConfigError: there is no store at the configured folder.
        VersionError: no such build, or the alias has no live build yet.
    """
    from rag.index.versions import build_to_read
    from rag.store import open_store

    with open_store(settings.store, create=False) as store:
        build_to_read(store, settings.alias, version)


def yield_cpu(settings: Settings) -> None:
    """Before start-up, lower this command's CPU priority (``pipeline.niceness``, ``pipeline.idle_class``)
    when it leads its session, as a scheduler starts it (systemd, cron with setsid, bench/serve_load.py):
    the Prefect API server and the parsing child it starts inherit it, and a query service on the machine
    keeps the CPU while it imports and loads. A command typed in a shell starts at normal priority, since
    someone waits for it; its flow lowers its own threads when the work begins (``rag.runtime``)."""
    from rag.runtime import leads_its_session, lower_cpu_priority

    if leads_its_session():
        lower_cpu_priority(settings.pipeline.niceness, idle=settings.pipeline.idle_class)


def load_while_api_starts(settings: Settings, *, scoring: bool) -> Embedder:
    """What the flow loads first, loaded now, while Prefect's API starts on the other core
    (ragops/cli/prefect_api.py): the configured model, which the flow's ``load-model`` step (or its
    evaluation) then takes through ``flows.runs.given``, and with ``scoring`` RAGAS (~1.5 s of imports),
    which scoring a golden set imports.

    Raises:
        ModelError: the model cannot be loaded (as the flow would have raised it).
    """
    import importlib

    from rag.embed.embedder import load_embedder

    embedder = load_embedder(settings.embedding)
    if scoring:
        importlib.import_module("ragas.metrics")
    return embedder


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for our one result: anything a library prints goes to stderr."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


#: how a flow run in this process gets a --store that must not be one of its parameters
STORE_ENV = "RAGOPS_STORE__LOCATION"


@contextmanager
def store_for_flow(store: str | None) -> Iterator[str | None]:
    """The ``store`` parameter for a flow run in this process; a URL with a password is not one.

    Prefect keeps a run's parameters in its database, its UI and its events. So a ``--store`` with
    credentials goes to the flow through ``$RAGOPS_STORE__LOCATION`` for the length of the run (the
    flow's ``load_settings`` reads it; over the file, as the flag would be) and the parameter stays
    unset. Such a URL holds no whitespace, so the variable's YAML reading returns it unchanged.
    Anything else (a folder, a URL without a password) is passed as the parameter, as before.
    """
    if store is None or redact_url(store) == store:
        yield store
        return
    saved = os.environ.get(STORE_ENV)
    os.environ[STORE_ENV] = store
    try:
        yield None
    finally:
        if saved is None:
            os.environ.pop(STORE_ENV, None)
        else:
            os.environ[STORE_ENV] = saved
