"""The ``ragops`` command line.

Every command takes ``--config``, ``--store``, ``--alias`` and ``--json`` (declared once, in
``ragops.cli.options``; ``bench beir`` takes ``--config`` and ``--json``). With ``--json``, stdout
carries exactly one JSON object, success or error (the models are in ``ragops.contracts``, the shapes
in docs/cli.md); progress and logs go to stderr. Exit codes: 0 ok, 1 bug, 2 bad input or config
(a command line click rejects included), 3 refused (alias conflict, build not fit to promote), 4 source
or store unavailable, 5 a source breached its max_staleness, 6 drift detected.

One module per group of commands: ``index`` (reindex, status, rollback, unlock, promote, migrate), ``search``
(query), ``serve`` (serve, mcp), ``quality`` (freshness, eval, drift), ``bench`` (bench beir), ``config``. Heavy imports
(torch, prefect, qdrant) happen inside commands so that ``ragops --help`` is instant.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated, Sequence

import typer

from rag.runtime import configure_offline_runtime, stop_signal
from ragops.cli import bench, config, index, quality, search, serve
from ragops.cli.errors import exit_stopped, interrupt, print_bug, print_usage_error, terminate

app = typer.Typer(
    name="ragops",
    help="Keep the retrieval side of RAG healthy: versioned index builds in Qdrant, promoted through an alias.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's own help: paragraphs re-wrapped as one text, and flags shown without a value type. Typer's
    # Rich panels kept each docstring line break inside the re-wrapped text and showed every flag as <bool>.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    configure_offline_runtime()
    if version:
        from importlib.metadata import version as package_version

        typer.echo(f"ragops {package_version('ragops')}")
        raise typer.Exit()


# In this order in `ragops --help`.
app.command()(index.reindex)
app.command()(search.query)
app.command()(serve.serve)
app.command()(serve.mcp)
app.command()(index.status)
app.command()(index.audit)
app.command()(quality.freshness)
app.command()(index.rollback)
app.command()(index.unlock)
app.command()(index.promote)
app.command()(index.migrate)
app.command("eval")(quality.evaluate)
app.command()(quality.drift)
app.add_typer(bench.app, name="bench")
app.command("config")(config.show_config)


def _wants_json(args: Sequence[str]) -> bool:
    """``--json`` among the options (not after ``--``, where it would be a query's text)."""
    args = list(args)
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def main(args: Sequence[str] | None = None) -> None:
    """Console-script entry point.

    Under ``--json``, a command line click rejects (``-k 0``, an unknown option) prints the error object
    too, kind ``usage`` with exit code 2, and so does a bug, kind ``internal`` with exit code 1 (its
    traceback on stderr), so a script reads one JSON object whatever went wrong. Without ``--json`` click
    reports a usage error as usual (usage and the error on stderr, exit 2), and a bug prints its traceback.

    Stopped by Ctrl-C or SIGTERM, the command exits 128 + the signal's number (130, 143), however the
    unwinding ends: through a pipe, Ctrl-C stops the pager too, and the next write to it fails.
    """
    signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with Ctrl-C ignored
        signal.signal(signal.SIGINT, interrupt)
    try:
        _main(sys.argv[1:] if args is None else list(args))
    except BaseException:
        if (signum := stop_signal()) is not None:
            exit_stopped(signum)
        raise


def _main(args: list[str]) -> None:
    if not _wants_json(args):
        app(args)
        return
    # A script reading the JSON wants no chatter: flow runs log warnings and errors only to the terminal
    # (progress and step lines still reach the Prefect API and its UI).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    try:
        code = app(args, standalone_mode=False)  # returns an Exit's code; raises click's errors
    except typer.TyperException as exc:  # click's errors (typer vendors click); a usage error exits 2
        if exc.exit_code == 2:
            print_usage_error(exc)
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        code = 1
    except Exception as exc:  # a bug: still one JSON object, as the script was promised
        if stop_signal() is not None:  # raised while Ctrl-C or SIGTERM unwinds: main() exits as stopped
            raise
        code = print_bug(exc)
    sys.exit(code if isinstance(code, int) else 0)
