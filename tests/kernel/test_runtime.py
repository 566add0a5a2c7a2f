"""Builds yield the CPU across sessions: the niceness of their session's scheduling group (Linux autogroup),
and the idle scheduling class inside it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testkit.helpers import autogroup_enabled, autogroup_niceness

pytestmark = pytest.mark.skipif(not autogroup_enabled(), reason="the kernel here schedules without session groups")

#: a process that lowers its priority as a build does, then prints its group's niceness (-1: no group), its own
#: niceness and whether it runs in the idle class
LOWER = (
    "import os, sys; from rag.runtime import lower_cpu_priority; lower_cpu_priority(10, idle=sys.argv[1] == 'idle'); "
    "group = open('/proc/self/autogroup').read(); "
    "print(group.split('nice')[1].strip() if 'nice' in group else -1, os.getpriority(os.PRIO_PROCESS, 0), "
    "int(os.sched_getscheduler(0) == os.SCHED_IDLE))"
)


def _lower(*, own_session: bool, idle: bool = True) -> list[int]:
    out = subprocess.run([sys.executable, "-c", LOWER, "idle" if idle else "nice"], capture_output=True, text=True,
                         check=True, start_new_session=own_session).stdout
    return [int(word) for word in out.split()]


@pytest.mark.skipif(autogroup_niceness() is not None, reason="this process runs in a session group")
def test_a_build_in_no_session_group_is_niced_but_not_put_in_the_idle_class() -> None:
    """A session that never called setsid since boot (children of a container's init, CI runners) has no
    group: /proc/self/autogroup is empty. Niceness alone reaches across there; the idle class would starve it."""
    inherited = int(os.sched_getscheduler(0) == os.SCHED_IDLE)  # this process may run a flow's class already
    assert _lower(own_session=False) == [-1, max(10, os.getpriority(os.PRIO_PROCESS, 0)), inherited]


def test_a_build_in_a_session_of_its_own_lowers_its_group() -> None:
    """As cron, systemd or a terminal start it: the group is the build's own, at the build's niceness."""
    before = autogroup_niceness()
    group, own, idle = _lower(own_session=True)
    assert (group, own) == (10, max(10, os.getpriority(os.PRIO_PROCESS, 0)))  # a new session's group starts at 0
    assert idle == 1  # pipeline.idle_class: a waking query-service thread preempts it at once
    assert autogroup_niceness() == before  # not this test's group


def test_without_the_idle_class_the_group_is_lowered_all_the_same() -> None:
    inherited = int(os.sched_getscheduler(0) == os.SCHED_IDLE)  # this process may run a flow's class already
    assert _lower(own_session=True, idle=False) == [10, max(10, os.getpriority(os.PRIO_PROCESS, 0)), inherited]


def test_a_build_started_from_a_shell_leaves_the_shells_group_alone() -> None:
    """A command typed in a shell is in the shell's session, hence its scheduling group: lowering that group
    slowed everything started from the terminal, and the command's own start-up with it. Only the build's
    own threads are lowered there, and not into the idle class (any busy process of the shell would starve
    them). The "shell" is a process of its own session, as a terminal's shell is."""
    shell = ("import subprocess, sys; group = lambda: open('/proc/self/autogroup').read().split('nice')[1].strip(); "
             "before = group(); build = subprocess.Popen([sys.executable, '-c', *sys.argv[1:]], stdout=subprocess.PIPE, "
             "text=True); reported = build.stdout.readline().split(); during = group(); build.communicate(); "
             "print(before, during, *reported[1:])")
    hold = LOWER + "; sys.stdout.flush(); sys.stdin.read()"  # stays lowered until the shell has looked
    out = subprocess.run([sys.executable, "-c", shell, hold, "idle"], capture_output=True, text=True, check=True,
                         start_new_session=True, stdin=subprocess.DEVNULL, timeout=60).stdout
    before, during, own, idle = (int(word) for word in out.split())
    assert (before, during) == (0, 0)  # the shell's group: untouched while the build runs
    assert own == max(10, os.getpriority(os.PRIO_PROCESS, 0)) and idle == 0
