"""Per-process IO and CPU time of a process tree, from ``/proc/<pid>/io`` and ``/proc/<pid>/stat``.

Why per process: LMCache and vLLM write small files through the page cache, so the device counters
of ``/proc/diskstats`` see the bytes late, merged with everybody else's, or not at all within a
short run. ``/proc/<pid>/io`` charges bytes to the process that caused them:

* ``read_bytes`` / ``write_bytes``: bytes the process caused to be fetched from / sent to the
  storage layer (block level; ``write_bytes`` is charged when a page is dirtied, before
  writeback). The default counters for ``app_bytes_read`` / ``app_bytes_written``.
* ``rchar`` / ``wchar``: bytes passed to ``read``/``write``-like syscalls (page-cache hits,
  pipes and sockets included). Chosen with ``counters="syscall"``; always in the footer summary.

The tree is the root pid, all its descendants, and every process of the root's session (the
recorder starts commands with ``start_new_session=True``, so orphans reparented to init are still
counted). Processes that exit keep their last values, so totals never go backwards, with one
subtlety handled here: when a parent reaps a child, Linux adds the child's IO and CPU time to the
parent's own counters (``signal->ioac``, ``cutime``). A vanished member whose parent is a live
member was absorbed that way and is dropped; one reaped outside the tree (by init or by the
recorder) keeps its last values. Members are read parents first, and the exposed totals are
clamped to never decrease, so a reap that races the scan cannot show as a counter reset.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..trace import DeviceEntry
from .base import ChannelSpec, KeepLast, Probe, Row, SensorBase

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
IO_FIELDS = ("rchar", "wchar", "syscr", "syscw", "read_bytes", "write_bytes", "cancelled_write_bytes")


def parse_proc_io(text: str) -> dict[str, int]:
    """``/proc/<pid>/io`` text -> ``{field: int}`` (``rchar``, ``wchar``, ``read_bytes``, ...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, val = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = int(val.strip())
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the sensors use (times in s, memory in bytes)."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    cpu_self_s: float      # utime + stime
    cpu_children_s: float  # cutime + cstime (reaped children)
    start_ticks: int       # starttime: with pid, identifies a process across pid reuse
    rss_bytes: int

    @property
    def cpu_total_s(self) -> float:
        return self.cpu_self_s + self.cpu_children_s

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)


def parse_proc_stat(text: str, *, clk_tck: int = CLK_TCK, page_bytes: int = PAGE_BYTES) -> ProcStat:
    """Parse ``/proc/<pid>/stat`` (the command name may hold spaces and parentheses)."""
    lpar = text.index("(")
    rpar = text.rindex(")")
    pid = int(text[:lpar].strip())
    comm = text[lpar + 1:rpar]
    f = text[rpar + 2:].split()
    # f[0] is field 3 (state); field n is f[n - 3]
    return ProcStat(
        pid=pid, comm=comm, state=f[0], ppid=int(f[1]), pgrp=int(f[2]), session=int(f[3]),
        cpu_self_s=(int(f[11]) + int(f[12])) / clk_tck,
        cpu_children_s=(int(f[13]) + int(f[14])) / clk_tck,
        start_ticks=int(f[19]),
        rss_bytes=int(f[21]) * page_bytes,
    )


