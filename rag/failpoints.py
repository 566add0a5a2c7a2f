"""Named points where a test can have this process killed with SIGKILL, or fail with a bug, exactly there.

A run can die at any point, and a re-run must converge. Killing a run at a log line lands somewhere
near it; killing it *at* a step needs the process to do it itself. ``failpoint("write")`` is a no-op
unless the environment variable ``_RAGOPS_KILL_AT`` names that point (``write``, or ``write@2`` for its
second hit), in which case the process SIGKILLs itself: no cleanup, no ``finally``, as with ``kill -9``.
The variable does not start with ``RAGOPS_`` on purpose: it is not configuration. ``_RAGOPS_FAIL_AT``
names a point the same way and raises ``FailpointError`` there instead: an exception no ragops code
expects, so the paths that report a bug (``ragops ... --json``) can be tested on a real run.

Points, in a run's order: ``listing`` (a source about to be listed), ``parse`` (a document is journaled,
not parsed yet), ``chunk`` (a document parsed and cut into sections, still journaled), ``embed`` (a
batch's vectors computed, not yet cached), ``write`` (a batch's chunks are written, its records not
yet), ``finish`` (every batch written, the build not yet complete), ``evaluate`` (the candidate
evaluated, no verdict recorded), ``promote`` (the alias moved: with its records on the embedded store,
its promotion not yet confirmed on a server; a rollback passes there too), ``retention`` (a build half
deleted), ``deleted`` (a retention delete done, with its audit entry: bench/faults.py checks the trail
after it).
Inside ``ragops migrate`` (rag/store/migrate.py): ``migrate-copy`` (a build copied, with its aliases),
``migrate-done`` (the copy whole and recorded, the old store still in place), ``migrate-moved`` (the old
store moved aside, the new one not yet in place).
"""

from __future__ import annotations

import os
import signal

KILL_AT = "_RAGOPS_KILL_AT"
FAIL_AT = "_RAGOPS_FAIL_AT"
_hits: dict[tuple[str, str], int] = {}


class FailpointError(RuntimeError):
    """Raised at the point ``_RAGOPS_FAIL_AT`` names: a bug on purpose (deliberately not a ``RagopsError``)."""


def failpoint(name: str) -> None:
    """SIGKILL this process if ``_RAGOPS_KILL_AT`` names this point (and this is the named hit); raise
    ``FailpointError`` if ``_RAGOPS_FAIL_AT`` does."""
    if _due(KILL_AT, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _due(FAIL_AT, name):
        raise FailpointError(f"failpoint {name!r} reached ({FAIL_AT} is set)")


def _due(variable: str, name: str) -> bool:
    wanted = os.environ.get(variable)
    if not wanted:
        return False
    point, _, nth = wanted.partition("@")
    if point != name:
        return False
    _hits[variable, name] = _hits.get((variable, name), 0) + 1
    return _hits[variable, name] >= int(nth or 1)
