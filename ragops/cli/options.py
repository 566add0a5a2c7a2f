"""The options every command shares, declared once: ``@common_options`` adds them to a command.

``--config/-c``, ``--store``, ``--alias`` and ``--json`` mean the same in every command. A command
decorated with ``@common_options`` takes one keyword parameter, ``common: Common``, instead of the four;
the decorator puts the four into the signature typer reads (so each command's ``--help`` lists them),
gathers their values into a ``Common``, and runs the command inside ``cli_errors`` (expected failures
become one line, or one JSON object, and their exit code). ``@config_options`` is the smaller variant for
a command with no alias or store of its own (``bench beir``): ``--config`` and ``--json`` only.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from ragops.cli.errors import cli_errors

if TYPE_CHECKING:
    from rag.config import Settings

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="ragops.yaml to read. Default: $RAGOPS_CONFIG, else ./ragops.yaml if present.",
                 envvar="RAGOPS_CONFIG", show_default=False),
]
StoreOption = Annotated[
    Optional[str],
    typer.Option("--store", help="Store: a folder (embedded store) or a Qdrant URL. Overrides store.location "
                 "and $RAGOPS_STORE__LOCATION.", show_default=False),
]
AliasOption = Annotated[
    Optional[str],
    typer.Option("--alias", help="Serving alias. Overrides `alias` and $RAGOPS_ALIAS.", show_default=False),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (shapes in docs/cli.md); logs go to stderr.")
]
GoldenOption = Annotated[
    Optional[Path],
    typer.Option("--golden", "-g", help="Golden set (YAML or JSONL, docs/evaluation.md) instead of evaluation.golden.",
                 show_default=False),
]


@dataclass(frozen=True)
class Common:
    """The shared options' values, as one command received them."""

    config: Path | None = None
    store: str | None = None
    alias: str | None = None
    json_output: bool = False

    @property
    def config_param(self) -> str | None:
        """``--config`` as a flow parameter (a string; None when unset)."""
        return str(self.config) if self.config else None

    def settings(self, *, sources: list[str] | None = None, golden: Path | None = None) -> Settings:
        """The settings from the file and environment, with this command's flags on top.

        Raises:
            ConfigError: the file is missing or invalid, or a flag's value is.
        """
        from rag.config import Settings, source_from_cli

        overrides: dict[str, Any] = {"store": {"location": self.store}, "alias": self.alias}
        if sources:
            overrides["sources"] = [source_from_cli(value) for value in sources]
        if golden:
            overrides["evaluation"] = {"golden": str(golden.resolve())}
        return Settings.load(self.config, overrides=overrides)


#: each shared option: (parameter name, annotation with its typer.Option, default)
_SHARED: dict[str, tuple[Any, Any]] = {
    "config": (ConfigOption, None),
    "store": (StoreOption, None),
    "alias": (AliasOption, None),
    "json_output": (JsonOption, False),
}


def _with_options(names: tuple[str, ...]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator adding the shared options ``names`` to a command taking ``common: Common``."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command)
        if "common" not in signature.parameters:
            raise TypeError(f"{command.__name__} must take a keyword parameter `common: Common`")
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in signature.parameters.values() if p.name != "common"]
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=_SHARED[name][0],
                                    default=_SHARED[name][1]) for name in names]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            common = Common(**{name: kwargs.pop(name) for name in names})
            with cli_errors(common.json_output):
                command(*args, common=common, **kwargs)

        # typer builds the command line from these two, not from the wrapped function's own.
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]  # inspect reads it; typeshed lacks it
            parameters=own + shared, return_annotation=None
        )
        run.__annotations__ = {p.name: p.annotation for p in own + shared}
        return run

    return decorate


#: ``--config``, ``--store``, ``--alias`` and ``--json``, handed to the command as ``common: Common``
common_options = _with_options(("config", "store", "alias", "json_output"))

#: ``--config``, ``--store`` and ``--alias``, for a command whose stdout is not ragops' JSON (``mcp``)
store_options = _with_options(("config", "store", "alias"))

#: ``--config`` and ``--json`` only, for a command that makes its own store and alias
config_options = _with_options(("config", "json_output"))
