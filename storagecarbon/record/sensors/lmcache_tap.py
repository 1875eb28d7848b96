"""Per-tier KV bytes from the project's LMCache CPU connector taps.

LMCache 0.5.6 has no byte counters for its local disk backend (only usage gauges), so the
project's connector keeps its own and writes them, per process, to
``$STORAGECARBON_TAP_DIR/lmcache-<pid>.json``::

    {"pid": 123, "time_unix": 1.7e9, "chunk_size": 64, "disk_path": "/abs/dir/",
     "counters": {"cpu_bytes_written", "cpu_bytes_read", "disk_bytes_written", "disk_bytes_read",
                  "remote_bytes_written", "remote_bytes_read", "bytes_d2h", "bytes_h2d",
                  "stored_tokens", "hit_tokens"}}

This sensor sums the counters over all pids (a pid whose file vanishes keeps its last values; a
counter that goes down is a restart and counts from zero again) and emits:

* ``app_bytes_written``/``app_bytes_read`` on the disk-tier device (``disk_bytes_*``), the DRAM
  device (``cpu_bytes_*``) and, when given, a remote device (``remote_bytes_*``);
* ``resident_bytes`` of the disk-tier device: the total size (``st_size``) of the files under the
  LMCache disk directory (the tap files' ``disk_path`` when given, else the configured one),
  i.e. what ``du --apparent-size`` would say. Rescanned every ``du_interval_s`` (5 s), or less often
  when a scan is costly (the directory may hold many chunk files: the interval is stretched to
  1000 x the scan's CPU time); the gauge holds in between.

Cost: a look reads each tap's counters page (``lmcache-<pid>.counters``, :mod:`storagecarbon.engines.tap_page`),
mapped once, so a look at an unchanged tap is one integer compared, with no system call; the JSON is read again
only when the page says its metadata changed, or for good after three looks found the page mid-write (a writer
that died there). A tap without a page (an older writer) is ``stat``-ed at each look
and parsed when it was replaced (mtime, size or inode; writers replace it atomically). While a tap changed in the
last ``quiet_after_s`` (2 s) the sensor looks every 0.5 s (a tap publishes at most every 0.1 s), otherwise once a
second, and at once after :meth:`refresh` (the recorder's first and final samples, live phase markers; the disk
folder is not rescanned for it). The folder is listed for new tap files (new processes: their counters are
cumulative, so nothing is lost) every ``discover_s`` (1 s), and a new file is read at the next tick. The bytes of
a burst that starts between two looks are counted at the next one, spread over the time since the last look. A
look that finds every value as before returns the same rows (recorder protocol, ``base.py``).

No tap file yet means no reading yet (no rows), never zeros. GPU<->host transfer bytes and token
counts have no channel in the metric vocabulary; they go to the footer summary.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ...engines.tap_page import KEYS as COUNTERS
from ...engines.tap_page import PageReader, page_path
from .base import ChannelSpec, Every, Probe, Row, SensorBase

TAP_ENV = "STORAGECARBON_TAP_DIR"


def dir_size_bytes(path: str | Path) -> int:
    """Sum of ``st_size`` of regular files under ``path`` (recursive, symlinks not followed)."""
    total = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while scanning (eviction)
        except OSError:
            continue
    return total


def parse_tap(text: str | bytes) -> dict[str, Any]:
    """One tap file's JSON -> dict with ``pid``, ``counters`` (missing counters absent), ``disk_path``."""
    d = json.loads(text)
    if not isinstance(d, dict) or not isinstance(d.get("counters"), dict):
        raise ValueError("tap file has no 'counters' mapping")
    counters = {k: float(v) for k, v in d["counters"].items() if k in COUNTERS and v is not None}
    return {"pid": d.get("pid"), "time_unix": d.get("time_unix"), "counters": counters,
            "disk_path": d.get("disk_path"), "chunk_size": d.get("chunk_size")}


