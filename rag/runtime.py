"""Process environment that keeps the stack offline and quiet (see ../shared/notes/stack.md).

Entry points (the CLI, each flow) call ``configure_offline_runtime()`` first; nothing runs at import.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

#: set unless the user already set them: no hub lookups, no telemetry, no library banners
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAGAS_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The ephemeral API migrates a fresh database at first start: ~12 s alone, longer on a busy 2-core box.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # Domain modules log through the standard logging module; this shows them in Prefect's run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "rag,connectors,evals",
    # Domain code also runs outside flows (ragops bench, tests): its logs stay local there, unwarned.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def configure_offline_runtime() -> None:
    """Set the offline/no-telemetry environment for this process and the libraries it imports later."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Prefect creates PREFECT_HOME but not its parents; its ephemeral API then cannot open its database
    # and only reports a startup timeout.
    if os.environ.get("PREFECT_HOME"):
        os.makedirs(os.path.expanduser(os.environ["PREFECT_HOME"]), exist_ok=True)


def lower_cpu_priority(niceness: int, *, idle: bool = False) -> str:
    """Run this process's threads (and what they start later) at ``niceness`` or lower; never raise it.

    Builds, evaluations and drift checks call this with ``pipeline.niceness`` so that on a shared
    machine they take the CPU a query service leaves idle rather than slowing its answers. Only this
    process's own threads are touched, and its session's scheduling group only when that group is its
    own (``lower_own_group_priority``): a command typed in a shell shares the shell's group, which it
    leaves as it is. Where the platform has no priorities (Windows) it does nothing.

    Args:
        idle: also move the threads to Linux's idle scheduling class (SCHED_IDLE,
            ``pipeline.idle_class``), where this process's own group was lowered: a query-service thread
            that wakes then takes the core at once instead of when a build's time slice ends, while the
            group keeps its share of the CPU against other sessions. In a group shared with other work
            (a shell's) or with no groups at all, an idle-class thread would get almost no CPU while
            anything else in it runs, so it is not applied there.

    Returns:
        What was done, in words, for the run's log (``pipeline.niceness`` and friends named).
    """
    if not hasattr(os, "setpriority"):
        return "CPU priority left as it is (no process priorities on this platform)"
    group = lower_own_group_priority(niceness)
    idle = idle and group is not None
    current = os.getpriority(os.PRIO_PROCESS, 0)
    # On Linux a niceness and a scheduling class belong to a thread, not to the process: set them on every
    # thread running now (threads started later inherit them from the one that starts them).
    threads = [int(t.name) for t in Path("/proc/self/task").iterdir()] if Path("/proc/self/task").is_dir() else [0]
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
            if idle and os.sched_getscheduler(thread) != os.SCHED_IDLE:
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        except (ProcessLookupError, PermissionError):  # the thread ended meanwhile
            continue
    said = f"CPU priority: nice {max(niceness, current)} (pipeline.niceness {niceness})"
    if group is not None:
        return said + f"; its own scheduling group at nice {group}" + (", idle class (pipeline.idle_class)"
                                                                       if idle else "")
    if leads_its_session() or _session_group_niceness() is None:
        return said
    return said + "; the scheduling group of the session that started it (a shell's) is left as it is"


#: Linux's scheduling group of this process's session, and whether the scheduler uses such groups
AUTOGROUP, AUTOGROUP_ENABLED = Path("/proc/self/autogroup"), Path("/proc/sys/kernel/sched_autogroup_enabled")


def leads_its_session() -> bool:
    """Whether this process leads its session, whose scheduling group (Linux autogroup) is then its own.

    systemd services, Prefect's process worker (each flow run), ``setsid`` and most cron jobs start a
    command so; a command typed in a shell is in the shell's session, with whatever else the shell runs.
    """
    return hasattr(os, "getsid") and os.getsid(0) == os.getpid()


def lower_own_group_priority(niceness: int) -> int | None:
    """Lower this process's session group to ``niceness`` when the group is its own; else None.

    With autogroup (on by default in most Linux kernels), the scheduler shares the CPU between sessions
    first and applies niceness only between threads of one session: a build started in a session of its
    own (a systemd unit, a cron job, a Prefect worker's flow run) at nice 10 still took half of the CPU
    from a query service started in another (docs/benchmarks.md, "Session groups"). A lowered group
    also takes a small share against every other busy session (docs/operations.md, "CPU priority").

    Only a process that leads its session lowers the group: any other shares it with its shell (and
    so with everything started from that terminal), which must not slow down. None too where there is
    no such group (not Linux, autogroup off, a session with no group).
    """
    if not leads_its_session():
        return None
    before = _session_group_niceness()
    if before is None:
        return None
    if before >= niceness:
        return before
    if not _set_autogroup(niceness):  # a read-only /proc (some containers): the threads' niceness still applies
        return before
    return niceness


def _set_autogroup(niceness: int) -> bool:
    for _ in range(3):
        try:
            AUTOGROUP.write_text(str(niceness))
            return True
        except BlockingIOError:  # EAGAIN: an unprivileged change at most every 100 ms, machine-wide
            time.sleep(0.11)
        except OSError:
            return False
    return False


def _session_group_niceness() -> int | None:
    """The niceness of this process's session group ("/autogroup-746 nice 0"); None where the scheduler
    uses no such group: not Linux, autogroup off, or a process in no session group (an empty file: its
    session never called setsid since boot, as children of a container's init or a CI runner may be;
    the kernel's root group, where threads' niceness alone already applies)."""
    try:
        if AUTOGROUP_ENABLED.read_text().strip() != "1":
            return None
        text = AUTOGROUP.read_text()
        return int(text.split("nice")[1]) if "nice" in text else None
    except (OSError, ValueError):
        return None


#: the signal stopping this process (SIGINT from Ctrl-C, SIGTERM), once its handler ran (``note_stop_signal``)
_stop_signal: int | None = None


def note_stop_signal(signum: int) -> None:
    """Record that ``signum`` is stopping this process: the entry point's signal handlers call it before
    they unwind, so that whatever ends the unwinding (a broken pipe to a pager that Ctrl-C stopped too)
    is reported as the stop it is (``stop_signal``, ``stop_reason``)."""
    global _stop_signal
    _stop_signal = signum


def stop_signal() -> int | None:
    """The signal stopping this process, if one arrived (``note_stop_signal``)."""
    return _stop_signal


def stop_reason(exc: BaseException) -> str:
    """Why a run stopped, as a build's error and the command show it.

    A signal the process got wins over the exception the unwinding happened to carry: Ctrl-C through a
    pipe stops the pager too, and the next log line then raises SystemExit(1) (rich) or BrokenPipeError
    in place of the KeyboardInterrupt.
    """
    signum = _stop_signal or (signal.SIGINT if isinstance(exc, KeyboardInterrupt) else None)
    if signum == signal.SIGINT:
        return "stopped by Ctrl-C (SIGINT)"
    if signum is not None:
        return f"stopped by {signal.Signals(signum).name}"
    return f"{type(exc).__name__}: {exc}"


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (elsewhere: nothing).

    For child processes ragops starts (the parsing sandbox, Prefect's API): a ``kill -9`` of the
    command then leaves nothing running. Call it in the child, first thing (or as ``preexec_fn``).
    """
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

