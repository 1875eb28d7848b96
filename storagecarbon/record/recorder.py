"""The recorder: samples sensors at a fixed rate into a Trace, and records commands.

``Recorder(path, header_base, sensors, hz)`` probes its sensors, writes the trace header
(``source="measured"``, sensor availability with reasons, host inventory, tool versions), then one
thread samples the sensors at absolute deadlines ``t_k = t0 + k / hz``: each tick calls every sensor
that has something due (a sensor that reads some sources at a lower rate, such as NVML's energy counter
every 30 s, says when through ``next_read_s``; docs/methodology.md, "Sampling cadence"); the first and
final samples read every source, and the tick after a live phase marker (:func:`refreshes`) every source a
sensor does not leave out at a cut (``refresh_at_marker``: NVML's energy counter, placed by the power readings). A tick that
runs late skips the deadlines it missed instead of bursting, and counts them as overruns. Rows are
stamped on the monotonic clock, ``t_s = monotonic() - monotonic_at_start`` (taken just before each
sensor's read), so a wall-clock jump (NTP step, manual change) never makes sample times go back or
leap; the header keeps the wall-clock start ``t0_unix`` for calendar time. Markers come from
``marker()`` calls and from a JSON-lines file (``{"t_unix", "event", "label"}``) that any child
process appends to (its path is in ``$STORAGECARBON_MARKERS``; see :func:`emit_marker`); a marker's
wall-clock time is placed on the sample clock by its age (wall now - ``t_unix``), so markers stay
in step with samples across a jump; the marker file is read every :data:`MARKERS_EVERY_S`. The trace is
flushed at least every second, so a ``kill -9`` of the recording process loses at most the last second
and the file reads back with ``truncated=True`` (it is fsynced every 5 s and at close).

A channel's reading is written when its value changes, and otherwise at least every ``hold_s`` (1 s): a
run of equal readings keeps its first and its last row (the last one is written when the value changes,
a marker arrives, every source is refreshed after a live marker, the channel's sensor fails, or the recording
stops). Counters' deltas and gauges'
levels between rows are therefore those of every tick, and phase boundaries keep the tick's resolution;
the rows a constant channel would repeat ten times a second are not written. ``hold_s=0`` writes every
reading.

Faults (see docs/reliability.md): a sensor that raises, or a channel a sensor reports as failed,
becomes a labelled gap (``gap_start``/``gap_end`` markers, listed in the footer), never a zero; a
counter reset is labelled (``counter_reset``); a failed trace write (disk full) stops the recording
there, keeps what was written readable and raises :class:`~storagecarbon.errors.TraceWriteError`.

``record_command(argv, out_path, ...)`` runs a command in its own process group under a
recorder with the default sensors for it, forwards SIGINT/SIGTERM to the group, kills the group on
timeout (exit code 124), and always closes the trace.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import TraceWriteError
from .launch import end_group, group_members, signal_group, start_group
from .sensors.base import WORKLOAD_DEVICE, Every, Probe
from ..trace import DeviceEntry, TraceHeader, TraceWriter, host_inventory, make_channels, tool_versions

MARKERS_ENV = "STORAGECARBON_MARKERS"
TAP_ENV = "STORAGECARBON_TAP_DIR"
# Loopback only and no telemetry, for every recorded command (vLLM, LMCache, HF).
QUIET_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "LMCACHE_TRACK_USAGE": "false",
}
TIMEOUT_EXIT = 124
PROFILE_ENV = "STORAGECARBON_RECORDER_PROFILE"
"""Set to 1: the footer's ``recorder.profile`` gives the sampling thread's CPU per source (sensor reads, marker
file, flushes); for benchmarks, since it adds two clock reads per sensor read."""


@dataclass
class Ending:
    """What a recording knows at its end, for a ``finish`` callback of :meth:`Recorder.stop`: the one way an
    engine adds what only the end reveals (phases derived from requests' timings, the serving window, latency
    from vLLM's histograms) to the trace it is writing, before it closes (no rewrite afterwards).

    The callback returns a dict with any of ``markers`` (``(t_s, event, label)`` on the trace's clock),
    ``summary`` (footer fields) and ``notes`` (footer ``notes``, read with the header's)."""

    t0_unix: float
    t_end: float                              # t_s of the last sample
    markers: list[tuple[float, str, str]]     # every marker written, (t_s, event, label)
    sensors: dict[str, Any]                   # each sensor's summary (the footer's ``sensors``)


REFRESH_MIN_S = 0.2
SLEEP_MAX_S = 0.25
"""The sampling thread waits for its next tick with ``time.sleep`` when it is this close (the cheapest wait)."""
MARKERS_EVERY_S = 0.2
"""The marker file is read this often (a marker carries its own time: reading it later moves nothing)."""
MARKERS_GRID_S = 0.5
"""Native sampler: after a marker woke the thread, the next markers are read at the first wake after the next multiple
of this (at most this late, or a second when no source is due sooner)."""


def refreshes(event: str) -> bool:
    """Whether a live marker makes the next tick read every source, including those read at a lower rate
    (process CPU time and RSS, vLLM's metrics, NVML's gauges): every marker but the per-request ones
    (``request_*``) and the stat-logger plugin's data lines (``vllm_stats``, ``vllm_engine_ready``), at most once
    every :data:`REFRESH_MIN_S`, so that a phase that starts on a live marker starts at a fresh reading of every
    counter, and the last scrape of a server that stops after the load's end comes after that end."""
    return not event.startswith("request") and event not in ("vllm_stats", "vllm_engine_ready")


def emit_marker(event: str, label: str = "", *, path: str | Path | None = None, t_unix: float | None = None) -> bool:
    """Append a marker for the recorder watching this process (no-op without ``$STORAGECARBON_MARKERS``).

    For code running under :func:`record_command`: ``emit_marker("phase_start", "prefill")``.
    One ``O_APPEND`` write per line, so concurrent writers do not interleave. Returns whether
    a marker was written.
    """
    path = path or os.environ.get(MARKERS_ENV)
    if not path:
        return False
    line = json.dumps({"t_unix": time.time() if t_unix is None else t_unix, "event": event, "label": label}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return True


class _MarkerTail:
    """Reads complete new lines of a JSON-lines marker file."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = 0
        self.partial = b""
        self.bad_lines = 0
        self._fd: int | None = None

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def read(self) -> list[tuple[float, str, str]]:
        # called every tick: one fstat of an open descriptor when nothing was appended
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            size = os.fstat(self._fd).st_size
            if size <= self.pos:
                return []
            chunks: list[bytes] = []
            got = 0
            while got < size - self.pos:   # what fstat saw (more, written since, is read next time)
                c = os.pread(self._fd, size - self.pos - got, self.pos + got)
                if not c:
                    break
                chunks.append(c)
                got += len(c)
            data = b"".join(chunks)
        except OSError:
            return []
        self.pos += len(data)
        buf = self.partial + data
        lines = buf.split(b"\n")
        self.partial = lines.pop()
        lines = [ln for ln in lines if ln.strip()]
        try:   # the lines as one JSON array: one parse for many markers (per-request markers come in bursts)
            ds = json.loads(b"[" + b",".join(lines) + b"]") if len(lines) > 1 else None
        except ValueError:
            ds = None
        if ds is not None and len(ds) != len(lines):   # a malformed line with a comma: one by one
            ds = None
        out = []
        for k, ln in enumerate(lines):
            try:
                d = ds[k] if ds is not None else json.loads(ln)
                out.append((float(d["t_unix"]), str(d["event"]), str(d.get("label", ""))))
            except (ValueError, KeyError, TypeError, AttributeError):
                self.bad_lines += 1
        return out


def _as_device(d: Any) -> DeviceEntry:
    return d if isinstance(d, DeviceEntry) else DeviceEntry(**d)


def _scenario_echo(scenario: Any) -> dict[str, Any] | None:
    if scenario is None:
        return None
    if hasattr(scenario, "model_dump"):
        return scenario.model_dump(mode="json")
    return dict(scenario)


class Recorder:
    """Samples ``sensors`` at ``hz`` into a trace at ``path`` (see module docstring).

    ``header_base``: ``source`` (default ``"measured"``), ``devices`` (:class:`DeviceEntry` list,
    typically :func:`storagecarbon.record.tiermap.map_tiers`), ``scenario`` (echo), ``notes``, ``host``
    (merged over :func:`host_inventory`), ``sensors`` (extra availability entries, e.g. sensors
    left out before construction). ``probed``: probe results already obtained (sensor name ->
    :class:`Probe`), so those sensors are not probed twice. ``listeners``: callables
    ``fn(recorder, rows, markers)`` called in the sampling thread after each tick with the
    ``(t_s, channel, value)`` rows written since the last call (what the trace gets) and the ``(t_s, event, label)`` markers drained from the marker
    file (e.g. :class:`storagecarbon.fleet.export.LiveExporter`); they must be cheap.
    """

    def __init__(self, path: str | Path, header_base: dict[str, Any] | None = None, sensors: Sequence[Any] = (),
                 hz: float = 10.0, markers_file: str | Path | None = None, *, flush_s: float = 1.0,
                 fsync: bool = True, probed: dict[str, Probe] | None = None,
                 clock: Any = time.monotonic, wall_clock: Any = time.time, opener: Any = None,
                 listeners: Sequence[Any] = (), hold_s: float = 1.0, profile: bool | None = None,
                 native: bool | None = None):
        if not hz > 0:
            raise ValueError("hz must be > 0")
        self.path = Path(path)
        self.header_base = dict(header_base or {})
        self.sensors = list(sensors)
        self.hz = float(hz)
        self.markers_file = Path(markers_file) if markers_file else None
        self.flush_s = flush_s
        self.fsync = fsync
        self.probed = dict(probed or {})
        self._clock = clock            # sample times (monotonic)
        self._wall = wall_clock        # t0_unix and the age of wall-clock markers
        self._opener = opener          # file opener for the trace (tests inject faults)
        self.listeners = list(listeners)  # fn(recorder, rows, markers) per tick (live exporters)
        self.hold_s = float(hold_s)    # an unchanged reading is written at least this often
        self._last: dict[int, tuple[float, float]] = {}  # channel -> (t_s, value) of its last written row
        self._held: dict[int, float] = {}                 # channel -> t_s of its latest unwritten reading
        self.held_rows = 0
        self._take_faults: dict[str, Any] = {}   # sensor name -> its take_faults, if it has one
        self.marker_log: list[tuple[float, str, str]] = []   # every marker written (for a finish callback)
        self._out_rows: list[tuple[float, int, float]] | None = [] if self.listeners else None  # for listeners
        self.header: TraceHeader | None = None
        self.t0_unix = 0.0
        self._t0_mono = 0.0
        self._writer: TraceWriter | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # the sampling thread sleeps with time.sleep up to SLEEP_MAX_S (a stop then waits at most that long), and
        # in one lock acquire with a timeout beyond (released by a stop). Measured on the 2-vCPU VM, CPU per
        # 0.1-s wait: time.sleep 44-64 µs, Lock.acquire 67-92 µs, Event.wait 86-116 µs (a Condition and a lock
        # built per call)
        self._wake = threading.Lock()
        self._wake.acquire()
        self._thread_cpu = 0.0
        self._thread_ticks = 0
        self._thread: threading.Thread | None = None
        self._active: list[tuple[Any, dict[tuple[str, str], int]]] = []
        self._paced: list[bool] = []
        self._next_read: list[float] = []   # per active sensor: no read() before this monotonic time
        # a sensor whose read() returns the very list it returned last time read every channel as before: its
        # channels are held in one step (the tick's time, per sensor), expanded per channel when a row is due
        self._prev_rows: list[Any] = []
        self._prev_got: list[set[int]] = []
        self._hold_until: list[float] = []
        self._same_t: dict[int, float] = {}
        self._feeds: list[int] = []   # active sensors handed the marker file's new lines (feed_markers)
        self._tail: _MarkerTail | None = None
        self._last_flush = 0.0
        self.ticks = 0
        self.overruns = 0
        self.rows = 0
        self.markers = 0
        self._cpu_sum = 0.0
        self._cpu_per_s: list[float] = []   # the sampling work's CPU per whole second of the recording (footer)
        self._thr_per_s: list[float] = []   # native sampler: both threads' whole CPU per second (footer)
        self._cpu_max = 0.0
        self._wall_sum = 0.0
        self._wall_max = 0.0
        self.errors: dict[str, dict[str, Any]] = {}
        self._gap_open: dict[int, dict[str, Any]] = {}   # channel id -> open gap
        self.gaps: list[dict[str, Any]] = []               # closed gaps
        self.counter_resets: list[dict[str, Any]] = []
        self._ch_name: dict[int, str] = {}
        self._has_read: set[int] = set()
        self._markers_due = Every(MARKERS_EVERY_S)   # the marker file is looked at 5 times a second
        self._refresh_due = False      # a live phase marker arrived: the next tick reads every source
        self._refresh_t = -math.inf    # when the last such refresh ran (at most one a second)
        self.refreshes = 0
        # per-source CPU of the sampling thread (footer ``recorder.profile``); off by default: it adds two clock
        # reads per sensor read. On with ``profile=True`` or ``$STORAGECARBON_RECORDER_PROFILE=1``.
        self.profile = os.environ.get(PROFILE_ENV, "") not in ("", "0") if profile is None else bool(profile)
        self._prof: dict[str, list[float]] = {}   # name -> [cpu_s, calls]
        self._prof_seg = "before_load"            # the profile is also kept per part of the run: before the load's
        self._prof_segs: dict[str, dict[str, list[float]]] = {}   # start, during it, after its end (live markers)
        self._seg_ticks: dict[str, int] = {}
        # the native ticker (record/ticker.py): sources read on every tick (disk counters, RAPL) are read in C, and
        # this thread wakes only when one of its own sources is due, a marker arrives, or a flush is due
        self.native = native               # None: where it can run (and $STORAGECARBON_NATIVE is not 0)
        self.sampler = "python"
        self.sampler_why = ""
        self._ticker: Any = None
        self._tk_sensors: list[tuple[int, int, int]] = []   # (active index, its first file, past its last file)
        self._tk_idx: set[int] = set()
        self._tk_t: dict[int, float] = {}    # active index -> t_s of its latest reading fed from the ticker
        self._tk_cpu = 0.0                   # the ticker thread's CPU, as of the last drain
        self._tk_final: dict[str, Any] = {}
        self._py_wakes = 0                   # sample_now calls of the native-mode loop (not samples)
        self._prof_tk_ticks = 0
        self._wake_r = self._wake_w = -1     # pipe: a stop (and the ticker, without inotify) wakes the thread
        self._ino = -1                       # inotify on the marker file
        self._marker_signal = False
        self.write_error: TraceWriteError | None = None
        self.started = False
        self.stopped = False

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "Recorder":
        if self.started:
            return self
        self.started = True
        sensors_hdr: dict[str, dict[str, Any]] = dict(self.header_base.get("sensors", {}))
        specs: list[tuple[str, str, str]] = []
        owner: dict[tuple[str, str], str] = {}
        active: list[Any] = []
        for s in self.sensors:
            pr = self.probed.get(s.name)
            if pr is None:
                try:
                    pr = s.probe()
                except Exception as exc:  # noqa: BLE001 - a sensor must never stop a recording
                    pr = Probe(False, f"probe raised {type(exc).__name__}: {exc}")
            entry = pr.as_header()
            if pr.available:
                dropped = []
                for dev, metric, sname in s.channels():
                    if (dev, metric) in owner:
                        dropped.append(f"{dev}.{metric} (kept from {owner[(dev, metric)]})")
                        continue
                    owner[(dev, metric)] = s.name
                    specs.append((dev, metric, sname))
                if dropped:
                    entry["dropped_channels"] = dropped
                active.append(s)
            sensors_hdr[s.name] = entry
        channels = make_channels(specs)
        devices = [_as_device(d) for d in self.header_base.get("devices", [])]
        have = {d.id for d in devices}
        for s in active:
            for d in s.devices():
                if d.id not in have:
                    devices.append(d)
                    have.add(d.id)
        notes = list(self.header_base.get("notes", []))
        orphans = sorted({c.device for c in channels} - have - {WORKLOAD_DEVICE})
        if orphans:
            notes.append(f"channels on undeclared devices (not aggregated): {', '.join(orphans)}")
        host = host_inventory()
        host.update(self.header_base.get("host", {}))
        versions = tool_versions()
        versions.update(self.header_base.get("tool_versions", {}))
        self.t0_unix = float(self._wall())
        self._t0_mono = float(self._clock())
        self.header = TraceHeader(
            source=self.header_base.get("source", "measured"), devices=devices, channels=channels,
            t0_unix=self.t0_unix, sensors=sensors_hdr, scenario=_scenario_echo(self.header_base.get("scenario")),
            host=host, tool_versions=versions, notes=notes,
        )
        cid = {(c.device, c.metric): c.id for c in channels}
        self._ch_name = {c.id: f"{c.device}.{c.metric}" for c in channels}
        for s in active:
            mine = {(d, m): cid[(d, m)] for d, m, _ in s.channels() if owner.get((d, m)) == s.name}
            self._active.append((s, mine))
            self._paced.append(hasattr(s, "next_read_s"))   # it says when it has something new (sensors/base.py)
            self._next_read.append(-math.inf)
            self._prev_rows.append(None)
            self._prev_got.append(set())
            self._hold_until.append(-math.inf)
            take = getattr(s, "take_faults", None)
            if callable(take):
                self._take_faults[s.name] = take
            if callable(getattr(s, "use_channels", None)):
                s.use_channels(set(mine))  # a sensor may skip reads whose channels another sensor owns
        self._choose_sampler()
        self.header.sensors["recorder"] = {
            "available": True, "sampler": self.sampler,
            "reason": f"{self.hz:g} Hz, flush every {self.flush_s:g} s, an unchanged reading written every "
                      f"{self.hold_s:g} s; " + (f"sources read on every tick are read by the native ticker "
                                               f"({', '.join(self._active[i][0].name for i in sorted(self._tk_idx))})"
                                               if self.sampler == "native" else
                                               f"sampled in Python ({self.sampler_why})")}
        self._writer = TraceWriter(self.path, self.header, flush_s=self.flush_s, fsync=self.fsync,
                                   opener=self._opener)
        self._last_flush = time.monotonic()
        if self.markers_file is not None:
            self._tail = _MarkerTail(self.markers_file)
            for i, (s, _) in enumerate(self._active):   # sensors of the marker file's lines: fed from one read
                mf = getattr(s, "markers_file", None)
                if callable(getattr(s, "use_marker_feed", None)) and mf is not None and \
                        Path(mf).resolve() == self.markers_file.resolve():
                    s.use_marker_feed()
                    self._feeds.append(i)
        self.sample_now(fresh=True)  # the first sample reads every source
        if self._ticker is not None:
            self._ticker.start(self._t0_mono + 1.0 / self.hz)
        self._thread = threading.Thread(target=self._run, name="storagecarbon-recorder", daemon=True)
        self._thread.start()
        return self

    def _choose_sampler(self) -> None:
        """The native ticker when every source is either read on every tick from counter files (``ticker_files``)
        or paced (``next_read_s``), the clock is the real monotonic clock and the ticker builds; else Python."""
        why = ""
        files: list[tuple[int, list[int]]] = []
        if self.native is False:
            why = "native ticker off for this recorder"
        elif self._clock is not time.monotonic:
            why = "a test clock"
        else:
            for i, (s, _) in enumerate(self._active):
                fn = getattr(s, "ticker_files", None)
                got = fn() if callable(fn) else None
                if got:
                    files.append((i, list(got)))
                elif not self._paced[i]:
                    why = f"{s.name} is read on every tick"
                    break
            else:
                if not files:
                    why = "no source is read on every tick"
        if not why:
            from . import ticker as native_ticker

            ok, reason = native_ticker.available()
            if not ok:
                why = f"native ticker {reason}"
            else:
                ino = -1
                if self.markers_file is not None:
                    try:   # the recorder's marker file exists from the start, so it can be watched
                        os.close(os.open(self.markers_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
                        ino = native_ticker.watch_file(self.markers_file)
                    except OSError:
                        ino = -1
                r, w_ = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w_, False)
                flat: list[int] = []
                for i, fds in files:
                    self._tk_sensors.append((i, len(flat), len(flat) + len(fds)))
                    self._tk_idx.add(i)
                    flat += fds
                try:
                    self._ticker = native_ticker.Ticker(
                        flat, 1.0 / self.hz, self.hold_s, wake_fd=w_,
                        marker_path=str(self.markers_file) if self.markers_file is not None and ino < 0 else None)
                except (RuntimeError, MemoryError) as exc:
                    why = f"native ticker failed: {exc}"
                    for fd in (r, w_) + ((ino,) if ino >= 0 else ()):
                        os.close(fd)
                    self._tk_sensors, self._tk_idx = [], set()
                else:
                    self._wake_r, self._wake_w, self._ino = r, w_, ino
                    self.sampler = "native"
                    if ino >= 0:   # inotify wakes the thread for a marker; the file is also looked at once a second
                        self._markers_due = Every(1.0)
        self.sampler_why = why

    def _ticker_failed(self, why: str) -> None:
        """A counter file failed in the ticker: stop it; its sensors read in Python from now on (and the sampling
        thread ticks at ``hz`` again)."""
        tk, self._ticker = self._ticker, None
        if tk is not None:
            tk.stop()
            self._tk_cpu_final(tk)
        self.sampler_why = f"native ticker stopped: {why}"
        for i in self._tk_idx:
            self._next_read[i] = -math.inf
        self._tk_idx = set()

    def _tk_cpu_final(self, tk: Any) -> None:
        self._tk_add_cpu(tk.cpu_s())
        self._tk_final = tk.stats()
        tk.close()

    def _per_second(self, per_s: list[float], d: float) -> None:
        sec = int(time.monotonic() - self._t0_mono)
        if 0 <= sec < 86_400:   # the first day of a recording (the footer keeps one number a second)
            if sec >= len(per_s):
                per_s.extend([0.0] * (sec + 1 - len(per_s)))
            per_s[sec] += d

    def _tk_add_cpu(self, cpu: float) -> None:
        d = cpu - self._tk_cpu
        if d <= 0:
            return
        self._tk_cpu = cpu
        self._per_second(self._thr_per_s, d)
        if self.profile:
            for table in (self._prof, self._prof_segs.setdefault(self._prof_seg, {})):
                e = table.setdefault("(native ticker)", [0.0, 0])
                e[0] += d
                e[1] += 1
        self._per_second(self._cpu_per_s, d)

    def _drain_ticker(self, w: TraceWriter, tail: bool) -> None:
        """Feed the ticker's kept ticks to their sensors, in time order, at the ticks' own times. ``tail`` (a marker
        or a refresh follows): the readings also hold until the latest tick, so a run of equal readings ends there."""
        tk = self._ticker
        slots, last = tk.drain()
        t0 = self._t0_mono
        for t, tprev, per in slots:
            for i, a, b in self._tk_sensors:
                nums = per[a:b]
                if any(n is None for n in nums):
                    s = self._active[i][0]
                    self._ticker_failed(f"a counter file of {s.name} could not be read")
                    return
                ts = t - t0
                tl = self._tk_t.get(i, -math.inf)
                if ts <= tl:
                    continue    # read directly since (a refresh): this older reading adds nothing
                prev = self._prev_rows[i]
                if tprev >= 0 and prev is not None and tprev - t0 > tl:
                    # the readings before this change lasted until the tick before it
                    self._read_sensor(w, self._active[i][0], self._active[i][1], i, tprev - t0, rows=prev)
                self._read_sensor(w, self._active[i][0], self._active[i][1], i, ts, nums=nums)
                self._tk_t[i] = ts
        if tail and last >= 0:
            tl_s = last - t0
            for i, _, _ in self._tk_sensors:
                prev = self._prev_rows[i]
                if prev is not None and tl_s > self._tk_t.get(i, -math.inf):
                    self._read_sensor(w, self._active[i][0], self._active[i][1], i, tl_s, rows=prev)
                    self._tk_t[i] = tl_s
        self._tk_add_cpu(tk.last_cpu_s)
        if self.profile:   # per part of the run: samples are the ticker's ticks
            nt = tk.ticks
            self._seg_ticks[self._prof_seg] = self._seg_ticks.get(self._prof_seg, 0) + nt - self._prof_tk_ticks
            self._prof_tk_ticks = nt

    def _flush_due(self) -> float:
        """When the trace is flushed next: ``flush_s`` after the last flush; with the native ticker, at the next
        multiple of ``flush_s`` on the monotonic clock, with the sources' reads (``Every``), so the flush costs no
        wake-up of its own (the interval between flushes never exceeds ``flush_s``)."""
        w = self._writer
        last = max(self._last_flush, w._last_flush) if w is not None else self._last_flush
        if self._ticker is None or self.flush_s <= 0:
            return last + self.flush_s
        return (math.floor(last / self.flush_s) + 1) * self.flush_s

    def _python_due(self) -> float:
        """When the native-mode loop must run next (monotonic s): a paced source, a flush, a refresh."""
        due = math.inf
        nxt = self._next_read
        for i in range(len(nxt)):
            if nxt[i] < due:
                due = nxt[i]
        due = min(due, self._flush_due())
        if self._refresh_due:
            due = min(due, self._refresh_t + REFRESH_MIN_S)
        return due

    def _run(self) -> None:
        c0 = time.thread_time()
        try:
            if self._ticker is not None:
                self._run_native()
            if not self._stop.is_set() and self._writer is not None and not self._writer.closed:
                self._run_python()
        finally:
            # the whole thread's CPU, sleeping and waking included (the per-tick figures time sample_now only)
            self._thread_cpu = time.thread_time() - c0

    def _run_native(self) -> None:
        """Wake when a paced source or a flush is due, or a marker arrives, or at a stop; the ticker reads the
        per-tick sources meanwhile. A marker wakes the thread at once (inotify); after that, the watch is off until
        the next multiple of MARKERS_GRID_S, and markers written meanwhile are read at the first wake after it (the
        sources' own wakes fall on the same grid), so a stream of per-request markers costs no wake-ups of its own."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        ino = self._ino
        ino_on = ino >= 0
        if ino_on:
            poller.register(ino, select.POLLIN)
        markers_ok = 0.0
        stop = self._stop
        period = 1.0 / self.hz
        woke = -math.inf
        c_prev = time.thread_time()
        while not stop.is_set() and self._ticker is not None:
            now = time.monotonic()
            # at most one wake a tick, whatever a source says (one that is due on every tick is read at hz)
            due = max(self._python_due(), woke + period)
            ev = poller.poll(min(max(0.0, due - now), 3600.0) * 1000.0)
            if stop.is_set():
                break
            if ino >= 0 and not ino_on and time.monotonic() >= markers_ok:
                poller.register(ino, select.POLLIN)   # markers written while the watch was off join this wake
                ino_on = True
                ev = ev + poller.poll(0)
            for fd, _ in ev:
                if fd == ino:
                    if not ino_on:
                        continue
                    try:
                        os.read(ino, 65536)
                    except OSError:
                        pass
                    poller.unregister(ino)
                    ino_on = False
                    markers_ok = (math.floor(time.monotonic() / MARKERS_GRID_S) + 1) * MARKERS_GRID_S
                    self._marker_signal = True
                else:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                    self._marker_signal = True
            if self._marker_signal or time.monotonic() >= due - Every.SLACK_S:
                woke = time.monotonic()
                self._py_wakes += 1
                self.sample_now()
            c = time.thread_time()   # this thread's whole CPU, waits and wake-ups included, per second
            self._per_second(self._thr_per_s, c - c_prev)
            c_prev = c

    def _run_python(self) -> None:
        period = 1.0 / self.hz
        # after the native ticker stopped: from the next deadline on
        k = int((time.monotonic() - self._t0_mono) / period) + 1 if self._tk_sensors else 1
        wake, stop = self._wake, self._stop
        while not stop.is_set():
            delay = self._t0_mono + k * period - time.monotonic()
            if delay > 0:
                if delay <= SLEEP_MAX_S:
                    time.sleep(delay)
                    if stop.is_set():
                        break   # stopped while asleep: the final sample is stop()'s
                elif wake.acquire(True, delay):
                    break
            self.sample_now()
            self._thread_ticks += 1
            elapsed_ticks = int((time.monotonic() - self._t0_mono) / period)
            nxt = k + 1
            if elapsed_ticks >= nxt:  # late: skip the deadlines already missed
                self.overruns += elapsed_ticks - nxt + 1
                nxt = elapsed_ticks + 1
            k = nxt

    def _halt(self) -> None:
        """Stop the sampling thread (it wakes at once)."""
        self._stop.set()
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"s")
            except OSError:
                pass
        try:
            self._wake.release()
        except RuntimeError:   # already released
            pass

    def _now(self) -> float:
        """Seconds since the start on the monotonic clock (the trace's ``t_s``)."""
        return float(self._clock()) - self._t0_mono

    def _t_of_unix(self, t_unix: float) -> float:
        """A wall-clock time placed on the sample clock by its age (robust to wall-clock jumps)."""
        return self._now() - (float(self._wall()) - t_unix)

    def sample_now(self, fresh: bool = False) -> None:
        """One tick: read every active sensor, drain markers, flush if due. ``fresh`` (and the final
        sample of :meth:`stop`): sensors that read some sources at a lower rate read them all now."""
        w = self._writer
        if w is None:
            return
        c0, w0 = time.thread_time(), time.monotonic()
        now = float(self._clock())
        prof = self.profile
        with self._lock:
            if w.closed:
                return
            try:
                # markers first: a live phase marker refreshes every source on this very tick, and sensors fed
                # from the marker file (the stat-logger plugin's totals) read its new lines now
                p0 = time.thread_time() if prof else 0.0
                drained = self._drain_markers() if self._markers_due.due(now) or self.stopped or fresh or \
                    self._marker_signal else []
                self._marker_signal = False
                if prof:
                    self._profiled("(markers)", p0)
                refreshed = fresh or self.stopped or (self._refresh_due and now - self._refresh_t >= REFRESH_MIN_S)
                if self._ticker is not None:   # the native ticker's readings since the last wake, at their times
                    p0 = time.thread_time() if prof else 0.0
                    self._drain_ticker(w, bool(drained) or refreshed)
                    if prof:
                        self._profiled("(ticker)", p0)
                if refreshed:
                    self._refresh_due, self._refresh_t = False, now
                    self.refreshes += 1
                    full = fresh or self.stopped   # first and final samples: every source; a live marker: a
                    for s, _ in self._active:       # sensor may leave out what is costly and not needed at a cut
                        fn = getattr(s, "refresh" if full else "refresh_at_marker", None) or getattr(s, "refresh", None)
                        if callable(fn):
                            fn()
                    self._next_read = [-math.inf] * len(self._active)
                nxt = self._next_read
                read: list[int] = []
                paced = self._paced
                for i in range(len(nxt)):
                    if nxt[i] > w0:
                        continue   # nothing due for it on this tick (e.g. NVML between its metrics' reads)
                    self._read_one(w, i, prof)
                    read.append(i)
                if self._tk_idx:   # the ticker reads these; directly only at a refresh
                    for i in self._tk_idx:
                        nxt[i] = math.inf
                if any(paced[i] for i in read):   # when each paced sensor has something new next; a read may move another's (the
                    # memory sensor has a new total once the process-tree sensor read the tree): read it now
                    for j, (sj, _) in enumerate(self._active):
                        if paced[j]:
                            nxt[j] = sj.next_read_s
                            if nxt[j] <= w0 and j not in read:
                                self._read_one(w, j, prof)
                                nxt[j] = sj.next_read_s
                if drained or refreshed:   # a run of equal readings ends at a marker and at a refresh's fresh
                    self._write_held(w)    # reading (written, so a crash right after keeps it)
                tick = self._out_rows
                if tick is not None and (tick or drained):
                    self._out_rows = []
                    p0 = time.thread_time() if self.profile else 0.0
                    self._notify(tick, drained)
                    if self.profile:
                        self._profiled("(listeners)", p0)
                # the writer also flushes by itself when rows arrive (TraceWriter._last_flush): one
                # flush (and fsync) a second, not two
                if time.monotonic() >= self._flush_due() - Every.SLACK_S:
                    p0 = time.thread_time() if self.profile else 0.0
                    w.flush()
                    self._last_flush = time.monotonic()
                    if self.profile:
                        self._profiled("(flush)", p0)
            except TraceWriteError as exc:
                self._write_failed(exc)
                return
            self.ticks += 1
            if self.profile and self._ticker is None:
                self._seg_ticks[self._prof_seg] = self._seg_ticks.get(self._prof_seg, 0) + 1
        cpu, wall = time.thread_time() - c0, time.monotonic() - w0
        if self.profile:
            e = self._prof_segs.setdefault(self._prof_seg, {}).setdefault("(whole tick)", [0.0, 0])
            e[0] += cpu
            e[1] += 1
        self._per_second(self._cpu_per_s, cpu)
        self._cpu_sum += cpu
        self._cpu_max = max(self._cpu_max, cpu)
        self._wall_sum += wall
        self._wall_max = max(self._wall_max, wall)

    def _read_one(self, w: TraceWriter, i: int, prof: bool) -> None:
        s, cmap = self._active[i]
        if prof:
            p0 = time.thread_time()
            t_s = self._read_sensor(w, s, cmap, i)
            self._profiled(s.name, p0)
        else:
            t_s = self._read_sensor(w, s, cmap, i)
        if i in self._tk_idx:
            self._tk_t[i] = t_s   # the ticker's readings from before this one are dropped

    def _profiled(self, name: str, c0: float) -> None:
        dt = time.thread_time() - c0
        for table in (self._prof, self._prof_segs.setdefault(self._prof_seg, {})):
            e = table.get(name)
            if e is None:
                e = table[name] = [0.0, 0]
            e[0] += dt
            e[1] += 1

    def _notify(self, tick: list[tuple[float, int, float]], drained: list[tuple[float, str, str]]) -> None:
        for fn in self.listeners:
            try:
                fn(self, tick, drained)
            except Exception as exc:  # noqa: BLE001 - an exporter must never stop a recording
                e = self.errors.setdefault("listener", {"count": 0, "first": f"{type(exc).__name__}: {exc}"})
                e["count"] += 1

    def _row(self, w: TraceWriter, t_s: float, ch: int, value: float) -> None:
        w.sample(t_s, ch, value)
        self.rows += 1
        if self._out_rows is not None:
            self._out_rows.append((t_s, ch, value))

    def _read_sensor(self, w: TraceWriter, s: Any, cmap: dict[tuple[str, str], int], i: int,
                     t_s: float | None = None, rows: Any = None, nums: Any = None) -> float:
        """Read sensor ``i`` now (``s.read()``), or take its rows of an earlier tick of the native ticker at
        ``t_s``: ``rows`` as they were, or ``s.rows_from_ticker(nums)``. Returns the reading's ``t_s``."""
        if t_s is None:
            t_s = self._now()
        try:
            if rows is None:
                rows = s.read() if nums is None else s.rows_from_ticker(nums)
        except Exception as exc:  # noqa: BLE001 - record once, keep sampling
            self._prev_rows[i] = None
            why = f"{type(exc).__name__}: {exc}"
            e = self.errors.setdefault(s.name, {"count": 0, "first": why, "first_t_s": round(t_s, 3)})
            e["count"] += 1
            for ch in cmap.values():
                self._open_gap(w, ch, t_s, s.name, why)
            return t_s
        if rows is self._prev_rows[i] and t_s < self._hold_until[i] and not self._gap_open:
            # the same list as last time (sensors/base.py): every channel reads as before and none is due for
            # its once-every-hold_s row: hold them all at this tick
            self._same_t[i] = t_s
            self.held_rows += len(self._prev_got[i])
            return t_s
        if self._same_t:
            self._expand_same()
        got: set[int] = set()
        for row in rows:
            try:
                dev, metric, value = row
                ch = cmap.get((dev, metric))
                if ch is None:
                    continue
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self._open_gap(w, ch, t_s, s.name, f"non-finite reading {value!r}")
                continue
            got.add(ch)
            last = self._last.get(ch)
            if last is not None and last[1] == value and t_s - last[0] < self.hold_s:
                self._held[ch] = t_s      # the same as the last row: written only if the run ends here
                self.held_rows += 1
            else:
                held = self._held.pop(ch, None)
                if held is not None and last is not None and last[1] != value:
                    self._row(w, held, ch, last[1])   # the run of equal readings ends: its last row
                self._row(w, t_s, ch, value)
                self._last[ch] = (t_s, value)
        take = self._take_faults.get(s.name)
        for fault in (take() if take is not None else ()):
            ch = cmap.get((fault.device, fault.metric))
            if ch is None:
                continue
            if fault.kind == "reset":
                self._reset(w, ch, t_s, s.name, fault.reason)
            elif ch not in got:
                self._open_gap(w, ch, t_s, s.name, fault.reason)
        self._has_read |= got
        if self._gap_open:
            for ch in got:
                if ch in self._gap_open:
                    self._close_gap(w, ch, t_s)
        written = self._last
        self._prev_rows[i], self._prev_got[i] = rows, got
        self._hold_until[i] = min([written[ch][0] for ch in got if ch in written] or [-math.inf]) + self.hold_s
        return t_s

    def _expand_same(self) -> None:
        """Sensors held in one step become per-channel holds (before a row of theirs may be written)."""
        for i, t in self._same_t.items():
            for ch in self._prev_got[i]:
                if ch in self._last:
                    self._held[ch] = t
        self._same_t.clear()

    def _write_held(self, w: TraceWriter, channels: Any = None) -> None:
        """Write the held (unwritten) last reading of ``channels`` (default: every channel), so a run of equal
        readings ends at its last tick before a marker, a gap or the end of the recording."""
        if self._same_t:
            self._expand_same()
        for ch in list(self._held) if channels is None else [c for c in channels if c in self._held]:
            t = self._held.pop(ch)
            self._row(w, t, ch, self._last[ch][1])
            self._last[ch] = (t, self._last[ch][1])

    @staticmethod
    def _one_line(text: str, n: int = 200) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= n else text[: n - 3] + "..."

    def _open_gap(self, w: TraceWriter, ch: int, t_s: float, sensor: str, why: str) -> None:
        """A channel with no valid reading from ``t_s`` on (only once it has read before: a channel
        that never read is 'no reading yet', not a gap)."""
        if ch in self._gap_open or ch not in self._has_read:
            return
        self._write_held(w, (ch,))
        self._last.pop(ch, None)   # after the gap the first reading is written whatever its value
        name = self._ch_name.get(ch, str(ch))
        why = self._one_line(why)
        self._gap_open[ch] = {"channel": name, "sensor": sensor, "start_t_s": round(t_s, 6), "reason": why}
        w.marker(t_s, "gap_start", f"{name} ({sensor}: {why})")

    def _close_gap(self, w: TraceWriter, ch: int, t_s: float, note: str = "") -> None:
        g = self._gap_open.pop(ch)
        g["end_t_s"] = round(t_s, 6)
        if note:
            g["note"] = note
        self.gaps.append(g)
        w.marker(t_s, "gap_end", g["channel"] + (f" ({note})" if note else ""))

    def _reset(self, w: TraceWriter, ch: int, t_s: float, sensor: str, why: str) -> None:
        name = self._ch_name.get(ch, str(ch))
        why = self._one_line(why)
        if len(self.counter_resets) < 1000:
            self.counter_resets.append({"channel": name, "sensor": sensor, "t_s": round(t_s, 6), "reason": why})
        w.marker(t_s, "counter_reset", f"{name} ({sensor}: {why})")

    def _write_failed(self, exc: TraceWriteError) -> None:
        """The trace cannot be written any more (disk full, ...): stop sampling, say so once."""
        if self.write_error is None:
            self.write_error = exc
            self._halt()
            print(f"storagecarbon: recording stopped: {exc}", file=sys.stderr, flush=True)

    def _drain_markers(self) -> list[tuple[float, str, str]]:
        """Copy new lines of the marker file into the trace; returns them as ``(t_s, event, label)``."""
        if self._tail is None or self._writer is None:
            return []
        out: list[tuple[float, str, str]] = []
        lines = self._tail.read()
        for i in self._feeds:
            if self._active[i][0].feed_markers(lines):
                self._next_read[i] = -math.inf
        if not lines:
            return out
        off = self._now() - float(self._wall())   # a wall-clock time placed on the sample clock by its age
        for t_unix, event, label in lines:
            if not math.isfinite(t_unix):
                self._tail.bad_lines += 1
                continue
            m = (off + t_unix, event.replace(":", "_") if ":" in event else event, label)
            self._refresh_due |= refreshes(event)
            if self.profile and event in ("load_start", "load_end"):
                self._prof_seg = "load" if event == "load_start" else "after_load"
            self._writer.marker(*m)
            self.marker_log.append(m)
            self.markers += 1
            out.append(m)
        return out

    def marker(self, event: str, label: str = "", *, t_unix: float | None = None) -> None:
        """Record a marker now (or at wall-clock ``t_unix``), e.g. ``marker("phase_start", "decode")``."""
        if self._writer is None:
            raise RuntimeError("recorder not started")
        t = self._now() if t_unix is None else self._t_of_unix(t_unix)
        with self._lock:
            if not self._writer.closed:
                try:
                    self._write_held(self._writer)
                    self._last.clear()   # the next tick's readings are written: the phase starts at a row
                    self._prev_rows = [None] * len(self._prev_rows)
                    self._writer.marker(t, event.replace(":", "_"), label)
                except TraceWriteError as exc:
                    self._write_failed(exc)
                    return
                self.marker_log.append((t, event.replace(":", "_"), label))
                self.markers += 1
                self._refresh_due |= refreshes(event)

    def stats(self) -> dict[str, Any]:
        # with the native ticker, a sample is one of its ticks (plus the first and final samples), and the
        # sampling CPU is this thread's work plus the ticker thread's whole CPU
        tk = self._tk_final or (self._ticker.stats() if self._ticker is not None else {})
        nt = int(tk.get("ticks", 0))
        ticks = self.ticks - self._py_wakes + nt
        thread_ticks = self._thread_ticks + nt
        thread_cpu = self._thread_cpu + self._tk_cpu
        n = max(ticks, 1)
        return {
            "hz": self.hz, "ticks": ticks, "overruns": self.overruns + int(tk.get("overruns", 0)), "rows": self.rows,
            "rows_held_back": self.held_rows, "hold_s": self.hold_s,
            "markers": self.markers, "refreshes": self.refreshes,
            "sampler": self.sampler, **({"sampler_note": self.sampler_why} if self.sampler_why else {}),
            **({"native": {**tk, "cpu_s": self._tk_cpu, "python_wakes": self._py_wakes,
                           "python_cpu_s": self._cpu_sum, "python_thread_cpu_s": self._thread_cpu}}
               if self.sampler == "native" else {}),
            "sample_cpu_s_mean": (self._cpu_sum + self._tk_cpu) / n, "sample_cpu_s_max": self._cpu_max,
            "sample_wall_s_mean": self._wall_sum / max(self.ticks, 1), "sample_wall_s_max": self._wall_max,
            "thread_cpu_s": thread_cpu, "thread_ticks": thread_ticks,
            # µs of sampling CPU in each second from the start: a phase's own cost (e.g. the serving window's,
            # without a server's start-up) is the sum over its seconds / its ticks
            "sample_cpu_us_per_s": [round(c * 1e6) for c in self._cpu_per_s],
            **({"thread_cpu_us_per_s": [round(c * 1e6) for c in self._thr_per_s]} if self.sampler == "native" else {}),
            "thread_cpu_s_per_tick": thread_cpu / thread_ticks if thread_ticks else None,
            "bad_marker_lines": self._tail.bad_lines if self._tail else 0,
            "sensor_errors": self.errors,
            "gaps": (self.gaps + list(self._gap_open.values()))[:1000],
            "counter_resets": self.counter_resets,
            "clock": "t_s on the monotonic clock; t0_unix from the wall clock at the start",
            **({"profile": {k: {"cpu_s": round(v[0], 6), "calls": v[1], "cpu_s_per_tick": v[0] / n}
                            for k, v in sorted(self._prof.items(), key=lambda kv: -kv[1][0])}}
               if self.profile else {}),
            **({"profile_by_part": {seg: {"ticks": self._seg_ticks.get(seg, 0),
                                          **{k: round(v[0] / max(self._seg_ticks.get(seg, 0), 1), 9)
                                             for k, v in sorted(tab.items(), key=lambda kv: -kv[1][0])}}
                                    for seg, tab in self._prof_segs.items()}} if self.profile else {}),
        }

    def stop(self, summary: dict[str, Any] | None = None, finish: Any = None) -> dict[str, Any]:
        """Final sample, close sensors and the trace (footer = ``summary`` + recorder stats).

        ``finish(Ending) -> dict``: called once the sensors are closed and before the trace is, to add markers,
        footer fields and notes known only at the end (see :class:`Ending`). Not called when the trace can no
        longer be written; an exception in it is recorded in the footer (``finish_error``), never raised."""
        if not self.started or self.stopped:
            return self.stats()
        self.stopped = True
        self._halt()
        if self._writer is None:  # start() failed before the trace existed
            return self.stats()
        if self._thread is not None:
            self._thread.join()
        if self._ticker is not None:
            self._ticker.stop()   # its last readings are drained by the final sample
        try:
            self.sample_now()
        finally:
            if self._ticker is not None:
                self._tk_cpu_final(self._ticker)
                self._ticker = None
            for fd in (self._wake_r, self._wake_w, self._ino):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = self._ino = -1
            sensor_summaries: dict[str, Any] = {}
            for s, _ in self._active:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass
                fn = getattr(s, "summary", None)
                if callable(fn):
                    try:
                        sensor_summaries[s.name] = fn()
                    except Exception as exc:  # noqa: BLE001
                        sensor_summaries[s.name] = {"error": repr(exc)}
            with self._lock:
                w = self._writer
                assert w is not None
                if not w.closed:
                    t_end = self._now()
                    try:
                        for ch in list(self._gap_open):
                            self._close_gap(w, ch, t_end, "still failing when the recording ended")
                    except TraceWriteError as exc:
                        self._write_failed(exc)
                out = dict(summary or {})
                out["recorder"] = self.stats()
                out["sensors"] = sensor_summaries
                if finish is not None and not w.closed:
                    self._finish(w, finish, out, sensor_summaries)
                if not w.closed:
                    try:
                        w.close(out)
                    except TraceWriteError as exc:
                        self._write_failed(exc)
        if self.write_error is not None:
            raise self.write_error
        return out["recorder"]

    def _finish(self, w: TraceWriter, finish: Any, out: dict[str, Any], sensors: dict[str, Any]) -> None:
        t_end = self._now()
        try:
            extra = finish(Ending(self.t0_unix, t_end, sorted(self.marker_log, key=lambda m: m[0]), sensors)) or {}
        except Exception as exc:  # noqa: BLE001 - what was recorded is kept whatever the callback does
            out["finish_error"] = f"{type(exc).__name__}: {exc}"
            return
        try:
            for t, ev, label in sorted(extra.get("markers") or [], key=lambda m: m[0]):
                w.marker(float(t), str(ev).replace(":", "_"), str(label))
                self.marker_log.append((float(t), str(ev), str(label)))
                self.markers += 1
        except TraceWriteError as exc:
            self._write_failed(exc)
        out.update(extra.get("summary") or {})
        if extra.get("notes"):
            out["notes"] = list(out.get("notes") or []) + list(extra["notes"])

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop({"error": repr(exc[1])} if exc[1] is not None else None)


# ------------------------------------------------------------------------------ record_command
def serving_sensors(tiermap: Any, vllm_stats_markers: str | Path | None) -> list[Any]:
    """The stat-logger plugin's sensor (first in line, so it owns the KV bytes it reports)."""
    if vllm_stats_markers is None:
        return []
    from .sensors.vllm_stats import VllmStatsSensor

    return [VllmStatsSensor(vllm_stats_markers, dram_device="dram" if tiermap.has("dram") else None,
                            disk_device=tiermap.primary_disk)]


def default_sensors(tree: Any, tiermap: Any, *, tap_dir: str | Path | None, scenario: Any = None,
                    lmcache: bool | None = None, vllm_url: str | None = None,
                    nvml: Any = None, base_dir: str | Path | None = None,
                    vllm_stats_markers: str | Path | None = None) -> list[Any]:
    """The default sensors of a recorded command, in channel-priority order.

    LMCache taps come first so that, when present, their per-tier bytes own ``app_bytes_*`` of
    the disk device (the process-tree counters of :mod:`.sensors.procio` cover every file the
    tree touches; the taps only the KV cache). ``lmcache=None``: on when the scenario enables an
    LMCache CPU or disk tier. ``vllm_stats_markers``: the marker file the project's vLLM
    stat-logger plugin writes to, given when the command itself serves vLLM; the plugin's sensor
    then comes first and owns the per-tier KV bytes, and the metrics scrape counts from zero.
    """
    from .sensors.diskstats import DiskstatsSensor
    from .sensors.lmcache_tap import LMCacheTapSensor
    from .sensors.memory import MemorySensor
    from .sensors.nvml import NvmlSensor
    from .sensors.procio import ProcIOSensor
    from .sensors.rapl import RaplSensor
    from .sensors.vllm_metrics import VllmMetricsSensor

    out: list[Any] = serving_sensors(tiermap, vllm_stats_markers)
    if lmcache is None and scenario is not None:
        lmcache = scenario.placement.kv.uses_lmcache
    if lmcache:
        kv_disk = scenario.placement.kv.local_disk if scenario is not None else None
        kv_path = kv_disk.path if kv_disk is not None and kv_disk.enabled else None
        if kv_path is not None and base_dir is not None and not os.path.isabs(kv_path):
            kv_path = str(Path(base_dir) / kv_path)
        out.append(LMCacheTapSensor(tap_dir, disk_device=tiermap.primary_disk,
                                    dram_device="dram" if tiermap.has("dram") else None,
                                    disk_path=kv_path))
    out.append(ProcIOSensor(tree, disk_device=tiermap.primary_disk, host_device="host"))
    out.append(MemorySensor(tree, device="dram"))
    out.append(DiskstatsSensor(tiermap.disk_blocks))
    out.append(nvml if nvml is not None else NvmlSensor())
    out.append(RaplSensor(host_device="host", dram_device="dram"))
    if vllm_url:
        out.append(VllmMetricsSensor(vllm_url, counts_from_zero=vllm_stats_markers is not None))
    return out


def _coerce_scenario(scenario: Any) -> tuple[Any, str | None]:
    """A Scenario from a Scenario or its ``model_dump`` dict (``None`` stays ``None``)."""
    if scenario is None or hasattr(scenario, "hardware"):
        return scenario, None
    try:
        from ..scenario import Scenario

        return Scenario.model_validate(scenario), None
    except Exception as exc:  # noqa: BLE001
        return None, f"scenario given as {type(scenario).__name__} is not a valid Scenario ({exc}); tiers unmapped"


def _load_db() -> tuple[Any, str | None]:
    try:
        from ..devicedb import DeviceDB

        return DeviceDB.load(), None
    except Exception as exc:  # noqa: BLE001 - the recording goes on without device_db
        return None, f"device_db not loaded ({exc}); device keys unresolved"


def record_command(argv: Sequence[str], out_path: str | Path, *, scenario: Any = None, hz: float = 10.0,
                   timeout_s: float | None = None, env: dict[str, str] | None = None,
                   sensors: list[Any] | None = None, cwd: str | Path | None = None,
                   disk_path: str | Path | None = None, db: Any = None, grace_s: float = 5.0,
                   vllm_url: str | None = None, lmcache: bool | None = None,
                   summary: dict[str, Any] | None = None, notes: list[str] | None = None,
                   vllm_stats: bool = False, listeners: Sequence[Any] = (), hold_s: float = 1.0,
                   finish: Any = None, full_rate: bool = False) -> int:
    """Run ``argv`` under a recorder writing ``out_path``; return its exit code.

    * The command runs in its own session/process group with ``STORAGECARBON_MARKERS`` (a marker
      file the recorder tails) and ``STORAGECARBON_TAP_DIR`` (LMCache tap files) set, plus the
      loopback/no-telemetry variables of :data:`QUIET_ENV`; ``env`` overrides.
    * SIGINT/SIGTERM sent to the caller are forwarded to the group; if the group has not exited
      ``grace_s`` after a forwarded signal, it is killed.
    * ``timeout_s``: TERM the group, KILL after ``grace_s``; exit code 124.
    * When the main process exits, its zombie is sampled once more (so its last IO counts), the
      rest of the group is ended (TERM, then KILL), then it is reaped.
    * Exit code: the command's; 128+N when it died of signal N; 124 on timeout; 127/126 when it
      cannot be started. The trace is always closed, with a footer summary.
    * ``sensors=None``: :func:`default_sensors` (procio + memory on the tree, diskstats for mapped
      disks, NVML and RAPL when available, LMCache taps when the scenario uses LMCache, the vLLM
      stat-logger plugin's totals when ``vllm_stats``). ``notes`` go to the trace header. The disk
      device is the scenario's ssd/hdd tier (its ``path`` or LMCache's ``local_disk`` path), else the
      disk holding ``disk_path`` (default: ``cwd``).
    * ``listeners``: passed to the :class:`Recorder` (e.g. a live Prometheus exporter).
    """
    from .sensors.nvml import FULL_RATE as NVML_FULL_RATE, NvmlSensor
    from .sensors.procio import ProcTree
    from .tiermap import map_tiers

    argv = [str(a) for a in argv]
    cwd = str(cwd) if cwd is not None else os.getcwd()
    notes = list(notes or [])
    echo = scenario
    scenario, why = _coerce_scenario(scenario)
    if why:
        notes.append(why)
    run_dir = Path(tempfile.mkdtemp(prefix="storagecarbon-run-"))
    markers = run_dir / "markers.jsonl"
    markers.touch()
    tap_dir = run_dir / "tap"
    tap_dir.mkdir()
    tree = ProcTree()
    probed: dict[str, Probe] = {}
    if sensors is None:
        if db is None:
            db, why = _load_db()
            if why:
                notes.append(why)
        cvd = {**os.environ, **(env or {})}.get("CUDA_VISIBLE_DEVICES")
        nv = NvmlSensor(visible=cvd, every_s=NVML_FULL_RATE if full_rate else None)
        if cvd is not None:
            notes.append(f"GPUs: the command's CUDA_VISIBLE_DEVICES={cvd!r}; only those GPUs are recorded")
        probed["nvml"] = nv.probe()
        gpus = nv.devices() if probed["nvml"].available else []
        paths: dict[str, str | Path] = {}
        if scenario is not None:
            tiers = scenario.hardware.tiers()
            disk_tiers = [t for t in ("ssd", "hdd") if t in tiers]
            kvd = scenario.placement.kv.local_disk
            has_path = any(tiers[t].path for t in disk_tiers) or (kvd is not None and kvd.enabled and kvd.path)
            if disk_tiers and not has_path:
                paths[disk_tiers[0]] = disk_path or cwd
        else:
            paths["auto"] = disk_path or cwd
        import psutil

        tm = map_tiers(scenario, db=db, gpus=gpus, disk_paths=paths, base_dir=cwd,
                       memory_bytes=float(psutil.virtual_memory().total))
        notes += tm.notes
        sensors = default_sensors(tree, tm, tap_dir=tap_dir, scenario=scenario, lmcache=lmcache,
                                  vllm_url=vllm_url, nvml=nv, base_dir=cwd,
                                  vllm_stats_markers=markers if vllm_stats else None)
        header_base: dict[str, Any] = {"devices": tm.devices, "notes": notes, "scenario": echo,
                                       "host": {"tier_map": tm.header_dict()["tier_map"]}}
    else:
        for s in sensors:
            if hasattr(s, "tree") and getattr(s.tree, "root_pid", 1) is None:
                tree = s.tree  # caller-built tree sensors get attached to the command
        header_base = {"scenario": echo, "notes": notes}
    full_env = dict(os.environ)
    full_env.update(QUIET_ENV)
    full_env[MARKERS_ENV] = str(markers)
    full_env[TAP_ENV] = str(tap_dir)
    full_env.update(env or {})

    rec = Recorder(out_path, header_base, sensors, hz=hz, markers_file=markers, probed=probed, listeners=listeners,
                   hold_s=hold_s)
    result: dict[str, Any] = {"argv": argv, "cwd": cwd, **(summary or {})}
    rc = 0
    proc: subprocess.Popen[bytes] | None = None
    old_handlers: dict[int, Any] = {}
    forwarded: dict[str, Any] = {"sig": None, "t": 0.0}
    try:
        rec.start()
        try:
            proc = start_group(argv, cwd=cwd, env=full_env)
        except (FileNotFoundError, PermissionError, NotADirectoryError, OSError) as exc:
            rc = 127 if isinstance(exc, FileNotFoundError) else 126
            result["error"] = f"cannot start {argv[0]!r}: {exc}"
            result["exit_code"] = rc
            result["command_status"] = f"failed: could not start ({exc.strerror or exc})"
            print(f"storagecarbon: {result['error']}", file=sys.stderr)
            return rc
        pgid = proc.pid
        tree.attach(proc.pid, session=proc.pid)
        rec.marker("command_start", str(proc.pid))
        rec.sample_now(fresh=True)  # baseline of the fresh process tree (its counters start near zero)

        if threading.current_thread() is threading.main_thread():
            def _forward(signum: int, _frame: Any) -> None:
                forwarded["sig"], forwarded["t"] = signum, time.monotonic()
                signal_group(pgid, signum)

            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, _forward)

        t_start = time.monotonic()
        timed_out = False
        while True:
            try:
                res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if res is not None and res.si_pid == proc.pid:
                break
            now = time.monotonic()
            if timeout_s is not None and now - t_start > timeout_s:
                timed_out = True
                rec.marker("command_timeout", f"{timeout_s:g}")
                signal_group(pgid, signal.SIGTERM)
                end = now + grace_s
                while time.monotonic() < end and group_members(pgid):
                    time.sleep(0.05)
                signal_group(pgid, signal.SIGKILL)
                break
            if forwarded["sig"] is not None and now - forwarded["t"] > grace_s and group_members(pgid):
                signal_group(pgid, signal.SIGKILL)
                forwarded["t"] = float("inf")
            time.sleep(0.05)
        rec.sample_now(fresh=True)  # the main process may be a zombie now: its final counters still read
        killed = end_group(pgid, grace_s, exclude=None)
        if killed:
            result["killed_leftover_pids"] = killed
        proc.wait()
        code = proc.returncode
        rc = TIMEOUT_EXIT if timed_out else (128 - code if code < 0 else code)
        result.update({"exit_code": rc, "timed_out": timed_out, "returncode": code,
                       "forwarded_signal": forwarded["sig"], "wall_s": time.monotonic() - t_start,
                       "command_status": command_status(code, timed_out=timed_out, timeout_s=timeout_s,
                                                        forwarded=forwarded["sig"])})
        rec.marker("command_end", str(rc))
        return rc
    except BaseException as exc:
        result["error"] = repr(exc)
        result.setdefault("command_status", f"failed: the recorder stopped it ({type(exc).__name__})")
        if proc is not None and proc.poll() is None:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        in_flight = sys.exc_info()[1]
        try:
            rec.stop(result, finish=finish)
        except TraceWriteError as exc:
            if in_flight is None:
                status = result.get("command_status") or f"ended with exit code {result.get('exit_code', rc)}"
                raise TraceWriteError(f"{exc}; the command went on and {status}") from None
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


def command_status(returncode: int, *, timed_out: bool = False, timeout_s: float | None = None,
                   forwarded: int | None = None) -> str:
    """How a recorded command ended, in words: ``exited with 0``, ``failed: exit code 3``,
    ``failed: killed by signal 9 (SIGKILL)``, ``failed: timed out after 5 s ...``."""
    if timed_out:
        return f"failed: timed out after {timeout_s:g} s (process group terminated, then killed)"
    if returncode == 0:
        return "exited with 0"
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        how = f"failed: killed by signal {sig} ({name})"
        if forwarded is not None and forwarded == sig:
            how += ", forwarded by the recorder"
        if sig == signal.SIGKILL and forwarded is None:
            how += "; e.g. the kernel's out-of-memory killer or kill -9"
        return how
    how = f"failed: exit code {returncode}"
    if forwarded is not None:
        how += f" after the recorder forwarded {signal.Signals(forwarded).name}"
    return how
