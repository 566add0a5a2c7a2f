"""Process environment that keeps the stack offline and quiet (see ../shared/notes/stack.md).

Entry points (the CLI, each flow) call ``configure_offline_runtime()`` first; nothing runs at import.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
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


def lower_cpu_priority(niceness: int, *, idle: bool = False) -> int:
    """Run this process (and what it starts later) at ``niceness`` or lower priority; never raise it.

    Builds, evaluations and drift checks call this with ``pipeline.niceness`` so that on a shared
    machine they take the CPU a query service leaves idle rather than slowing its answers; the
    commands call it before they start Prefect's API server, which inherits it. On Linux it lowers the
    session's scheduling group too (``lower_session_group_priority``). Where the platform has no
    priorities (Windows) it does nothing. Returns the niceness the process runs at.

    Args:
        idle: also move the threads to Linux's idle scheduling class (SCHED_IDLE,
            ``pipeline.idle_class``), where a session group was lowered: a query-service thread that
            wakes then takes the core at once instead of when a build's time slice ends, while the
            group keeps its share of the CPU against other sessions. Without session groups an
            idle-class process would get almost no CPU while anything else runs, so it is not applied.
    """
    if not hasattr(os, "setpriority"):
        return 0
    grouped = lower_session_group_priority(niceness) is not None
    idle = idle and grouped
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
    return max(niceness, current)


#: Linux's scheduling group of this process's session, and whether the scheduler uses such groups
AUTOGROUP, AUTOGROUP_ENABLED = Path("/proc/self/autogroup"), Path("/proc/sys/kernel/sched_autogroup_enabled")


def lower_session_group_priority(niceness: int) -> int | None:
    """Lower the niceness of this process's session group to ``niceness``; None where there is none.

    With autogroup (on by default in most Linux kernels), the scheduler shares the CPU between sessions
    first and applies niceness only between threads of one session: a build started in a session of its
    own (a terminal, a systemd unit, a cron job, a Prefect worker) at nice 10 still took half of the CPU
    from a query service started in another (docs/benchmarks.md, "Session groups").

    Any process may lower its group's priority. When this process does not lead its session (the group
    is its shell's, say), the group's niceness is put back when it exits, even killed with -9.
    """
    try:
        if AUTOGROUP_ENABLED.read_text().strip() != "1":
            return None
        before = _autogroup_niceness()
    except (OSError, ValueError):  # not Linux, or a kernel without autogroup
        return None
    if before is None:  # the kernel's root group, where threads' niceness alone already applies
        return None
    if before >= niceness:
        return before
    if not _set_autogroup(niceness):  # a read-only /proc (some containers): the threads' niceness still applies
        return before
    if os.getsid(0) != os.getpid():
        _put_the_group_back_at_exit(before, niceness)
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


def _autogroup_niceness() -> int | None:
    """"/autogroup-746 nice 0"; None (an empty file) for a process in no session group: one whose session
    never called setsid since boot, as children of a container's init or a CI runner may be."""
    text = AUTOGROUP.read_text()
    return int(text.split("nice")[1]) if "nice" in text else None


#: run by a watcher in this process's session group: on "done" the process put the group back itself; at end
#: of file it died without doing so (kill -9), and the watcher does it if nobody changed the group since
_WATCHER = (
    'read said; [ "$said" = done ] && exit 0; for try in 1 2 3; do case "$(cat /proc/self/autogroup)" in '
    '*" nice {ours}") echo {before} 2>/dev/null > /proc/self/autogroup && exit 0; sleep 0.11;; *) exit 0;; '
    'esac; done'
)


def _put_the_group_back_at_exit(before: int, ours: int) -> None:
    """Put a shared session group (a shell's) back to ``before`` when this process ends, however it ends.

    atexit does it on a normal exit, a signal the CLI unwinds on, or Ctrl-C. A process killed with -9 runs
    no handler: a watcher started now, in the same session and hence the same group, waits for the end of
    a pipe that only this process holds (the kernel closes it whatever kills it) and does it then.
    """
    read, write = os.pipe()  # close-on-exec: the commands this process starts do not hold the write end
    try:
        # A process group of its own (the session, hence the scheduling group, stays ours): a terminal's
        # Ctrl-C or hang-up, sent to the command's group, does not stop the watcher before it is needed.
        watcher = subprocess.Popen(["/bin/sh", "-c", _WATCHER.format(before=before, ours=ours)], stdin=read,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    except OSError:  # no /bin/sh: atexit alone
        os.close(write)
        watcher = None
    finally:
        os.close(read)
    atexit.register(_restore_autogroup, before, ours, watcher, write)


def _restore_autogroup(before: int, ours: int, watcher: subprocess.Popen | None, said: int) -> None:
    try:
        done = _autogroup_niceness() != ours or _set_autogroup(before)  # unless somebody changed it since
    except (OSError, ValueError):
        done = False
    if watcher is not None and done:  # otherwise the watcher tries once this process is gone
        try:
            os.write(said, b"done\n")
            watcher.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass


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

