"""How the command line fails: expected errors as one line (or one JSON object) and their exit code.

Exit codes: 0 ok, 1 bug (the traceback is printed on stderr), 2 bad input or config (a command line click rejects
included), 3 refused, 4 source or store unavailable, 5 freshness breach, 6 drift; 130 stopped by Ctrl-C,
128 + N killed by signal N (SIGTERM unwinds like Ctrl-C), however the unwinding ends (a broken pipe).
With ``--json``, stdout carries exactly one JSON object either way: the command's result, or
``{"error": {...}}`` (``ragops.contracts.ErrorResponse``), a bug's included (kind ``internal``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn

import typer

from rag.errors import RagopsError
from rag.runtime import note_stop_signal, stop_reason
from rag.secrets import redact_tree, redact_url
from ragops import output

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ragops.contracts import ErrorBody


def error_body(exc: RagopsError, *, details: bool = True) -> ErrorBody:
    """The ``error`` object of an expected failure; redacted, as the last line for secrets that slipped by
    (messages are redacted where they are made)."""
    from ragops.contracts import ErrorBody

    extra = redact_tree(exc.details) if details else {}
    return ErrorBody.model_validate(
        {"kind": exc.kind, "message": redact_url(str(exc)), "exit_code": exc.exit_code, **extra}
    )


def _print_error(body: ErrorBody) -> None:
    from ragops.contracts import ErrorResponse

    typer.echo(json.dumps(ErrorResponse(error=body).model_dump(mode="json")))


@contextmanager
def cli_errors(json_output: bool) -> Iterator[None]:
    """Expected failures -> one line (or one JSON object) and their exit code; bugs keep their traceback."""
    try:
        yield
    except RagopsError as exc:
        if json_output:
            _print_error(error_body(exc))
        else:
            if "summary" in exc.details:  # a run that finished but was refused: show what it did
                typer.echo(output.render_summary(redact_tree(exc.details["summary"])))
            typer.echo(f"error: {redact_url(str(exc))}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        typer.echo(stop_reason(exc), err=True)
        raise typer.Exit(130) from None


def emit_report(
    report: BaseModel, json_output: bool, render: Callable[[dict], str], failure: RagopsError | None
) -> None:
    """Print a report that may also be a failure (a breach, drift): the report either way, then the
    failure's exit code; with ``--json`` the failure rides along as ``error`` in the same object."""
    if failure is not None:
        report.error = error_body(failure, details=False)  # type: ignore[attr-defined]  # reports that can fail have it
    output.emit(report, json_output, render)
    if failure is not None:
        raise typer.Exit(failure.exit_code)


def print_usage_error(exc: typer.TyperException) -> None:
    """A command line click rejected (``-k 0``, an unknown option), under ``--json``: the error object,
    kind ``usage``, with click's own message. Without ``--json`` click prints it (usage, then the error)."""
    from ragops.contracts import ErrorBody

    _print_error(ErrorBody(kind="usage", message=exc.format_message(), exit_code=exc.exit_code))


def print_bug(exc: Exception) -> int:
    """A bug (an exception no command expects) under ``--json``: its traceback on stderr, as without
    ``--json``, and the error object on stdout, kind ``internal``. Returns the exit code a bug has: 1."""
    from ragops.contracts import ErrorBody

    traceback.print_exception(exc, file=sys.stderr)
    message = f"internal error (a bug): {type(exc).__name__}: {exc}; its traceback is on stderr; please report it"
    _print_error(ErrorBody(kind="internal", message=redact_url(message), exit_code=1))
    return 1


def interrupt(signum: int, frame: object) -> None:
    """Ctrl-C (SIGINT): Python's KeyboardInterrupt, with the signal recorded first (``note_stop_signal``)."""
    note_stop_signal(signum)
    raise KeyboardInterrupt


def terminate(signum: int, frame: object) -> None:
    """SIGTERM (systemd, Kubernetes, `kill`): unwind like Ctrl-C, so that the flow is marked crashed and
    the ephemeral Prefect server this process started is stopped, not left running on its own."""
    note_stop_signal(signum)
    raise SystemExit(128 + signum)


def exit_stopped(signum: int) -> NoReturn:
    """Exit as a command stopped by ``signum`` does: 128 + its number. A stdout or stderr whose reader is gone
    (Ctrl-C stopped the pager too) is pointed at /dev/null first: flushing it at exit would fail again, and
    Python would exit 120."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # broken pipe; or closed
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
            finally:
                os.close(devnull)
    raise SystemExit(128 + signum)