class ProcTree:
    """The members of a process tree (see module docstring), re-read at most every ``max_age_s``.

    Shared by :class:`ProcIOSensor` and :class:`~storagecarbon.sensors.memory.MemorySensor` so one
    tick reads ``/proc`` once. Membership is found by a full ``/proc`` scan every ``rescan_s``; in
    between only the known members' ``stat`` files are re-read (cheap: a few files, not all
    processes). A child that starts and exits between two scans is not lost: its parent reaps it
    and its IO and CPU time land in the parent's counters. ``attach(pid)`` sets the root after the
    command is started.
    """

    def __init__(self, root_pid: int | None = None, *, session: int | None = None,
                 proc_root: str | Path = "/proc", max_age_s: float = 0.02, rescan_s: float = 0.5):
        self.root_pid = root_pid
        self.session = session
        self.proc_root = Path(proc_root)
        self._proc = str(proc_root)
        self.max_age_s = max_age_s
        self.rescan_s = rescan_s
        self._snap: list[ProcStat] = []
        self._snap_t = -1.0
        self._scan_t = -1e9
        self._known: dict[int, int] = {}  # member pid -> start ticks
        self.max_members = 0
        self.full_scans = 0

    def attach(self, pid: int, session: int | None = None) -> None:
        self.root_pid = pid
        self.session = session
        self._snap_t = -1.0
        self._scan_t = -1e9

    def _stat_text(self, pid: int | str) -> str | None:
        try:
            fd = os.open(f"{self._proc}/{pid}/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 4096).decode("utf-8", "replace")
        except OSError:
            return None
        finally:
            os.close(fd)

    def _full_scan(self) -> dict[int, str]:
        """All processes' stat texts, and the member set (root's descendants + its session)."""
        texts: dict[int, str] = {}
        ppid: dict[int, int] = {}
        in_session: list[int] = []
        try:
            names = os.listdir(self._proc)
        except OSError:
            return {}
        for n in names:
            if not n.isdigit():
                continue
            t = self._stat_text(n)
            if t is None:
                continue
            try:
                f = t[t.rindex(")") + 2:].split(" ", 5)
                pid = int(n)
                ppid[pid] = int(f[1])
                if self.session is not None and int(f[3]) == self.session:
                    in_session.append(pid)
            except (ValueError, IndexError):
                continue
            texts[pid] = t
        children: dict[int, list[int]] = {}
        for p, pp in ppid.items():
            children.setdefault(pp, []).append(p)
        stack = in_session + ([self.root_pid] if self.root_pid in texts else [])
        keep: set[int] = set()
        while stack:
            p = stack.pop()
            if p in keep:
                continue
            keep.add(p)
            stack.extend(children.get(p, ()))
        self.full_scans += 1
        return {p: texts[p] for p in keep}

    def members(self) -> list[ProcStat]:
        """Live members, parents before children (top-down)."""
        if self.root_pid is None:
            return []
        now = time.monotonic()
        if now - self._snap_t <= self.max_age_s:
            return self._snap
        stats: dict[int, ProcStat] = {}
        if now - self._scan_t >= self.rescan_s:
            texts = self._full_scan()
            self._scan_t = now
        else:
            texts = {}
            for pid in self._known:
                t = self._stat_text(pid)
                if t is not None:
                    texts[pid] = t
        for pid, t in texts.items():
            try:
                st = parse_proc_stat(t)
            except (ValueError, IndexError):
                continue
            if pid in self._known and self._known[pid] != st.start_ticks and not self._scan_t == now:
                continue  # pid reused by a process outside the tree
            stats[pid] = st
        self._known = {p: st.start_ticks for p, st in stats.items()}
        # order top-down: depth within the member forest (parents before children)
        depth: dict[int, int] = {}
        for p in stats:
            chain: list[int] = []
            q = p
            while q in stats and q not in depth and q not in chain:
                chain.append(q)
                q = stats[q].ppid
            base = depth.get(q, -1)
            for i, x in enumerate(reversed(chain)):
                depth[x] = base + 1 + i
        ordered = sorted(stats.values(), key=lambda st: (depth[st.pid], st.pid))
        self._snap, self._snap_t = ordered, now
        self.max_members = max(self.max_members, len(ordered))
        return ordered

    def read_io(self, pid: int) -> dict[str, int]:
        fd = os.open(f"{self._proc}/{pid}/io", os.O_RDONLY)
        try:
            return parse_proc_io(os.read(fd, 4096).decode())
        finally:
            os.close(fd)


class _TreeTotals:
    """Monotonic totals over a tree's members, with the reaping rule of the module docstring."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self.acc = {f: KeepLast() for f in fields}
        self.parent: dict[tuple[int, int], tuple[int, int] | None] = {}
        self.out = {f: 0.0 for f in fields}

    def update(self, values: dict[tuple[int, int], dict[str, float]],
               members: list[ProcStat]) -> dict[str, float]:
        live = {m.key for m in members}
        by_pid = {m.pid: m.key for m in members}
        for m in members:
            self.parent[m.key] = by_pid.get(m.ppid)
        for key, vals in values.items():
            for f in self.fields:
                if f in vals:
                    self.acc[f].update(key, vals[f])
        for key in list(self.parent):
            if key in live:
                continue
            par = self.parent.pop(key)
            if par is not None and par in live:
                for f in self.fields:
                    self.acc[f].forget(key)   # absorbed into the live parent's counters
        for f in self.fields:
            self.out[f] = max(self.out[f], self.acc[f].total())
        return dict(self.out)


class ProcIOSensor(SensorBase):
    """``app_bytes_read``/``app_bytes_written`` of a process tree on ``disk_device`` and its
    ``cpu_time_s`` on ``host_device`` (either may be None to leave the channel out)."""

    name = "procio"

    def __init__(self, tree: ProcTree, *, disk_device: str | None = None, host_device: str | None = "host",
                 counters: str = "storage"):
        if counters not in ("storage", "syscall"):
            raise ValueError("counters must be 'storage' (read_bytes/write_bytes) or 'syscall' (rchar/wchar)")
        self.tree = tree
        self.disk_device = disk_device
        self.host_device = host_device
        self.counters = counters
        self._io = _TreeTotals(IO_FIELDS)
        self._cpu = _TreeTotals(("cpu_s",))
        self.denied: set[int] = set()
        self.pids_seen: set[int] = set()

    def probe(self) -> Probe:
        p = self.tree.proc_root / "self" / "io"
        try:
            parse_proc_io(p.read_text())
        except OSError as exc:
            return Probe(False, f"{p} is not readable ({exc.strerror or exc}); kernel without task IO accounting?")
        return Probe(True, f"{self.counters} counters of the process tree")

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = []
        if self.disk_device:
            out += [(self.disk_device, "app_bytes_read", self.name), (self.disk_device, "app_bytes_written", self.name)]
        if self.host_device:
            out.append((self.host_device, "cpu_time_s", self.name))
        return out

    def read(self) -> list[Row]:
        if self.tree.root_pid is None:
            return []
        members = self.tree.members()
        io: dict[tuple[int, int], dict[str, float]] = {}
        cpu: dict[tuple[int, int], dict[str, float]] = {}
        for m in members:
            self.pids_seen.add(m.pid)
            cpu[m.key] = {"cpu_s": m.cpu_total_s}
            try:
                io[m.key] = self.tree.read_io(m.pid)
            except PermissionError:
                self.denied.add(m.pid)
            except OSError:
                pass  # exited between the scan and the read: it keeps its last values
        t_io = self._io.update(io, members)
        t_cpu = self._cpu.update(cpu, members)
        rows: list[Row] = []
        if self.disk_device:
            rk, wk = ("read_bytes", "write_bytes") if self.counters == "storage" else ("rchar", "wchar")
            rows += [(self.disk_device, "app_bytes_read", t_io[rk]), (self.disk_device, "app_bytes_written", t_io[wk])]
        if self.host_device:
            rows.append((self.host_device, "cpu_time_s", t_cpu["cpu_s"]))
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            "counters": self.counters,
            "totals": {f: self._io.out[f] for f in IO_FIELDS},
            "cpu_time_s": self._cpu.out["cpu_s"],
            "processes_seen": len(self.pids_seen),
            "io_permission_denied_pids": sorted(self.denied)[:20],
        }

    def devices(self) -> list[DeviceEntry]:
        return []
