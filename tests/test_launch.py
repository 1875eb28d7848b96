"""storagecarbon.record.launch: the one process-group launcher and killer every engine uses."""

import signal
import sys
import time

from storagecarbon.record.launch import end_group, group_members, kill_group, start_group

# a parent that forks a child ignoring SIGTERM, then waits
STUBBORN = ("import os, signal, time\n"
            "if os.fork() == 0:\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "    time.sleep(60)\n"
            "else:\n"
            "    time.sleep(60)\n")


def _wait_members(pgid, n, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(group_members(pgid)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"group {pgid} never had {n} members")


def test_end_group_terms_then_kills_what_ignores_term():
    # GIVEN a command in its own group whose child ignores SIGTERM
    proc = start_group([sys.executable, "-c", STUBBORN])
    _wait_members(proc.pid, 2)
    # WHEN the group is ended with a short grace
    killed = end_group(proc.pid, grace_s=0.5)
    proc.wait(timeout=10)
    # THEN the parent went on SIGTERM, the child needed SIGKILL, and nothing of the group is left
    assert len(killed) == 1 and killed[0] != proc.pid
    assert proc.returncode == -signal.SIGTERM
    assert group_members(proc.pid) == []


def test_kill_group_reaps_the_leader_and_its_children():
    proc = start_group([sys.executable, "-c", STUBBORN])
    _wait_members(proc.pid, 2)
    assert kill_group(proc) == -signal.SIGKILL
    end = time.monotonic() + 5
    while group_members(proc.pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert group_members(proc.pid) == []
