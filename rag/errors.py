"""Every error ragops raises on purpose, in one leaf module (no project imports).

The tree, with the exit code the CLI gives each branch::

    RagopsError                      1  base; never raised itself
    ├── ConfigError                  2  a config file, env var or flag is invalid
    ├── SourceError                  4  a source cannot be listed (missing folder, bad bucket)
    ├── ModelError                   2  the embedding model cannot be loaded from a local path
    ├── StoreError                   4  the Qdrant store cannot be opened or used
    │   ├── StoreFullError           4  its disk is full (nothing damaged; free space, run again)
    │   └── StoreLockedError         4  embedded store held by another process
    ├── VersionError                 2  an alias or version does not exist / is in the wrong state
    │   └── AliasConflictError       3  the alias moved since the run started; nothing changed
    ├── GoldenSetError               2  a golden set is malformed or names documents the index lacks
    ├── PromotionRefused             3  the build finished but was not fit to promote
    │   └── GateFailed               3  it scored below the gate (or approval was refused / timed out)
    ├── LockHeld                     3  the alias's lock is held by a live run (``ragops unlock``)
    │   └── LockTimeout              3  a run gave up waiting for the alias's lock
    ├── FreshnessBreach              5  a source is staler than its max_staleness
    ├── DriftDetected                6  a drift check found the live build drifted
    └── DocumentError                -  one document failed; recorded, never ends a run

Tasks retry only errors raised with ``transient=True`` (``is_transient``): the network, throttling,
a store or source briefly unavailable. Anything else, a bug above all, fails its task at once.

Expected failures carry a message that says what was wrong, which object, and what to do next.
Anything that is not a RagopsError is a bug: the CLI shows its traceback.
"""

from __future__ import annotations


class RagopsError(Exception):
    """Base of every error ragops raises deliberately."""

    exit_code = 1
    #: short machine-readable kind for ``--json`` output
    kind = "error"
    #: worth retrying as is (a network hiccup), as opposed to needing a fix first
    transient = False

    def __init__(self, message: str, *, details: dict | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        #: structured context for ``--json`` output (e.g. the run summary of a refused build)
        self.details = details or {}
        if transient is not None:
            self.transient = transient


class ConfigError(RagopsError):
    """Raised when configuration (file, ``RAGOPS_*`` env var or flag) is invalid."""

    exit_code = 2
    kind = "config"


class SourceError(RagopsError):
    """Raised when a whole source cannot be listed: a run cannot know what it holds."""

    exit_code = 4
    kind = "source"


class ModelError(RagopsError):
    """Raised when the embedding model cannot be loaded (missing path, not a model, hub name)."""

    exit_code = 2
    kind = "model"


class StoreError(RagopsError):
    """Raised when the Qdrant store cannot be opened or an operation on it fails."""

    exit_code = 4
    kind = "store"


class StoreFullError(StoreError):
    """Raised when the store's disk is full: what was written before is intact, and writing stops until
    space is freed."""


class DamagedBuildError(StoreError):
    """Raised when a build's files or tables in the store are not what was written (truncated,
    overwritten, emptied): the build cannot be trusted; other builds are unaffected."""

    kind = "damaged_build"


class StoreLockedError(StoreError):
    """Raised when an embedded (local-mode) store is already open in another process."""

    kind = "store_locked"


class VersionError(RagopsError):
    """Raised for an unknown alias or version, or one in a state that forbids the operation."""

    exit_code = 2
    kind = "version"


class AliasConflictError(VersionError):
    """Raised when the alias no longer points where this run expected: someone else moved it."""

    exit_code = 3  # distinct so scripts can tell "lost a race" from "bad input"
    kind = "alias_conflict"


class PromotionRefused(RagopsError):
    """Raised when a build completed but is not fit to serve; the alias was not moved."""

    exit_code = 3
    kind = "promotion_refused"


class GoldenSetError(RagopsError):
    """Raised for a golden set that cannot be read, is malformed, or names documents the index lacks."""

    exit_code = 2
    kind = "golden_set"


class GateFailed(PromotionRefused):
    """Raised when a candidate scored below the gate; the alias was not moved, the build was kept."""

    kind = "gate_failed"


class LockHeld(RagopsError):
    """Raised when the alias's lock is held by a live run and the operation will not wait or break it."""

    exit_code = 3
    kind = "lock_held"


class LockTimeout(LockHeld):
    """Raised when a run waited its whole timeout for the alias's lock."""

    kind = "lock_timeout"


class FreshnessBreach(RagopsError):
    """Raised at the end of a run when a source is staler than its ``max_staleness``."""

    exit_code = 5
    kind = "freshness_breach"


class DriftDetected(RagopsError):
    """Raised (by the CLI) when a drift check found drift; the report is still printed."""

    exit_code = 6
    kind = "drift"


class DocumentError(RagopsError):
    """Raised for one document that cannot be fetched, parsed, chunked or embedded.

    Builds catch it and record a ``Failure``; it never ends a run.
    """

    kind = "document"

    def __init__(self, stage: str, reason: str, *, failure: str = "error") -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        #: what kind of failure (``rag.models.FailureKind``): "timeout" and "stalled" are retried by a
        #: later run, the others only once the document changes
        self.failure = failure


def is_transient(exc: BaseException | None) -> bool:
    """The one retry rule: worth retrying as is only when ragops marked it transient."""
    return isinstance(exc, RagopsError) and exc.transient
