"""From a Trace to usage per device, phase and interval (streaming, memory flat in trace length).

Cumulative counters become deltas per interval between consecutive samples of a channel (a
negative delta is a counter reset: the new value is the delta); gauges are held until the next
sample and integrated over time. An interval's usage is spread evenly over its time (:func:`spread`):
a phase boundary or a report interval's edge inside it splits it in proportion (phases come from
``phase_start``/``phase_end`` markers; time outside any phase is ``other``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..trace import TraceHeader, gaps_from_markers, iter_batches, read_header, split_special

OTHER = "other"
QUANTITIES = ("bytes_read", "bytes_written", "app_bytes_read", "app_bytes_written", "busy_s", "energy_j",
              "resident_byte_s", "power_j", "cpu_time_s", "kv_bytes_read")
# app_bytes_read of these sensors is KV cache loaded from the tier (LMCache hits); it also counts as kv_bytes_read
# vllm_counters / vllm_stats: vLLM's OffloadingConnector loads (offline GPU runs / the stat-logger plugin under serve)
KV_SENSORS = ("lmcache_tap", "model", "vllm_counters", "vllm_stats")
WORKLOAD = ("prompt_tokens", "generated_tokens", "requests_done")


@dataclass
class Usage:
    """Usage of every device of a trace, split by phase, plus per-interval detail."""

    header: TraceHeader
    phases: list[str]
    phase_time_s: np.ndarray                        # [phase]
    # quantity -> array [device, phase]
    by_phase: dict[str, np.ndarray]
    # which (device, quantity) had a channel at all: measured vs missing
    has: dict[tuple[str, str], bool]
    workload: dict[str, float]
    interval_s: float
    # quantity -> array [device, interval]
    by_interval: dict[str, np.ndarray]
    interval_phase_s: np.ndarray                    # [phase, interval]
    duration_s: float
    t_start: float
    truncated: bool
    samples: int
    requests_from_markers: int = 0
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def devices(self) -> list[str]:
        return [d.id for d in self.header.devices]


def quantity_of(metric: str) -> str | None:
    """The usage quantity a device channel's metric adds to (gauges integrate over time)."""
    q = {"resident_bytes": "resident_byte_s", "power_w": "power_j"}.get(metric, metric)
    return q if q in QUANTITIES else None


