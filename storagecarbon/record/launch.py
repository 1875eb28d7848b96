"""Process groups: the one place that starts a command in its own group and signals or ends the group.

Every engine and ``record`` start their workers and served commands with :func:`start_group` (a new session,
so the command and everything it forks share one process group that outlives reparenting to init) and stop
them with :func:`signal_group` / :func:`end_group`. Members are found with ``psutil`` (a process's group id
from ``os.getpgid``; zombies are not members).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import psutil


def start_group(argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen)`` in a new session: its pid is its process group id."""
    return subprocess.Popen(list(argv), start_new_session=True, **popen)


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the process group (a group that is gone, or not ours, is no error)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue
            if os.getpgid(p.pid) == pgid:
                out.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def end_group(pgid: int, grace_s: float, exclude: int | None = None,
              first: int = signal.SIGTERM) -> list[int]:
    """Send ``first`` (SIGTERM) to the group, SIGKILL what is left after ``grace_s``; returns the pids that
    needed SIGKILL (``exclude``: a member not waited for, e.g. the caller itself)."""
    alive = [p for p in group_members(pgid) if p != exclude]
    if not alive:
        return []
    signal_group(pgid, first)
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        alive = [p for p in group_members(pgid) if p != exclude]
        if not alive:
            return []
        time.sleep(0.05)
    alive = group_members(pgid)
    signal_group(pgid, signal.SIGKILL)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and [p for p in group_members(pgid) if p != exclude]:
        time.sleep(0.02)
    return alive


def kill_group(proc: subprocess.Popen[Any]) -> int:
    """SIGKILL a started group at once and reap its leader; its exit status."""
    signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()
