"""Live Prometheus exporter: what a recording (or a growing trace file) has used and emitted so far.

A :class:`LiveExporter` is fed the samples of one trace, either by a :class:`~storagecarbon.record.recorder.Recorder`
it listens to (``record --prometheus HOST:PORT``) or by :class:`TraceFollower` reading a trace
file as it grows (``storagecarbon export TRACE``). On each scrape it turns the running totals
into a :class:`~storagecarbon.carbon.usage.Usage` (one phase, the whole run so far) with the same rules as
:func:`storagecarbon.carbon.usage.aggregate` (:func:`~storagecarbon.carbon.usage.increments`), attributes it
through the project's carbon kernel (:func:`attribute_now`, the one call), and exposes central
values. Metric names and units follow the Prometheus naming rules and the OpenTelemetry hardware
and system semantic conventions (``hw.energy`` in J, ``system.disk.io`` in bytes with a
``direction`` attribute):

=========================================  =======  ==================================================
``storagecarbon_energy_joules_total``      counter  ``device``, ``tier``, ``method`` (measured|modeled)
``storagecarbon_co2e_grams_total``         counter  ``device``, ``tier``, ``kind`` (embodied|operational)
``storagecarbon_io_bytes_total``           counter  ``device``, ``tier``, ``direction`` (read|write),
                                                    ``layer`` (block: the device; app: the run's processes
                                                    and LMCache taps)
``storagecarbon_busy_seconds_total``       counter  ``device``, ``tier``
``storagecarbon_cpu_seconds_total``        counter  ``device``, ``tier`` (CPU time of the process tree)
``storagecarbon_resident_bytes``           gauge    ``device``, ``tier`` (last sample)
``storagecarbon_power_watts``              gauge    ``device``, ``tier`` (last sample)
``storagecarbon_storage_share_ratio``      gauge    share of the gCO2e so far charged to storage tiers
``storagecarbon_tokens_total``             counter  ``kind`` (prompt|generated)
``storagecarbon_requests_total``           counter
``storagecarbon_recorded_seconds_total``   counter  time covered by the samples so far
``storagecarbon_samples_total``            counter
``storagecarbon_attribution_errors_total`` counter  scrapes whose attribution failed (carbon series left out)
``storagecarbon_run_info``                 info     ``source``, ``region``, ``host``
=========================================  =======  ==================================================

Missing is missing: a channel with no sample yet, a device without a device_db record, an
energy or embodied figure the attribution marks missing: no series at all (never 0). The storage
share is only exported when every device has both figures. Counters never go down: a value
below the last one exported (the kernel's ``max(time, wear)`` choice can switch) is held.
Embodied carbon accrues with time and occupancy as the attribution charges it; operational
carbon follows energy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..trace import TraceHeader, iter_batches, read_header, split_special
from ..carbon.usage import (OTHER, QUANTITIES, WORKLOAD, Usage, _phase_timeline, increments, phase_shares,
                            quantity_of)

STORAGE_TIERS = ("dram", "ssd", "hdd", "remote")
PREFIX = "storagecarbon"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); a clear error otherwise."""
    from ..errors import StoragecarbonError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise StoragecarbonError(f"--prometheus/--listen: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def carbon_inputs(db: Any, *, carbon: Any = None, header: TraceHeader | None = None, region: str | None = None,
                  base_dir: Path | None = None, draws: int | None = 1) -> Any:
    """Carbon inputs resolved as ``report`` does (scenario, else the trace's scenario echo, else the
    ``world`` grid). ``draws=1`` for the exporter, which exports central values only; ``None``: the
    scenario's number of draws."""
    from ..carbon.attribute import carbon_inputs_for
    from ..scenario import Carbon

    if carbon is None:
        echo = (header.scenario if header is not None else None) or {}
        try:
            carbon = Carbon.model_validate(echo.get("carbon") or {"region": region or "world"})
        except Exception:  # noqa: BLE001 - an odd echo falls back as in report
            carbon = Carbon(region=region or "world")
    return carbon_inputs_for(carbon, db, region=region, base_dir=base_dir, draws=draws)


def attribute_now(usage: Usage, db: Any, inputs: Any) -> Any:
    """The exporter's one call into the carbon kernel (public attribution API)."""
    from ..carbon.attribute import attribute

    return attribute(usage, db, inputs)