def increments(t: np.ndarray, v: np.ndarray, cumulative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive samples ``(t, v)`` of one channel -> (interval start times, usage per interval).

    Cumulative counters: the delta (a decrease is a counter reset: the new value is the delta).
    Gauges: the level held until the next sample, times the interval. The one place of this rule
    (the live exporter of :mod:`storagecarbon.fleet.export` calls it too).
    """
    if cumulative:
        d = np.diff(v)
        d = np.where(d < 0, v[1:], d)  # counter reset: count from zero again
    else:
        d = v[:-1] * np.diff(t)
    return t[:-1], d


def spread(t: np.ndarray, d: np.ndarray, cuts: np.ndarray,
           shape: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Increments ``d[i]`` over ``[t[i], t[i+1]]`` (from :func:`increments`) spread evenly in time across the
    sorted ``cuts`` (phase boundaries, interval edges): returns ``(segment, amount)``, where segment ``k`` is the
    time from ``cuts[k]`` to ``cuts[k+1]`` (``-1``: before the first cut). The total is kept exactly.

    The one rule for placing a reading's increment in time: a counter read every 5 s (NVML's energy) puts a
    phase that starts in the middle of those 5 s at its share, not all or nothing; a gauge's level held until
    the next sample is split at the cut exactly. Increments in whole units (bytes, tokens) are split at whole
    units, so that the parts of a byte count add up to it exactly. Only the cuts inside the samples' span cost
    anything.

    ``shape``: ``(times, cumulative weight)`` of a finer measurement of the same flow, used instead of time inside
    each interval (each interval still keeps exactly its own increment): a GPU's energy counter, read every 30 s,
    is placed inside those 30 s as its power readings (every 1 s) say (:func:`power_shape`). Where the shape has
    no weight in an interval, time is used."""
    cum = np.concatenate([[0.0], np.cumsum(d)])
    lo = int(np.searchsorted(cuts, t[0], side="right"))
    hi = int(np.searchsorted(cuts, t[-1], side="left"))
    if hi <= lo:  # no cut inside: everything in one segment
        return np.asarray([lo - 1]), np.asarray([cum[-1]])
    pts = np.concatenate([[t[0]], cuts[lo:hi], [t[-1]]])
    if shape is None or len(t) < 2:
        at = np.interp(pts, t, cum)
    else:
        st, sc = shape
        i = np.clip(np.searchsorted(t, pts, side="right") - 1, 0, len(t) - 2)
        w_t = np.interp(t, st, sc)
        span, dt = w_t[i + 1] - w_t[i], t[i + 1] - t[i]
        frac = np.divide(pts - t[i], dt, out=np.ones_like(pts), where=dt > 0)
        frac = np.divide(np.interp(pts, st, sc) - w_t[i], span, out=frac, where=span > 0)
        at = cum[i] + d[i] * np.clip(frac, 0.0, 1.0)
    if np.array_equal(d, np.round(d)):
        at = np.round(at)   # whole units (bytes, tokens) split at whole units: the parts add up exactly
    return np.arange(lo - 1, hi), np.diff(at)


def power_shape(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A power gauge's readings -> ``(times, cumulative J)`` (each held until the next reading), the ``shape`` of
    :func:`spread` for the same device's energy counter."""
    o = np.argsort(t, kind="stable")
    t, p = t[o], p[o]
    return t, np.concatenate([[0.0], np.cumsum(np.clip(p[:-1], 0.0, None) * np.diff(t))])


def phase_shares(t: np.ndarray, d: np.ndarray, btimes: np.ndarray, bphase: np.ndarray, other: int,
                 n_ph: int, shape: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Increments ``d`` over the intervals of ``t`` per phase: the phase timeline's boundary times ``btimes``
    and the phase index active from each on (``other`` before the first), :func:`spread` at the boundaries."""
    seg, part = spread(t, d, btimes, shape)
    ph = bphase[np.clip(seg, 0, None)] if len(btimes) else np.zeros(len(seg), dtype=np.int64)
    ph = np.where(seg >= 0, ph, other)
    return np.bincount(ph, weights=part, minlength=n_ph)[:n_ph]


def _phase_timeline(markers: list[tuple[float, str, str]]) -> tuple[np.ndarray, list[str], list[str]]:
    """Boundary times and the phase active from each boundary on (a stack: nested phases allowed)."""
    markers = sorted(markers, key=lambda m: m[0])
    times, active = [], []
    stack: list[str] = []
    names: list[str] = []
    for t, ev, name in markers:
        if ev == "phase_start":
            stack.append(name)
            if name not in names:
                names.append(name)
        elif ev == "phase_end":
            if name in stack:
                # remove the innermost occurrence
                idx = len(stack) - 1 - stack[::-1].index(name)
                stack.pop(idx)
        else:
            continue
        times.append(t)
        active.append(stack[-1] if stack else OTHER)
    return np.asarray(times, dtype=np.float64), active, names


def aggregate(path: str | Path, *, interval_s: float | None = None) -> Usage:
    """Aggregate a trace file into :class:`Usage` in two streaming passes."""
    header = read_header(path)
    # ---- pass 1: markers and time span
    markers: list[tuple[float, str, str]] = []
    t_min, t_max = np.inf, -np.inf
    ended = False
    summary: dict = {}
    samples = 0
    # a device with both an energy counter and a power gauge: the power readings shape the counter's increments
    energy_ch = {ch.device: ch.id for ch in header.channels if ch.metric == "energy_j"}
    power_of = {ch.id: ch.device for ch in header.channels if ch.metric == "power_w" and ch.device in energy_ch}
    power_pts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {d: [] for d in power_of.values()}
    for batch in iter_batches(path):
        t, c, _v, mk, end = split_special(batch)
        for pid, pdev in power_of.items():
            m = c == pid
            if m.any():
                power_pts[pdev].append((t[m], _v[m]))
        if len(t):
            t_min = min(t_min, float(t.min()))
            t_max = max(t_max, float(t.max()))
            samples += len(t)
        markers += mk
        if end is not None:
            ended, summary = True, end
    if not np.isfinite(t_min):
        t_min, t_max = 0.0, 0.0
    if summary.get("notes"):  # notes added at the recording's end (Recorder.stop's finish) join the header's
        header.notes = list(header.notes) + [str(n) for n in summary["notes"]]
    duration = max(0.0, t_max - t_min)
    if interval_s is None:
        interval_s = max(duration / 2000.0, 0.1) if duration > 0 else 1.0
    n_int = max(1, int(np.floor(duration / interval_s)) + 1)

    btimes, bactive, names = _phase_timeline(markers)
    phases = [p for p in names] + [OTHER]
    pidx = {p: i for i, p in enumerate(phases)}
    bphase = np.asarray([pidx[a] for a in bactive], dtype=np.int64)
    n_ph = len(phases)

    def phase_at(t: np.ndarray) -> np.ndarray:
        if len(btimes) == 0:
            return np.full(len(t), pidx[OTHER], dtype=np.int64)
        k = np.searchsorted(btimes, t, side="right") - 1
        out = np.where(k >= 0, bphase[np.clip(k, 0, None)], pidx[OTHER])
        return out

    # phase time per phase and per interval: integrate the timeline over [t_min, t_max]
    edges = np.concatenate([[t_min], btimes[(btimes > t_min) & (btimes < t_max)], [t_max]])
    seg_phase = phase_at(edges[:-1])
    phase_time = np.zeros(n_ph)
    interval_phase = np.zeros((n_ph, n_int))
    for a, b, p in zip(edges[:-1], edges[1:], seg_phase):
        if b <= a:
            continue
        phase_time[p] += b - a
        # spread over intervals
        i0 = int((a - t_min) // interval_s)
        i1 = int((b - t_min) // interval_s)
        for i in range(i0, min(i1, n_int - 1) + 1):
            lo = max(a, t_min + i * interval_s)
            hi = min(b, t_min + (i + 1) * interval_s)
            if hi > lo:
                interval_phase[p, i] += hi - lo

    devs = [d.id for d in header.devices]
    didx = {d: i for i, d in enumerate(devs)}
    n_dev = len(devs)
    by_phase = {q: np.zeros((n_dev, n_ph)) for q in QUANTITIES}
    by_int = {q: np.zeros((n_dev, n_int)) for q in QUANTITIES}
    workload = {w: 0.0 for w in WORKLOAD}
    has: dict[tuple[str, str], bool] = {}

    # channel routing: channel id -> (device index or -1 for workload, quantity, cumulative)
    n_ch = max((c.id for c in header.channels), default=-1) + 1
    ch_dev = np.full(n_ch, -1, dtype=np.int64)
    ch_q: list[str | None] = [None] * n_ch
    ch_cum = np.zeros(n_ch, dtype=bool)
    ch_kv = np.zeros(n_ch, dtype=bool)
    for ch in header.channels:
        ch_cum[ch.id] = ch.cumulative
        if ch.device in didx:
            ch_dev[ch.id] = didx[ch.device]
            q = quantity_of(ch.metric)
            ch_q[ch.id] = q
            if q is not None:
                has[(ch.device, q)] = True
            if ch.metric == "app_bytes_read" and ch.sensor in KV_SENSORS:
                ch_kv[ch.id] = True   # has kv_bytes_read once the channel has a reading interval (below)
        elif ch.metric in WORKLOAD:
            ch_q[ch.id] = ch.metric
    shape_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for pdev, parts in power_pts.items():
        if sum(len(a) for a, _ in parts) >= 2:
            shape_of[energy_ch[pdev]] = power_shape(np.concatenate([a for a, _ in parts]),
                                                    np.concatenate([b for _, b in parts]))
    last_t = np.full(n_ch, np.nan)
    last_v = np.full(n_ch, np.nan)
    int_edges = t_min + interval_s * np.arange(n_int + 1, dtype=np.float64)

    # ---- pass 2: samples
    for batch in iter_batches(path):
        c = batch.column(1).to_numpy()
        keep = c >= 0
        if not keep.all():
            c = c[keep]
            t = batch.column(0).to_numpy()[keep]
            v = batch.column(2).to_numpy()[keep]
        else:
            t = batch.column(0).to_numpy()
            v = batch.column(2).to_numpy()
        if len(c) == 0:
            continue
        order = np.argsort(c, kind="stable")
        c_s, t_s, v_s = c[order], t[order], v[order]
        bounds = np.flatnonzero(np.diff(c_s)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(c_s)]])
        for a, b in zip(starts, ends):
            cid = int(c_s[a])
            if cid >= n_ch:
                continue
            q = ch_q[cid]
            tt = t_s[a:b]
            vv = v_s[a:b]
            if not np.isnan(last_t[cid]):
                tt = np.concatenate([[last_t[cid]], tt])
                vv = np.concatenate([[last_v[cid]], vv])
            last_t[cid], last_v[cid] = tt[-1], vv[-1]
            if q is None or len(tt) < 2:
                continue
            _t0, d = increments(tt, vv, bool(ch_cum[cid]))
            dev = ch_dev[cid]
            if dev < 0:  # workload counters
                workload[q] += float(d.sum())
                continue
            shape = shape_of.get(cid)
            ph_add = phase_shares(tt, d, btimes, bphase, pidx[OTHER], n_ph, shape)
            seg, part = spread(tt, d, int_edges, shape)
            ib = np.clip(seg, 0, n_int - 1)
            int_add = np.bincount(ib, weights=part, minlength=n_int)[:n_int]
            by_phase[q][dev] += ph_add
            by_int[q][dev] += int_add
            if ch_kv[cid]:
                has[(devs[dev], "kv_bytes_read")] = True
                by_phase["kv_bytes_read"][dev] += ph_add
                by_int["kv_bytes_read"][dev] += int_add

    n_req_markers = sum(1 for m in markers if m[1] == "request_end")
    return Usage(notes=fault_notes(markers, summary, t_max), header=header, phases=phases, phase_time_s=phase_time, by_phase=by_phase, has=has,
                 workload=workload, interval_s=float(interval_s), by_interval=by_int,
                 interval_phase_s=interval_phase, duration_s=duration, t_start=t_min,
                 truncated=not ended, samples=samples, requests_from_markers=n_req_markers,
                 summary=summary)


def fault_notes(markers: list[tuple[float, str, str]], summary: dict, t_end: float) -> list[str]:
    """What a report must say about faults during the recording: a failed command, gaps in
    channels (counters span a gap, so their totals are whole; a gauge holds its last value across
    it) and counter resets (the increment before a reset is lost: a lower bound)."""
    notes = []
    status = summary.get("command_status")
    if isinstance(status, str) and status.startswith("failed"):
        notes.append(f"the recorded command {status}")
    for g in gaps_from_markers(markers)[:20]:
        end = g["end_t_s"] if g["end_t_s"] is not None else t_end
        notes.append(f"gap in {g['channel']} from {g['start_t_s']:.1f} s to {end:.1f} s ({g['reason']}): no readings "
                     "there; a counter's total spans it, a gauge holds its last value")
    resets = [m for m in markers if m[1] == "counter_reset"]
    for t, _, name in resets[:20]:
        notes.append(f"counter reset at {t:.1f} s in {name}: the increment just before it is lost (total is a lower bound)")
    return notes


# ------------------------------------------------------------------------ per-device usage
@dataclass
class DeviceUse:
    """What one device (or ``count`` identical units) did during a run, per phase: the kernel's input.

    ``None`` means *no reading* (no channel, no figure), never 0.
    """

    id: str
    tier: str
    key: str | None                        # device_db key (None: unknown device)
    count: int
    phase_time_s: np.ndarray               # [phase] wall time of each phase
    busy_s: np.ndarray | None = None       # [phase] unit-seconds of activity summed over units
    occupied_units_s: np.ndarray | None = None  # [phase] resident bytes / capacity, integrated
    written_b: np.ndarray | None = None    # [phase] bytes that reach the medium (max of block and app)
    kv_read_b: np.ndarray | None = None    # [phase] KV cache bytes loaded from this tier (cache hits)
    measured_j: np.ndarray | None = None   # [phase] measured energy
    share: float = 1.0                     # SCI resource share of each unit
    capacity_b: float | None = None        # of one unit
    name: str = ""
    stand_in: bool = False
    note: str = ""
    energy_method: str = ""                # how measured_j / busy_s were obtained
    occupancy_basis: str = ""

    @classmethod
    def total(cls, id: str, tier: str, key: str | None, count: int, duration_s: float, busy_s: float | None,
              occupied_units_s: float | None = None, written_b: float = 0.0, **kw) -> DeviceUse:
        """One phase (the whole run) from totals."""
        def one(v: float | None) -> np.ndarray | None:
            return None if v is None else np.array([float(v)])

        return cls(id, tier, key, count, np.array([float(duration_s)]), one(busy_s), one(occupied_units_s),
                   np.array([float(written_b)]), **kw)


def uses_from_usage(usage: Usage, db) -> list[DeviceUse]:
    """Per-device, per-phase usage from an aggregated trace (the one reading every command shares)."""
    out = []
    T = usage.phase_time_s
    q = usage.by_phase
    for i, e in enumerate(usage.header.devices):
        rec = db.resolve(e.db_key) if e.db_key else None
        def has(m: str, dev_id: str = e.id) -> bool:
            return bool(usage.has.get((dev_id, m)))

        measured = None
        method = ""
        if has("energy_j"):
            measured, method = q["energy_j"][i].copy(), "measured: energy counter"
        elif has("power_j"):
            measured, method = q["power_j"][i].copy(), "measured: integrated power"
        busy = None
        if has("busy_s"):
            busy = q["busy_s"][i].copy()
        elif has("cpu_time_s") and rec is not None and rec.kind in ("host", "cpu"):
            # host: CPU time of the served process tree over the CPUs this run holds
            cpus = float((usage.header.host or {}).get("cpu_count") or 1)
            busy = np.minimum(q["cpu_time_s"][i] / cpus, T) * e.count
            method = method or "busy = process-tree CPU time / CPUs"
        cap = e.capacity_bytes or (rec.capacity_bytes if rec is not None else None)
        occ = None
        basis = "missing: no occupancy reading (no resident_bytes channel, no reserved bytes)"
        if has("resident_byte_s") and cap:
            occ = np.minimum(q["resident_byte_s"][i] / cap, e.count * T)
            basis = "resident bytes / capacity"
        elif e.reserved_bytes is not None and cap:
            occ = np.minimum(e.reserved_bytes / cap * T, e.count * T)
            basis = f"reserved {e.reserved_bytes / 1e9:.3g} GB / capacity"
        written = None  # no write counter at all: unknown, not 0
        if has("bytes_written") or has("app_bytes_written"):
            written = np.maximum(q["bytes_written"][i], q["app_bytes_written"][i])
        kv = q["kv_bytes_read"][i].copy() if has("kv_bytes_read") else None
        out.append(DeviceUse(e.id, e.tier, rec.key if rec is not None else e.db_key, e.count, T.copy(), busy, occ,
                             written, kv, measured, float(getattr(e, "share", 1.0) or 1.0), cap,
                             e.name or (rec.name if rec is not None else e.id), e.stand_in, e.note, method, basis))
    return out
