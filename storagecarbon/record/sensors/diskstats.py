"""Device-level IO of block devices, from ``/proc/diskstats``.

Fields used (Documentation/admin-guide/iostats.rst): reads completed, sectors read, writes
completed, sectors written, and ``io_ticks`` (ms the device had IO in flight). Sectors are always
512 B in this file, whatever the device's logical block size. Channels per mapped device:
``bytes_read``, ``bytes_written`` (cumulative B) and ``busy_s`` (cumulative s of io_ticks), summed
over the block devices that back it (several for md/dm stripes).

Wrap handling (the choice, documented): this sensor exposes monotonic counters. ``io_ticks`` is
printed through ``jiffies_to_msecs()`` (an ``unsigned int``), so it wraps at 2**32 ms (49.7 days of
busy time) even on 64-bit kernels; every field is an ``unsigned long`` (32 bits) on 32-bit kernels.
A decrease of a 32-bit field whose last value was in the upper half of its range is unfolded as a
wrap (``+ (raw - last) mod 2**32``); any other decrease is a reset (device re-attached) and counts
from zero again. See :class:`~storagecarbon.record.sensors.base.MonotonicCounter`.

Page cache caveat: small buffered writes reach the device late (writeback) or are merged with
other tenants' IO; the per-process counters (:mod:`.procio`) and LMCache taps
(:mod:`.lmcache_tap`) carry the run's own bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ChannelSpec, MonotonicCounter, Probe, Row, SensorBase

SECTOR_BYTES = 512
# Width of "unsigned long" fields of the running kernel; assume the userland word size.
LONG_BITS = 8 * struct.calcsize("P")


@dataclass(frozen=True)
class DiskStat:
    """One ``/proc/diskstats`` line (raw counters, as the kernel prints them)."""

    major: int
    minor: int
    name: str
    reads_completed: int
    sectors_read: int
    writes_completed: int
    sectors_written: int
    io_ticks_ms: int
    ios_in_progress: int = 0

    @property
    def bytes_read(self) -> int:
        return self.sectors_read * SECTOR_BYTES

    @property
    def bytes_written(self) -> int:
        return self.sectors_written * SECTOR_BYTES


def parse_diskstats(text: str) -> dict[str, DiskStat]:
    """``/proc/diskstats`` text -> ``{device name: DiskStat}``; malformed lines are skipped.

    Accepts the 14-field (pre-4.18), 18-field (discards) and 20-field (flushes) layouts.
    """
    out: dict[str, DiskStat] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 14:
            continue
        try:
            out[f[2]] = DiskStat(
                major=int(f[0]), minor=int(f[1]), name=f[2],
                reads_completed=int(f[3]), sectors_read=int(f[5]),
                writes_completed=int(f[7]), sectors_written=int(f[9]),
                ios_in_progress=int(f[11]), io_ticks_ms=int(f[12]),
            )
        except ValueError:
            continue
    return out


class DiskstatsSensor(SensorBase):
    """``bytes_read``/``bytes_written``/``busy_s`` for devices mapped to block device names.

    ``devices``: device id -> block device names (whole disks, as in ``/proc/diskstats``), from
    :func:`storagecarbon.record.tiermap.map_tiers`. ``busy_s`` of a device backed by several disks is the
    sum of their busy times (unit-seconds, as the power model expects).
    """

    name = "diskstats"

    def __init__(self, devices: dict[str, list[str] | tuple[str, ...] | str], *,
                 path: str | Path = "/proc/diskstats", long_bits: int = LONG_BITS, sys_dir: str | Path | None = None):
        self.map = {d: ([b] if isinstance(b, str) else list(b)) for d, b in devices.items()}
        self.path = Path(path)
        self.long_bits = long_bits
        self._ctr: dict[tuple[str, str], MonotonicCounter] = {}
        self._missing: set[str] = set()
        self._wanted = {b for bs in self.map.values() for b in bs}
        self._fd: int | None = None
        self._sys_fds: dict[str, int] | None = None
        self._sys_last: list[bytes] | None = None   # the last raw stat texts and their rows (unchanged: no IO)
        self._sys_rows: list[Row] | None = None
        self._tk_last: list[Any] | None = None       # the last numbers the native ticker handed over
        self._lent = False                           # the stat files' descriptors are read by the native ticker
        self._retired: list[int] = []                # lent descriptors of a disk gone: closed by close()
        # per-disk stat files: /sys/class/block/<disk>/stat when reading the real /proc/diskstats (or ``sys_dir``)
        self.sys_dir = Path(sys_dir) if sys_dir is not None else (
            Path("/sys/class/block") if self.path == Path("/proc/diskstats") else None)

    def probe(self) -> Probe:
        if not self.map:
            return Probe(False, "no block device is mapped to a storage tier")
        try:
            stats = parse_diskstats(self.path.read_text())
        except OSError as exc:
            return Probe(False, f"{self.path} is not readable ({exc.strerror or exc})")
        absent = sorted({b for bs in self.map.values() for b in bs} - set(stats))
        if absent:
            return Probe(False, f"block device(s) {', '.join(absent)} not in {self.path}")
        return Probe(True, "; ".join(f"{d} = {'+'.join(b)}" for d, b in self.map.items()))

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = []
        for d in self.map:
            out += [(d, "bytes_read", self.name), (d, "bytes_written", self.name), (d, "busy_s", self.name)]
        return out

    def _unfold(self, block: str, field: str, raw: int, bits: int, dev: str = "", metric: str = "") -> float:
        c = self._ctr.get((block, field))
        if c is None:
            c = self._ctr[(block, field)] = MonotonicCounter(width_bits=bits)
        resets = c.resets
        v = c.update(raw)
        if c.resets > resets and dev:
            self.fault(dev, metric, f"{block} {field} counter reset (device re-attached or stats cleared); "
                                    "the increment before the reset is lost", kind="reset")
        return v

    def _last(self, block: str, field: str) -> float:
        c = self._ctr.get((block, field))
        return c.value if c is not None else 0.0

    def rows_from_text(self, text: str) -> list[Row]:
        """Rows for one snapshot of ``/proc/diskstats`` (advances the wrap state)."""
        wanted = self._wanted  # parse only the mapped disks' lines (a host may list hundreds)
        stats = parse_diskstats("\n".join(ln for ln in text.splitlines() if (f := ln.split(None, 3))[2:3] and
                                           f[2] in wanted))
        rows: list[Row] = []
        for dev, blocks in self.map.items():
            br = bw = busy = 0.0
            seen = False
            gone = []
            for b in blocks:
                st = stats.get(b)
                if st is None:
                    # vanished (detached): its counts so far stay in the total, so it never drops
                    self._missing.add(b)
                    gone.append(b)
                    br += self._last(b, "sectors_read") * SECTOR_BYTES
                    bw += self._last(b, "sectors_written") * SECTOR_BYTES
                    busy += self._last(b, "io_ticks_ms") / 1000.0
                    continue
                seen = True
                br += self._unfold(b, "sectors_read", st.sectors_read, self.long_bits, dev, "bytes_read") * SECTOR_BYTES
                bw += self._unfold(b, "sectors_written", st.sectors_written, self.long_bits, dev,
                                   "bytes_written") * SECTOR_BYTES
                busy += self._unfold(b, "io_ticks_ms", st.io_ticks_ms, 32, dev, "busy_s") / 1000.0
            if seen:
                rows += [(dev, "bytes_read", br), (dev, "bytes_written", bw), (dev, "busy_s", busy)]
            else:
                for m in ("bytes_read", "bytes_written", "busy_s"):
                    self.fault(dev, m, f"block device(s) {', '.join(gone)} no longer in {self.path}")
        return rows

    def read(self) -> list[Row]:
        # Per tick: each mapped disk's own /sys/class/block/<name>/stat (the same counters as its
        # /proc/diskstats line, without the kernel formatting every other disk), through open
        # descriptors re-read with pread; /proc/diskstats when a disk has no such file (or the
        # sensor reads another diskstats file, as in tests).
        if self._sys_fds is None:
            self._sys_fds = self._open_sys() if self.sys_dir is not None else {}
        if self._sys_fds and len(self._sys_fds) == len(self._wanted):
            try:
                texts = [os.pread(fd, 4096, 0) for fd in self._sys_fds.values()]
            except OSError:  # a disk went away: /proc/diskstats from now on, which reports it missing
                self._close_sys()
            else:
                if texts == self._sys_last and self._sys_rows is not None:
                    return self._sys_rows   # no IO since the last tick: the same rows (sensors/base.py)
                rows = self._rows_from_fields([d.split() for d in texts])  # sysfs stat: the fields after the name
                self._sys_last, self._tk_last, self._sys_rows = texts, None, rows
                return rows
        if not str(self.path).startswith("/proc/"):
            return self.rows_from_text(self.path.read_text())  # a regular file may be replaced: open it anew
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = 65536
        while True:
            data = os.pread(self._fd, size, 0)
            if len(data) < size:
                break
            size *= 4
        return self.rows_from_text(data.decode("ascii", "replace"))

    def _rows_from_fields(self, fields: list[Any]) -> list[Row]:
        """Rows from each disk's stat fields (``/sys/class/block/<disk>/stat`` order), disks as in ``_sys_fds``."""
        raw = dict(zip(self._sys_fds or {}, fields))
        rows: list[Row] = []
        for dev, blocks in self.map.items():
            br = bw = busy = 0.0
            for b in blocks:
                f = raw[b]
                br += self._unfold(b, "sectors_read", int(f[2]), self.long_bits, dev, "bytes_read") * SECTOR_BYTES
                bw += self._unfold(b, "sectors_written", int(f[6]), self.long_bits, dev,
                                   "bytes_written") * SECTOR_BYTES
                busy += self._unfold(b, "io_ticks_ms", int(f[9]), 32, dev, "busy_s") / 1000.0
            rows += [(dev, "bytes_read", br), (dev, "bytes_written", bw), (dev, "busy_s", busy)]
        return rows

    # ---- the recorder's native ticker (record/ticker.py) reads the stat files on every tick
    def ticker_files(self) -> list[int] | None:
        """Descriptors of the per-disk stat files for the native ticker, or None (read through ``read()``)."""
        if self._sys_fds is None:
            self._sys_fds = self._open_sys() if self.sys_dir is not None else {}
        if self._sys_fds and len(self._sys_fds) == len(self._wanted):
            self._lent = True
            return list(self._sys_fds.values())
        return None

    def rows_from_ticker(self, nums: list[Any]) -> list[Row]:
        """Rows from one tick's numbers of the files of :meth:`ticker_files` (in that order)."""
        if nums == self._tk_last and self._sys_rows is not None:
            return self._sys_rows
        rows = self._rows_from_fields(nums)
        self._tk_last, self._sys_last, self._sys_rows = nums, None, rows
        return rows

    def _close_sys(self) -> None:
        # descriptors lent to the native ticker stay open until close() (after the ticker stopped): closed now, their
        # numbers could be reused by the next open() and the ticker would read another file
        for fd in (self._sys_fds or {}).values():
            if self._lent:
                self._retired.append(fd)
            else:
                os.close(fd)
        self._sys_fds = {}

    def _open_sys(self) -> dict[str, int]:
        fds: dict[str, int] = {}
        assert self.sys_dir is not None
        for b in sorted(self._wanted):
            try:
                fds[b] = os.open(self.sys_dir / b / "stat", os.O_RDONLY)
            except OSError:
                for fd in fds.values():
                    os.close(fd)
                return {}
        return fds

    def close(self) -> None:
        for fd in ([self._fd] if self._fd is not None else []) + list((self._sys_fds or {}).values()) + self._retired:
            os.close(fd)
        self._fd, self._sys_fds, self._retired = None, None, []

    def summary(self) -> dict[str, Any]:
        return {
            "blocks": self.map,
            "wraps": sum(c.wraps for c in self._ctr.values()),
            "resets": sum(c.resets for c in self._ctr.values()),
            "missing_blocks": sorted(self._missing),
        }