class LiveUsage:
    """Running usage totals of one trace per device and phase, fed samples (each channel's in time
    order) and the phase markers known so far (a marker arrives no later than the samples after it)."""

    def __init__(self, header: TraceHeader):
        self.header = header
        devs = [d.id for d in header.devices]
        self._didx = {d: i for i, d in enumerate(devs)}
        self.n_dev = len(devs)
        n_ch = max((c.id for c in header.channels), default=-1) + 1
        self.n_ch = n_ch
        self.ch_dev = np.full(n_ch, -1, dtype=np.int64)
        self.ch_q: list[str | None] = [None] * n_ch
        self.ch_cum = np.zeros(n_ch, dtype=bool)
        self.has: dict[tuple[str, str], bool] = {}
        for ch in header.channels:
            self.ch_cum[ch.id] = ch.cumulative
            if ch.device in self._didx:
                self.ch_dev[ch.id] = self._didx[ch.device]
                q = quantity_of(ch.metric)
                self.ch_q[ch.id] = q
                if q is not None:
                    self.has[(ch.device, q)] = True
            elif ch.metric in WORKLOAD:
                self.ch_q[ch.id] = ch.metric
        self.pidx: dict[str, int] = {OTHER: 0}
        self._by_phase: dict[str, np.ndarray] = {q: np.zeros((self.n_dev, 4)) for q in QUANTITIES}
        self.workload = {w: 0.0 for w in WORKLOAD}
        self.last_t = np.full(n_ch, np.nan)
        self.last_v = np.full(n_ch, np.nan)
        self.count = np.zeros(n_ch, dtype=np.int64)
        self.t_first = np.inf
        self.t_last = -np.inf
        self.samples = 0
        self.markers: list[tuple[float, str, str]] = []
        self._timeline: tuple[np.ndarray, np.ndarray, list[str]] = (np.zeros(0), np.zeros(0, dtype=np.int64), [])

    # -------------------------------------------------------------- phases
    def add_markers(self, markers: list[tuple[float, str, str]]) -> None:
        ph = [m for m in markers if m[1] in ("phase_start", "phase_end")]
        if not ph:
            return
        self.markers += ph
        times, active, names = _phase_timeline(self.markers)  # the rule of usage.aggregate
        for n in names:
            self._phase_index(n)
        self._timeline = (times, np.asarray([self.pidx[a] for a in active], dtype=np.int64), names)

    def _phase_index(self, name: str) -> int:
        i = self.pidx.get(name)
        if i is None:
            i = self.pidx[name] = len(self.pidx)
            cap = next(iter(self._by_phase.values())).shape[1]
            if i >= cap:
                for q, a in self._by_phase.items():
                    self._by_phase[q] = np.concatenate([a, np.zeros((self.n_dev, cap))], axis=1)
        return i

    def _phase_at(self, t: np.ndarray) -> np.ndarray:
        times, bphase, _ = self._timeline
        if len(times) == 0:
            return np.zeros(len(t), dtype=np.int64)
        k = np.searchsorted(times, t, side="right") - 1
        return np.where(k >= 0, bphase[np.clip(k, 0, None)], 0)

    # -------------------------------------------------------------- samples
    def add(self, t: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
        """Add samples (any channel order; each channel's samples in time order)."""
        if len(c) == 0:
            return
        keep = (c >= 0) & (c < self.n_ch)
        t, c, v = t[keep], c[keep], v[keep]
        if len(c) == 0:
            return
        self.samples += len(c)
        self.t_first = min(self.t_first, float(t.min()))
        self.t_last = max(self.t_last, float(t.max()))
        order = np.argsort(c, kind="stable")
        c_s, t_s, v_s = c[order], t[order], v[order]
        bounds = np.flatnonzero(np.diff(c_s)) + 1
        n_ph = next(iter(self._by_phase.values())).shape[1]
        for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(c_s)]])):
            cid = int(c_s[a])
            tt, vv = t_s[a:b], v_s[a:b]
            self.count[cid] += b - a
            if not np.isnan(self.last_t[cid]):
                tt = np.concatenate([[self.last_t[cid]], tt])
                vv = np.concatenate([[self.last_v[cid]], vv])
            self.last_t[cid], self.last_v[cid] = tt[-1], vv[-1]
            q = self.ch_q[cid]
            if q is None or len(tt) < 2:
                continue
            _t0, d = increments(tt, vv, bool(self.ch_cum[cid]))
            dev = self.ch_dev[cid]
            if dev < 0:
                self.workload[q] += float(d.sum())
            else:
                times, bphase, _ = self._timeline
                self._by_phase[q][dev] += phase_shares(tt, d, times, bphase, 0, n_ph)

    @property
    def totals(self) -> dict[str, np.ndarray]:
        """quantity -> [device] over all phases."""
        return {q: a.sum(axis=1) for q, a in self._by_phase.items()}

    @property
    def duration_s(self) -> float:
        return max(0.0, self.t_last - self.t_first) if np.isfinite(self.t_first) else 0.0

    def usage(self) -> Usage:
        """The :class:`Usage` of the run so far (what :func:`~storagecarbon.carbon.attribute.attribute` takes):
        phases as :func:`~storagecarbon.carbon.usage.aggregate` finds them, one interval."""
        times, bphase, names = self._timeline
        phases = list(names) + [OTHER]
        cols = [self.pidx[p] for p in phases]
        T = self.duration_s
        t0 = self.t_first if np.isfinite(self.t_first) else 0.0
        edges = np.concatenate([[t0], times[(times > t0) & (times < t0 + T)], [t0 + T]])
        seg = np.zeros(len(self.pidx))
        np.add.at(seg, self._phase_at(edges[:-1]), np.diff(edges))
        phase_time = seg[cols]
        by = {q: a[:, cols].copy() for q, a in self._by_phase.items()}
        by_int = {q: a.sum(axis=1, keepdims=True) for q, a in by.items()}
        return Usage(header=self.header, phases=phases, phase_time_s=phase_time, by_phase=by, has=dict(self.has),
                     workload=dict(self.workload), interval_s=max(T, 1e-9), by_interval=by_int,
                     interval_phase_s=phase_time[:, None].copy(), duration_s=T, t_start=t0, truncated=False,
                     samples=self.samples)

    def seen(self, device: str, metric: str) -> bool:
        """Whether the channel has at least one sample (a counter needs two to have moved)."""
        cid = self.header.channel_id(device, metric)
        return cid is not None and cid < self.n_ch and bool(self.count[cid] > 0)

    def last(self, device: str, metric: str) -> float | None:
        cid = self.header.channel_id(device, metric)
        if cid is None or cid >= self.n_ch or self.count[cid] == 0:
            return None
        return float(self.last_v[cid])