class LMCacheTapSensor(SensorBase):
    name = "lmcache_tap"

    def __init__(self, tap_dir: str | Path | None = None, *, disk_device: str | None = "ssd0",
                 dram_device: str | None = "dram", remote_device: str | None = None,
                 disk_path: str | Path | None = None, du_interval_s: float = 5.0):
        tap_dir = tap_dir if tap_dir is not None else os.environ.get(TAP_ENV)
        self.tap_dir = Path(tap_dir) if tap_dir else None
        self.disk_device = disk_device
        self.dram_device = dram_device
        self.remote_device = remote_device
        self.disk_path = Path(disk_path) if disk_path else None
        self.du_interval_s = du_interval_s
        # per tap file its last counters, and per counter what files' restarts folded in (KeepLast's rule,
        # one dict per file instead of one object per counter: a look costs a few dict operations)
        self._raw: dict[str, dict[str, float]] = {}
        self._base: dict[str, float] = {}
        self._seen_files: set[str] = set()
        self._bad_reads = 0
        self._du = None
        self._du_due = Every(du_interval_s)   # the KV folder's size (a slower Every when a scan is costly)
        self._owns_bytes = True               # the per-tier byte channels are this sensor's (else the plugin's)
        self._look_all = False                # the next read looks at every tap (first and final samples)
        self._sig: dict[str, tuple[int, int, int]] = {}
        self._tot: dict[str, float] | None = None
        self._dir_mtime: int | None = None
        self._listed_unix = 0.0
        self._taps: dict[str, str] = {}   # tap file name -> path
        self.discover_s = 1.0             # new tap files (new processes) are looked for this often
        self._list_due = Every(self.discover_s)
        self.quiet_after_s = 2.0          # no tap changed for this long: look every quiet_every_s only
        self._quiet_due = Every(1.0)      # quiet: a look a second
        self._active_due = Every(0.5)     # changing: two looks a second (a tap publishes at most ten times)
        self._changed_t = -1e9
        self.chunk_size = None
        self._rows: list[Row] | None = None   # the last rows, returned again while nothing changed (base.py)
        self._pages: dict[str, PageReader] = {}   # tap file name -> its counters page, mapped once
        self._no_page: set[str] = set()            # tap files without a page (looked for again at each listing)
        self._pages_given_up: set[str] = set()     # pages left mid-write by a writer that died: the JSON is read
        self._meta: dict[str, int] = {}            # tap file name -> metadata generation of its page last read
        self._du_missing_t = -1e9             # the KV folder did not exist then (looked for every du interval)

    def probe(self) -> Probe:
        if self.tap_dir is None:
            return Probe(False, f"no tap directory (set {TAP_ENV} or pass tap_dir)")
        try:
            self.tap_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return Probe(False, f"tap directory {self.tap_dir} cannot be created ({exc.strerror or exc})")
        return Probe(True, f"tap files {self.tap_dir}/lmcache-<pid>.json")

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = []
        for dev in (self.disk_device, self.dram_device, self.remote_device):
            if dev:
                out += [(dev, "app_bytes_written", self.name), (dev, "app_bytes_read", self.name)]
        if self.disk_device:
            out.append((self.disk_device, "resident_bytes", self.name))
        return out

    def _disk_usage(self) -> float | None:
        if self.disk_path is None:
            return None
        now = time.monotonic()
        due = self._du_due.due(now)
        if self._du is None or due:
            if now - self._du_missing_t < self.du_interval_s:
                return None   # not there a moment ago: looked for again at the scan's cadence
            if not self.disk_path.is_dir():
                self._du_missing_t = now
                return None
            c0 = time.thread_time()
            self._du = float(dir_size_bytes(self.disk_path))
            # a directory of many chunk files costs a stat each: rescan less often, so that the
            # scan stays under 0.1 % of a core (the gauge holds in between)
            every = max(self.du_interval_s, 1000.0 * (time.thread_time() - c0))
            if every > self._du_due.interval_s * 1.5 or every < self._du_due.interval_s / 1.5:
                self._du_due = Every(every)
                self._du_due.due(now)
        return self._du

    def _list_taps(self) -> None:
        """Find tap files (new LMCache processes). Writers replace files by rename, which changes the
        folder's mtime: while it has not changed since a listing made more than 1 s after it, the
        listing is skipped."""
        assert self.tap_dir is not None
        try:
            dir_mtime = os.stat(self.tap_dir).st_mtime_ns
            if dir_mtime == self._dir_mtime and self._listed_unix - dir_mtime / 1e9 > 1.0:
                return
            self._listed_unix = time.time()
            for e in os.scandir(self.tap_dir):
                if e.name.startswith("lmcache-") and e.name.endswith(".json") and e.name not in self._taps:
                    self._taps[e.name] = e.path
            self._dir_mtime = dir_mtime
        except OSError:
            pass

    def read(self) -> list[Row]:
        assert self.tap_dir is not None
        now = time.monotonic()
        if self._list_due.due(now) or not self._taps:
            self._list_taps()
            self._no_page.clear()
        new_tap = len(self._sig) < len(self._taps)   # a new tap file is read at once
        if not self._owns_bytes and not new_tap and not self._look_all:
            # the stat-logger plugin owns the per-tier bytes: the taps are read once each (for the KV folder's
            # path), and then only the folder's size is this sensor's
            du_rows = self._du_rows()
            if du_rows == self._rows:
                return self._rows
            self._rows = du_rows
            return du_rows
        look_all, self._look_all = self._look_all, False
        if not new_tap and not look_all and not (
                self._active_due.due(now) if now - self._changed_t < self.quiet_after_s else self._quiet_due.due(now)):
            return []   # not due: no reading this tick (the last one holds until the next look)
        changed = False
        for name, path in self._taps.items():
            page = self._pages.get(name)
            if page is None and name not in self._no_page and name not in self._pages_given_up:
                try:
                    page = self._pages[name] = PageReader(page_path(path))
                except (OSError, ValueError):   # an older writer, or not created yet: the JSON path
                    self._no_page.add(name)
            if page is not None and page.busy >= 3:   # found mid-write three looks in a row: its writer died
                page.close()                          # there; the JSON (written first) has its last counters
                del self._pages[name]
                self._pages_given_up.add(name)
                page = None
            if page is not None:   # no system call: one integer compared while the tap is unchanged
                got = page.read()
                if got is None:
                    continue   # unchanged, or being written (the next look takes it)
                meta, vals = got
                tap = None
                if self._meta.get(name) != meta:   # new metadata (disk path, chunk size): the JSON has it
                    tap = self._read_json(path)
                    if tap is not None:
                        self._meta[name] = meta
                new = dict(zip(COUNTERS, vals))
                self._sig.setdefault(name, (0, 0, 0))
            else:
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # removed, or between a writer's unlink and rename: keep last values
                sig = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._sig.get(name) == sig:
                    continue  # unchanged since the last read (taps are replaced atomically)
                tap = self._read_json(path)
                if tap is None:
                    continue
                self._sig[name] = sig
                new = tap["counters"]
            changed = True
            self._changed_t = now
            self._seen_files.add(name)
            old = self._raw.get(name)
            if old is not None:
                for k, v in new.items():
                    o = old.get(k)
                    if o is not None and v < o:   # this file's counter went down (counters reset): keep what it had
                        self._base[k] = self._base.get(k, 0.0) + o
            self._raw[name] = new
            if tap is not None:
                if tap.get("disk_path"):  # the path LMCache really uses wins over the configured one
                    dp = str(tap["disk_path"])
                    dpath = Path(dp[len("file://"):] if dp.startswith("file://") else dp)
                    if dpath != self.disk_path:
                        self.disk_path, self._du, self._du_missing_t = dpath, None, -1e9
                self.chunk_size = tap.get("chunk_size") or self.chunk_size
        rows: list[Row] = []
        if self._seen_files:
            if changed or self._tot is None:
                self._tot = self._totals()
            tot = self._tot
            for dev, pre in ((self.disk_device, "disk"), (self.dram_device, "cpu"), (self.remote_device, "remote")):
                if dev:
                    rows += [(dev, "app_bytes_written", tot[f"{pre}_bytes_written"]),
                             (dev, "app_bytes_read", tot[f"{pre}_bytes_read"])]
        rows += self._du_rows()
        if rows == self._rows:
            return self._rows   # every channel as before: the same list (recorder protocol, base.py)
        self._rows = rows
        return rows

    def _du_rows(self) -> list[Row]:
        du = self._disk_usage() if self.disk_device else None
        return [(self.disk_device, "resident_bytes", du)] if du is not None and self.disk_device else []

    def use_channels(self, kept: set[tuple[str, str]]) -> None:
        """Told by the recorder which of its channels it owns: when none of the per-tier byte channels are (the
        stat-logger plugin's are), the tap files are not looked at again after their first read."""
        self._owns_bytes = any(m in ("app_bytes_written", "app_bytes_read") for _, m in kept)

    def _read_json(self, path: str) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.read(fd, 1 << 20)   # a tap file is a few hundred bytes
            finally:
                os.close(fd)
            return parse_tap(data)
        except (OSError, ValueError):  # being rewritten or removed: keep last values
            self._bad_reads += 1
            return None

    def close(self) -> None:
        for page in self._pages.values():
            page.close()
        self._pages.clear()

    def _totals(self) -> dict[str, float]:
        """Per counter: the sum over tap files (a vanished file keeps its last values) and their folded resets."""
        raws = list(self._raw.values())
        return {c: self._base.get(c, 0.0) + sum(r.get(c, 0.0) for r in raws) for c in COUNTERS}

    @property
    def next_read_s(self) -> float:
        """Every tick while the taps change (or none was found yet); else the next quiet look (recorder protocol)."""
        if not self._taps:   # no tap file yet: the folder is listed for one every discover_s
            return self._list_due.next_s
        if len(self._sig) < len(self._taps):
            return -math.inf
        if not self._owns_bytes:
            return min(self._list_due.next_s, self._du_due.next_s if self.disk_path is not None else math.inf)
        due = self._active_due if time.monotonic() - self._changed_t < self.quiet_after_s else self._quiet_due
        return min(due.next_s, self._list_due.next_s)

    def refresh(self) -> None:
        """The next :meth:`read` looks at every tap file (the disk folder keeps its own, cost-bound cadence); also
        when the plugin owns the bytes, so the footer's totals (checked against the plugin's) are the final ones."""
        self.refresh_at_marker()
        self._look_all = True

    def refresh_at_marker(self) -> None:
        """After a live marker: as :meth:`refresh`, but taps whose bytes the plugin owns are not looked at."""
        self._quiet_due.refresh()
        self._active_due.refresh()
        self._du_missing_t = -1e9

    def summary(self) -> dict[str, Any]:
        return {
            "tap_files": sorted(self._seen_files),
            "totals": self._totals() if self._seen_files else None,
            "disk_path": str(self.disk_path) if self.disk_path else None,
            "disk_resident_bytes_last": self._du,
            "chunk_size": self.chunk_size,
            "unreadable_reads": self._bad_reads,
        }
