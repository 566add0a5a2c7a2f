"""Builds yield the CPU across sessions: the niceness of their session's scheduling group (Linux autogroup),
and the idle scheduling class inside it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import autogroup_enabled, autogroup_niceness

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


def test_a_build_that_shares_its_session_puts_the_group_back_when_it_exits() -> None:
    """In a shell's session the group is the shell's too: lowered while the build runs, then as it was.

    The "shell" is a process of its own session (this test's own group may already be lowered by the
    flows other tests ran in this process)."""
    shell = ("import subprocess, sys; group = lambda: open('/proc/self/autogroup').read().split('nice')[1].strip(); "
             "before = group(); build = subprocess.run([sys.executable, '-c', *sys.argv[1:]], capture_output=True, "
             "text=True, check=True).stdout.split()[0]; print(before, build, group())")
    out = subprocess.run([sys.executable, "-c", shell, LOWER, "idle"], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout
    before, during, after = (int(word) for word in out.split())
    assert (before, during, after) == (0, 10, 0)


def test_a_build_that_shares_its_session_and_is_killed_with_9_puts_the_group_back_all_the_same() -> None:
    """kill -9 runs no exit handler: the watcher the build started in its session puts the shell's group back."""
    build = ("import sys, time; from rag.runtime import lower_cpu_priority; lower_cpu_priority(10); "
             "print('lowered', flush=True); time.sleep(60)")
    shell = ("import subprocess, sys, time; group = lambda: open('/proc/self/autogroup').read().split('nice')[1].strip(); "
             "before = group(); build = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE, "
             "text=True); build.stdout.readline(); during = group(); build.kill(); build.wait(); "
             "deadline = time.monotonic() + 3\n"
             "while group() != before and time.monotonic() < deadline: time.sleep(0.02)\n"
             "print(before, during, group())")
    out = subprocess.run([sys.executable, "-c", shell, build], capture_output=True, text=True, check=True,
                         start_new_session=True, timeout=60).stdout
    assert [int(word) for word in out.split()] == [0, 10, 0]