class LiveExporter:
    """A ``prometheus_client`` collector over one recording (see module docstring).

    Feed it as a :class:`~storagecarbon.record.recorder.Recorder` listener (:meth:`on_tick`, cheap: the
    sampling thread only appends the tick's rows) or with :meth:`feed`. ``collect()`` runs in the
    scraping thread and does the work.
    """

    def __init__(self, db: Any, inputs: Any = None, *, header: TraceHeader | None = None,
                 carbon: Any = None, region: str | None = None):
        self.db = db
        self.inputs = inputs
        self._carbon, self._region = carbon, region
        self._lock = threading.Lock()
        self._pending: list[tuple[list[tuple[float, int, float]], list[tuple[float, str, str]]]] = []
        self._live: LiveUsage | None = None
        self._held: dict[tuple[str, tuple[str, ...]], float] = {}
        self.attribution_errors = 0
        self.last_error: str | None = None
        if header is not None:
            self._bind(header)

    # ------------------------------------------------------------------ input
    def _bind(self, header: TraceHeader) -> None:
        if self._live is None:
            self._live = LiveUsage(header)
            if self.inputs is None:
                self.inputs = carbon_inputs(self.db, carbon=self._carbon, header=header, region=self._region)

    def on_tick(self, recorder: Any, rows: list[tuple[float, int, float]],
                markers: Sequence[tuple[float, str, str]] = ()) -> None:
        """Recorder listener: keep the tick's rows and markers for the next scrape."""
        with self._lock:
            if self._live is None and recorder.header is not None:
                self._bind(recorder.header)
            self._pending.append((rows, list(markers)))

    def feed(self, header: TraceHeader, t: np.ndarray, c: np.ndarray, v: np.ndarray,
             markers: Sequence[tuple[float, str, str]] = ()) -> None:
        with self._lock:
            self._bind(header)
            assert self._live is not None
            self._live.add_markers(list(markers))
            self._live.add(np.asarray(t, dtype=np.float64), np.asarray(c, dtype=np.int64), np.asarray(v, dtype=np.float64))

    def _drain(self) -> None:
        """Fold the ticks kept since the last scrape. Markers go first: an increment is split at the phase
        boundaries inside it (``usage.spread``), so the markers up to its end must be known when it is
        folded; a marker read after the scrape that folded the samples around it (the marker file is read
        every 0.2 s) moves that split to the final report only."""
        pend, self._pending = self._pending, []
        if not pend or self._live is None:
            return
        self._live.add_markers([m for _, mk in pend for m in mk])
        rows = [r for rs, _ in pend for r in rs]
        if rows:
            a = np.asarray(rows, dtype=np.float64)
            self._live.add(a[:, 0], a[:, 1].astype(np.int64), a[:, 2])

    # ------------------------------------------------------------------ output
    def _hold(self, name: str, labels: tuple[str, ...], value: float) -> float:
        key = (name, labels)
        v = max(value, self._held.get(key, value))
        self._held[key] = v
        return v

    def snapshot(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``{metric name: [(labels, value), ...]}`` of the run so far (only series with data)."""
        with self._lock:
            self._drain()
            live = self._live
            if live is None:
                return {}
            out: dict[str, list[tuple[dict[str, str], float]]] = {}

            def put(name: str, labels: dict[str, str], value: float, counter: bool = True) -> None:
                if value is None or not np.isfinite(value):
                    return
                if counter:
                    value = self._hold(name, tuple(f"{k}={v}" for k, v in sorted(labels.items())), float(value))
                out.setdefault(name, []).append((labels, float(value)))

            header = live.header
            u = live.usage()
            tot = live.totals
            for i, d in enumerate(header.devices):
                lab = {"device": d.id, "tier": d.tier}
                for metric, direction, layer in (("bytes_read", "read", "block"), ("bytes_written", "write", "block"),
                                                 ("app_bytes_read", "read", "app"), ("app_bytes_written", "write", "app")):
                    if live.seen(d.id, metric):
                        put("io_bytes", {**lab, "direction": direction, "layer": layer}, tot[metric][i])
                if live.seen(d.id, "busy_s"):
                    put("busy_seconds", lab, tot["busy_s"][i])
                if live.seen(d.id, "cpu_time_s"):
                    put("cpu_seconds", lab, tot["cpu_time_s"][i])
                for metric, name in (("resident_bytes", "resident_bytes"), ("power_w", "power_watts")):
                    x = live.last(d.id, metric)
                    if x is not None:
                        put(name, lab, x, counter=False)
            for metric, kind in (("prompt_tokens", "prompt"), ("generated_tokens", "generated")):
                if live.seen("workload", metric):
                    put("tokens", {"kind": kind}, live.workload[metric])
            if live.seen("workload", "requests_done"):
                put("requests", {}, live.workload["requests_done"])
            if live.samples:
                put("recorded_seconds", {}, live.duration_s)
                put("samples", {}, float(live.samples))
            if live.duration_s > 0 and self.inputs is not None:
                try:
                    attr = attribute_now(u, self.db, self.inputs)
                except Exception as exc:  # noqa: BLE001 - a scrape must answer; the error is counted
                    self.attribution_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    attr = None
                if attr is not None:
                    self._carbon_series(attr, live, put)
            put("attribution_errors", {}, float(self.attribution_errors))
            return out

    def _carbon_series(self, attr: Any, live: LiveUsage, put: Any) -> None:
        complete = True
        storage = total = 0.0
        for i, b in enumerate(attr.devices):
            lab = {"device": b.id, "tier": b.tier}
            energy_ok = bool(b.energy) and not b.energy.startswith("missing")
            if energy_ok and b.energy.startswith("measured"):
                q = "energy_j" if live.has.get((b.id, "energy_j")) else "power_w"
                energy_ok = live.seen(b.id, q)
            emb_ok = b.embodied_unit_kg is not None and not b.occupancy.startswith("missing")
            e_g = float(attr.embodied_best_g[i].sum())
            o_g = float(attr.operational_best_g[i].sum())
            if energy_ok:
                method = "measured" if b.energy.startswith("measured") else "modeled"
                put("energy_joules", {**lab, "method": method}, float(attr.energy_best_j[i].sum()))
                put("co2e_grams", {**lab, "kind": "operational"}, o_g)
            if emb_ok:
                put("co2e_grams", {**lab, "kind": "embodied"}, e_g)
            if not (energy_ok and emb_ok):
                complete = False
            g = (e_g if emb_ok else 0.0) + (o_g if energy_ok else 0.0)
            total += g
            if b.tier in STORAGE_TIERS:
                storage += g
        if complete and total > 0:
            put("storage_share_ratio", {}, storage / total, counter=False)

    _HELP = {
        "energy_joules": ("counter", "Energy of the device so far (measured counter or the device_db power model)"),
        "co2e_grams": ("counter", "gCO2e charged to the device so far (embodied: SCI time/occupancy or flash wear; "
                                  "operational: energy x grid x PUE), central values"),
        "io_bytes": ("counter", "Bytes read/written on the device (block: device counters; app: the run's processes)"),
        "busy_seconds": ("counter", "Time the device had IO in flight (unit-seconds)"),
        "cpu_seconds": ("counter", "CPU time of the recorded process tree"),
        "resident_bytes": ("gauge", "Bytes the run holds on the device (last sample)"),
        "power_watts": ("gauge", "Power of the device (last sample)"),
        "storage_share_ratio": ("gauge", "Share of the run's gCO2e so far charged to storage tiers (dram, ssd, hdd, remote)"),
        "tokens": ("counter", "Tokens processed by the recorded engine"),
        "requests": ("counter", "Requests completed by the recorded engine"),
        "recorded_seconds": ("counter", "Time covered by the recorder's samples so far"),
        "samples": ("counter", "Samples recorded so far"),
        "attribution_errors": ("counter", "Scrapes whose attribution failed (their carbon series are left out)"),
    }

    def collect(self) -> Iterator[Any]:
        """``prometheus_client`` collector protocol."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        snap = self.snapshot()
        for name, series in snap.items():
            kind, doc = self._HELP[name]
            keys = sorted({k for lab, _ in series for k in lab})
            full = f"{PREFIX}_{name}"
            fam = (CounterMetricFamily(full, doc, labels=keys) if kind == "counter"
                   else GaugeMetricFamily(full, doc, labels=keys))
            for lab, v in series:
                fam.add_metric([lab.get(k, "") for k in keys], v)
            yield fam
        if self._live is not None:
            h = self._live.header
            info = InfoMetricFamily(f"{PREFIX}_run", "The recording this exporter serves",
                                    labels=["source", "region", "host"])
            region = getattr(self.inputs, "region", None) or ""
            info.add_metric([h.source, str(region), str((h.host or {}).get("hostname", ""))], {})
            yield info

    def registry(self) -> Any:
        from prometheus_client import CollectorRegistry

        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return reg

    def serve(self, host: str, port: int) -> "Server":
        """Serve ``/metrics`` on ``host:port`` (a thread); ``.close()`` stops it."""
        from prometheus_client import start_http_server

        from ..errors import StoragecarbonError

        try:
            httpd, thread = start_http_server(port, addr=host, registry=self.registry())
        except OSError as exc:
            raise StoragecarbonError(f"cannot listen on {host}:{port} for Prometheus ({exc.strerror or exc})") from None
        return Server(httpd, thread)

    def text(self) -> str:
        """The exposition text of one scrape (for files and tests)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry()).decode()


class Server:
    def __init__(self, httpd: Any, thread: threading.Thread):
        self.httpd, self.thread = httpd, thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class TraceFollower:
    """Feeds an exporter from a trace file, picking up the batches appended since the last poll
    (a trace is flushed at least every second). ``poll()`` returns whether the trace has ended."""

    def __init__(self, path: str | Path, exporter: LiveExporter):
        self.path = Path(path)
        self.exporter = exporter
        self.header: TraceHeader | None = None
        self.batches = 0
        self.ended = False
        self._read_header()

    def _read_header(self) -> bool:
        """Read the header once it is there: a recorder's file stays empty until its first flush."""
        from ..errors import TraceError

        if self.header is None:
            if self.path.is_file() and self.path.stat().st_size == 0:
                return False
            if not self.path.exists():
                raise TraceError(f"{self.path}: trace file does not exist")
            self.header = read_header(self.path)
        return True

    def poll(self) -> bool:
        if self.ended:
            return True
        if not self._read_header():
            return False
        assert self.header is not None
        n = 0
        for batch in iter_batches(self.path):
            n += 1
            if n <= self.batches:
                continue
            t, c, v, mk, end = split_special(batch)
            self.exporter.feed(self.header, t, c, v, mk)
            if end is not None:
                self.ended = True
        self.batches = max(self.batches, n)
        return self.ended


def follow(path: str | Path, exporter: LiveExporter, *, poll_s: float = 1.0,
           stop: threading.Event | None = None) -> bool:
    """Poll a trace until it ends or ``stop`` is set; returns whether it ended."""
    stop = stop or threading.Event()
    follower = TraceFollower(path, exporter)
    while not follower.poll():
        if stop.wait(poll_s):
            return False
    return True
