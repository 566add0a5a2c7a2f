"""Builds yield the CPU across sessions: the niceness of their session's scheduling group (Linux autogroup)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import autogroup_enabled, autogroup_niceness

pytestmark = pytest.mark.skipif(not autogroup_enabled(), reason="the kernel here schedules without session groups")

#: a process that lowers its priority as a build does, then prints its group's niceness and its own
LOWER = (
    "import os, sys; from rag.runtime import lower_cpu_priority; lower_cpu_priority(10); "
    "print(open('/proc/self/autogroup').read().split('nice')[1].strip(), os.getpriority(os.PRIO_PROCESS, 0))"
)


def _lower(*, own_session: bool) -> list[int]:
    out = subprocess.run([sys.executable, "-c", LOWER], capture_output=True, text=True, check=True,
                         start_new_session=own_session).stdout
    return [int(word) for word in out.split()]


def test_a_build_in_a_session_of_its_own_lowers_its_group() -> None:
    """As cron, systemd or a terminal start it: the group is the build's own, at the build's niceness."""
    before = autogroup_niceness()
    group, own = _lower(own_session=True)
    assert (group, own) == (max(10, before), max(10, os.getpriority(os.PRIO_PROCESS, 0)))
    assert autogroup_niceness() == before  # not this test's group


def test_a_build_that_shares_its_session_puts_the_group_back_when_it_exits() -> None:
    """In a shell's session the group is the shell's too: lowered while the build runs, then as it was."""
    before = autogroup_niceness()
    if before >= 10:
        pytest.skip(f"this session's group already runs at niceness {before}")
    group, _ = _lower(own_session=False)
    assert group == 10
    assert autogroup_niceness() == before
