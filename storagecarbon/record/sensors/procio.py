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

import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from ...trace import DeviceEntry
from .base import ChannelSpec, Every, Probe, Row, SensorBase

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


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` the sensors use (times in s, memory in bytes).

    A named tuple, not a dataclass: one is built per member per tick on the sampling path."""

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
    f = text[rpar + 2:].split(None, 23)
    # f[0] is field 3 (state); field n is f[n - 3]
    return ProcStat(int(text[:lpar]), text[lpar + 1:rpar], f[0], int(f[1]), int(f[2]), int(f[3]),
                    (int(f[11]) + int(f[12])) / clk_tck, (int(f[13]) + int(f[14])) / clk_tck,
                    int(f[19]), int(f[21]) * page_bytes)


def _pread(fd: int) -> bytes | None:
    """The whole of a small procfs file through an open descriptor (procfs regenerates it per read)."""
    try:
        return os.pread(fd, 4096, 0)
    except OSError:  # ESRCH: the process is gone (reaped)
        return None


class ProcTree:
    """The members of a process tree (see module docstring), re-read at most every ``max_age_s``.

    Shared by :class:`ProcIOSensor` and :class:`~storagecarbon.record.sensors.memory.MemorySensor` so one
    tick reads ``/proc`` once. Cost per tick is what a 10 Hz recorder can afford (issue 13: at most
    200 us of CPU per sample for all default sensors):

    * members' ``stat`` and ``io`` files stay open and are re-read with ``pread`` (no path lookup
      per read; a descriptor follows its process, so a reused pid can never be read by mistake);
    * membership comes from a scan of ``/proc``, done only when a new pid has been allocated
      since the last one (the last field of ``/proc/loadavg``, per pid namespace) and at most every
      ``rescan_s``, and in any case every ``max_rescan_s``; a scan lists ``/proc`` and reads only
      the pids it has not classified before (see :meth:`_full_scan`). Between scans a member that
      exits is dropped when its descriptor answers ESRCH;
    * members' ``stat`` (CPU time, RSS, membership) is read every ``stat_interval_s``, and at once
      after :meth:`invalidate` (the recorder's first and final samples, ``sample_now(fresh=True)``);
      ``io`` every 0.5 s when its channels are used (5 s for the footer's totals when not). When a member's ``io`` answers ESRCH (it was
      reaped), :class:`ProcIOSensor` re-reads every member at once, so a parent that absorbed its
      child's counters is never counted next to the child.

    A child that starts and exits between two scans is not lost: its parent reaps it and its IO
    and CPU time land in the parent's counters. ``attach(pid)`` sets the root after the command is
    started. ``close()`` releases the descriptors (reading again reopens them).
    """

    def __init__(self, root_pid: int | None = None, *, session: int | None = None,
                 proc_root: str | Path = "/proc", max_age_s: float = 0.02, rescan_s: float = 2.0,
                 max_rescan_s: float = 10.0, stat_interval_s: float = 2.0):
        self.root_pid = root_pid
        self.session = session
        self.proc_root = Path(proc_root)
        self._proc = str(proc_root)
        self.max_age_s = max_age_s
        self.rescan_s = rescan_s
        self.max_rescan_s = max_rescan_s
        self.stat_interval_s = stat_interval_s
        self._stat_due = Every(stat_interval_s)
        self.version = 0  # bumped by every fresh read of the members
        self._snap: list[ProcStat] = []
        self._snap_t = -1.0
        self._scan_t = -1e9
        self._scan_lastpid: bytes | None = None
        self._prev_lastpid: bytes | None = None
        self._outside: set[int] = set()   # pids seen and found outside the tree
        self._pid_checked_t = -1e9
        self._known: dict[int, int] = {}  # member pid -> start ticks
        self._fd_stat: dict[int, int] = {}
        self._fd_io: dict[int, int] = {}
        self._fd_loadavg: int | None = None
        self._order_key: tuple[int, ...] = ()
        self._order: dict[int, int] = {}
        self.max_members = 0
        self.full_scans = 0

    def attach(self, pid: int, session: int | None = None) -> None:
        self.root_pid = pid
        self.session = session
        self._snap_t = -1.0
        self._scan_t = -1e9
        self._outside.clear()
        self.invalidate()

    @property
    def next_stat_s(self) -> float:
        """When :meth:`members` reads the members' ``stat`` again (monotonic s)."""
        return self._stat_due.next_s

    def invalidate(self) -> None:
        """The next :meth:`members` reads every member again (e.g. for a final sample)."""
        self._stat_due.refresh()
        self._snap_t = -1.0

    def close(self) -> None:
        for fds in (self._fd_stat, self._fd_io):
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            fds.clear()
        if self._fd_loadavg is not None:
            os.close(self._fd_loadavg)
            self._fd_loadavg = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

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

    def _last_pid(self) -> bytes | None:
        """The last pid allocated in this pid namespace (``/proc/loadavg``), or None if unreadable."""
        if self._fd_loadavg is None:
            try:
                self._fd_loadavg = os.open(f"{self._proc}/loadavg", os.O_RDONLY)
            except OSError:
                return None
        data = _pread(self._fd_loadavg)
        return data.rsplit(None, 1)[-1] if data else None

    def _full_scan(self) -> dict[int, str]:
        """Stat texts of the members (root's descendants + its session), classifying only the pids
        not seen before: a process outside the tree never joins it (reparenting goes to init or a
        subreaper, a session is fixed at setsid), so known outsiders are not read again. After a pid
        wrap (the last allocated pid went down) everything is read again."""
        try:
            pids = {int(n) for n in os.listdir(self._proc) if n.isdigit()}
        except OSError:
            return {}
        last = self._scan_lastpid
        if last is not None and self._prev_lastpid is not None and last.isdigit() and \
                self._prev_lastpid.isdigit() and int(last) < int(self._prev_lastpid):
            self._outside.clear()
        self._prev_lastpid = last
        self._outside &= pids
        members: set[int] = {p for p in self._known if p in pids}
        texts: dict[int, str] = {}
        pending: dict[int, tuple[int, int]] = {}
        for pid in pids:
            if pid in members or pid in self._outside:
                continue
            t = self._stat_text(pid)
            if t is None:
                continue
            try:
                f = t[t.rindex(")") + 2:].split(" ", 5)
                pending[pid] = (int(f[1]), int(f[3]))
            except (ValueError, IndexError):
                continue
            texts[pid] = t
        changed = True
        while changed:  # a new child may come before its new parent in the listing
            changed = False
            for pid, (ppid, sid) in list(pending.items()):
                if pid == self.root_pid or ppid in members or (self.session is not None and sid == self.session):
                    members.add(pid)
                    del pending[pid]
                    changed = True
        self._outside.update(pending)
        for pid in members:
            if pid not in texts:
                fd = self._fd(self._fd_stat, pid, "stat")
                data = _pread(fd) if fd is not None else None
                if data:
                    texts[pid] = data.decode("utf-8", "replace")
        self.full_scans += 1
        return {p: texts[p] for p in members if p in texts}

    def _fd(self, cache: dict[int, int], pid: int, name: str) -> int | None:
        fd = cache.get(pid)
        if fd is None:
            try:
                fd = cache[pid] = os.open(f"{self._proc}/{pid}/{name}", os.O_RDONLY)
            except OSError:
                return None
        return fd

    def _drop(self, pid: int) -> None:
        for cache in (self._fd_stat, self._fd_io):
            fd = cache.pop(pid, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _scan_due(self, now: float) -> bool:
        age = now - self._scan_t
        if age < self.rescan_s:
            return False
        if age >= self.max_rescan_s:
            return True
        if now - self._pid_checked_t < 0.5:  # /proc/loadavg at most twice a second
            return False
        self._pid_checked_t = now
        last = self._last_pid()
        return last is None or last != self._scan_lastpid

    def members(self, refresh: bool = False) -> list[ProcStat]:
        """Live members, parents before children (top-down). ``refresh``: re-read every member now."""
        if self.root_pid is None:
            return []
        now = time.monotonic()
        if not refresh and (now - self._snap_t <= self.max_age_s or not self._stat_due.due(now)):
            return self._snap
        stats: dict[int, ProcStat] = {}
        scanned = self._scan_due(now)
        if scanned:
            self._scan_lastpid = self._last_pid()  # before the scan: a pid allocated during it rescans
            texts: dict[int, str] = self._full_scan()
            self._scan_t = now
            for pid in list(self._fd_stat):
                if pid not in texts:
                    self._drop(pid)
        else:
            texts = {}
            for pid in self._known:
                fd = self._fd(self._fd_stat, pid, "stat")
                data = _pread(fd) if fd is not None else None
                if data:
                    texts[pid] = data.decode("utf-8", "replace")
                else:
                    self._drop(pid)
        for pid, t in texts.items():
            try:
                st = parse_proc_stat(t)
            except (ValueError, IndexError):
                continue
            if pid in self._known and self._known[pid] != st.start_ticks:
                self._drop(pid)  # pid reused: the old descriptors belong to the old process
                if not scanned:
                    continue
            stats[pid] = st
        self._known = {p: st.start_ticks for p, st in stats.items()}
        key = tuple(sorted(stats))
        if key != self._order_key:
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
            self._order_key, self._order = key, depth
        depth = self._order
        ordered = sorted(stats.values(), key=lambda st: (depth[st.pid], st.pid)) if len(stats) > 1 else list(stats.values())
        self._snap, self._snap_t = ordered, now
        self.version += 1
        self.max_members = max(self.max_members, len(ordered))
        return ordered

    def read_io_values(self, pid: int) -> tuple[int, ...] | None:
        """``IO_FIELDS`` of a member from its open ``io`` file; None when it is gone. Raises
        PermissionError when the file cannot be opened (another user's process)."""
        fd = self._fd_io.get(pid)
        if fd is None:
            try:
                fd = self._fd_io[pid] = os.open(f"{self._proc}/{pid}/io", os.O_RDONLY)
            except FileNotFoundError:
                return None
        data = _pread(fd)
        if not data:
            self._drop(pid)
            return None
        return parse_proc_io_values(data)

    def read_io(self, pid: int) -> dict[str, int]:
        fd = os.open(f"{self._proc}/{pid}/io", os.O_RDONLY)
        try:
            return parse_proc_io(os.read(fd, 4096).decode())
        finally:
            os.close(fd)


def parse_proc_io_values(data: bytes) -> tuple[int, ...]:
    """``/proc/<pid>/io`` bytes -> the :data:`IO_FIELDS` values in order (fast path for the
    kernel's fixed layout; falls back to :func:`parse_proc_io`, missing fields as 0 never happen
    there: the kernel prints all seven)."""
    lines = data.split(b"\n")
    if len(lines) >= 7 and all(lines[i].startswith(_IO_PREFIXES[i]) for i in range(7)):
        return tuple(int(lines[i][len(_IO_PREFIXES[i]):]) for i in range(7))
    d = parse_proc_io(data.decode())
    return tuple(d[f] for f in IO_FIELDS)


_IO_PREFIXES = tuple(f"{f}: ".encode() for f in IO_FIELDS)


class _TreeTotals:
    """Monotonic totals over a tree's members, with the reaping rule of the module docstring.

    Per member, per field, the semantics of :class:`~storagecarbon.record.sensors.base.KeepLast` (a
    decrease is a restart: the old value is kept in a base), with the running totals updated
    incrementally (the sampling path touches each member once per tick).
    """

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        n = len(fields)
        self._n = n
        self.last: dict[tuple[int, int], list[float]] = {}
        self.base: dict[tuple[int, int], list[float]] = {}
        self.total = [0.0] * n
        self.parent: dict[tuple[int, int], tuple[int, int] | None] = {}
        self.out = {f: 0.0 for f in fields}
        self._out = [0.0] * n

    def update_values(self, values: Mapping[tuple[int, int], Sequence[float]],
                      members: list[ProcStat]) -> list[float]:
        """``values``: member key -> all fields in order. Returns the totals in field order."""
        by_pid = {m.pid: m.key for m in members}
        parent = self.parent
        for m in members:
            parent[m.key] = by_pid.get(m.ppid)
        tot, last, base, n = self.total, self.last, self.base, self._n
        for key, vals in values.items():
            old = last.get(key)
            if old is None:
                last[key] = list(vals)
                for i in range(n):
                    tot[i] += vals[i]
                continue
            for i in range(n):
                v, o = vals[i], old[i]
                if v < o:  # restarted with the same key: keep what it had
                    b = base.get(key)
                    if b is None:
                        b = base[key] = [0.0] * n
                    b[i] += o
                    tot[i] += v
                else:
                    tot[i] += v - o
                old[i] = v
        if len(parent) > len(by_pid):
            live = set(by_pid.values())
            for key in [k for k in parent if k not in live]:
                par = parent.pop(key)
                if par is not None and par in live:  # absorbed into the live parent's counters
                    gone_last = last.pop(key, None)
                    gone_base = base.pop(key, None)
                    for i in range(n):
                        tot[i] -= (gone_last[i] if gone_last else 0.0) + (gone_base[i] if gone_base else 0.0)
        out = self._out
        for i in range(n):
            if tot[i] > out[i]:
                out[i] = tot[i]
        return out

    def update(self, values: dict[tuple[int, int], dict[str, float]], members: list[ProcStat]) -> dict[str, float]:
        """Like :meth:`update_values` with ``{field: value}`` mappings (fields left out keep their values)."""
        vals = {}
        for key, d in values.items():
            old = self.last.get(key)
            vals[key] = [float(d[f]) if f in d else (old[i] if old else 0.0) for i, f in enumerate(self.fields)]
        out = self.update_values(vals, members)
        self.out = dict(zip(self.fields, out))
        return dict(self.out)

    def totals(self) -> dict[str, float]:
        return dict(zip(self.fields, self._out))


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
        self._io_due = Every(0.5)  # members' io: twice a second (a counter: the bytes between reads are spread)
        self._owns_io = True
        self._cpu_version = -1
        self._io_version = -1
        rk, wk = ("read_bytes", "write_bytes") if counters == "storage" else ("rchar", "wchar")
        self._rk, self._wk = IO_FIELDS.index(rk), IO_FIELDS.index(wk)
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
        io: dict[tuple[int, int], tuple[int, ...]] = {}
        now = time.monotonic()
        if self._io_due.due(now):
            io, gone = self._read_io(members)
            if gone:  # a member was reaped: its parent's counters now hold its share; re-read all
                members = self.tree.members(refresh=True)
                io, _ = self._read_io(members)
        if io or self.tree.version != self._io_version:   # else nothing new: the totals stand
            t_io = self._io.update_values(io, members)
            self._io_version = self.tree.version
        else:
            t_io = self._io._out
        t_cpu = self._cpu.update_values({m.key: (m.cpu_total_s,) for m in members}, members) \
            if self.tree.version != self._cpu_version else self._cpu._out
        rows: list[Row] = []
        if self.disk_device and self._owns_io:
            rows += [(self.disk_device, "app_bytes_read", t_io[self._rk]),
                     (self.disk_device, "app_bytes_written", t_io[self._wk])]
        if self.host_device and self.tree.version != self._cpu_version:
            self._cpu_version = self.tree.version  # a new reading, not the held one again
            rows.append((self.host_device, "cpu_time_s", t_cpu[0]))
        return rows

    @property
    def next_read_s(self) -> float:
        """Nothing new before the next ``io`` read or members' ``stat`` read (recorder protocol, see base)."""
        if self.tree.root_pid is None or self.tree.version != self._cpu_version:
            return -math.inf
        return min(self._io_due.next_s, self.tree.next_stat_s)

    def refresh(self) -> None:
        """Read everything fresh on the next :meth:`read` (the recorder's first and final samples)."""
        self.tree.invalidate()
        self._io_due.refresh()

    def use_channels(self, kept: set[tuple[str, str]]) -> None:
        """Told by the recorder which of its channels it owns: when another sensor (LMCache's
        taps) owns the disk's app bytes, ``io`` is read every 5 s, for the footer totals only."""
        if self.disk_device and (self.disk_device, "app_bytes_written") not in kept \
                and (self.disk_device, "app_bytes_read") not in kept:
            self._io_due, self._owns_io = Every(5.0), False

    def _read_io(self, members: list[ProcStat]) -> tuple[dict[tuple[int, int], tuple[int, ...]], bool]:
        io: dict[tuple[int, int], tuple[int, ...]] = {}
        gone = False
        seen = self.pids_seen
        for m in members:
            seen.add(m.pid)
            if m.pid in self.denied:
                continue
            try:
                vals = self.tree.read_io_values(m.pid)
            except PermissionError:
                self.denied.add(m.pid)
                continue
            except OSError:
                vals = None
            if vals is None:
                gone = True  # exited: it keeps its last values
            else:
                io[m.key] = vals
        return io, gone

    def close(self) -> None:
        self.tree.close()

    def summary(self) -> dict[str, Any]:
        return {
            "counters": self.counters,
            "totals": self._io.totals(),
            "cpu_time_s": self._cpu.totals()["cpu_s"],
            "processes_seen": len(self.pids_seen),
            "io_permission_denied_pids": sorted(self.denied)[:20],
        }

    def devices(self) -> list[DeviceEntry]:
        return []
