"""Replay of recorded readings, so everything downstream runs without hardware (zeus-style).

Two ways to replay a recorded trace (or an in-memory list of rows ``(t_s, device, metric, value)``):

* :class:`ReplaySensor`: a live sensor. At each ``read()`` it answers, per channel, the last
  recorded value at or before ``(now - start) * speed`` seconds into the recording. Put it in a
  :class:`~storagecarbon.record.recorder.Recorder` to exercise the recorder end to end.
* :func:`write_replay`: writes the readings straight into a new trace with their recorded
  timestamps (``source = "replayed"``), no clock involved: deterministic and instant, for
  attribution tests (a 4-GPU replay through :func:`storagecarbon.carbon.usage.aggregate` gives each GPU
  the energy between its first and last counter value).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ...trace import DeviceEntry, Trace, TraceHeader, TraceWriter, host_inventory, make_channels, read_trace, tool_versions
from .base import ChannelSpec, Probe, Row, SensorBase

ReplayRow = tuple[float, str, str, float]   # (t_s, device, metric, value)

_TIER_BY_PREFIX = (("gpu", "hbm"), ("hbm", "hbm"), ("dram", "dram"), ("ssd", "ssd"), ("nvme", "ssd"),
                   ("hdd", "hdd"), ("host", "host"), ("cpu", "host"), ("remote", "remote"))


def guess_devices(device_ids: Iterable[str]) -> list[DeviceEntry]:
    """Device entries for bare ids (tier from the id's prefix, no device_db key)."""
    out = []
    for d in dict.fromkeys(device_ids):
        if d == "workload":
            continue
        tier = next((t for p, t in _TIER_BY_PREFIX if d.startswith(p)), "host")
        out.append(DeviceEntry(id=d, tier=tier, db_key=None, name=d))
    return out


def _load(source: "str | Path | Trace | list[ReplayRow]") -> tuple[list[ReplayRow], TraceHeader | None, list[tuple[float, str, str]]]:
    if isinstance(source, (str, Path)):
        source = read_trace(source)
    if isinstance(source, Trace):
        ch = {c.id: (c.device, c.metric) for c in source.header.channels}
        rows = [(float(t), *ch[int(c)], float(v)) for t, c, v in zip(source.t_s, source.channel, source.value)
                if int(c) in ch]
        return rows, source.header, list(source.markers)
    return [(float(t), str(d), str(m), float(v)) for t, d, m, v in source], None, []


class ReplaySensor(SensorBase):
    """Answers recorded readings as if they were live (see module docstring)."""

    name = "replay"

    def __init__(self, source: "str | Path | Trace | list[ReplayRow]", *, speed: float = 1.0,
                 devices: list[DeviceEntry] | None = None, clock: Callable[[], float] = time.monotonic):
        rows, header, _ = _load(source)
        rows.sort(key=lambda r: r[0])
        self.speed = speed
        self.clock = clock
        self._header = header
        self._devices = devices
        self._chan: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        by: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for t, d, m, v in rows:
            by.setdefault((d, m), []).append((t, v))
        for k, tv in by.items():
            arr = np.asarray(tv, dtype=np.float64)
            self._chan[k] = (arr[:, 0], arr[:, 1])
        self.t_first = min((ts[0] for ts, _ in self._chan.values()), default=0.0)
        self.t_last = max((ts[-1] for ts, _ in self._chan.values()), default=0.0)
        self._start: float | None = None

    def probe(self) -> Probe:
        if not self._chan:
            return Probe(False, "nothing to replay (no samples)")
        return Probe(True, f"{len(self._chan)} channel(s), {self.t_last - self.t_first:.3g} s recorded, x{self.speed:g}")

    def channels(self) -> list[ChannelSpec]:
        return [(d, m, self.name) for d, m in self._chan]

    def devices(self) -> list[DeviceEntry]:
        if self._devices is not None:
            return list(self._devices)
        if self._header is not None:
            return list(self._header.devices)
        return guess_devices(d for d, _ in self._chan)

    @property
    def finished(self) -> bool:
        return self._start is not None and self.elapsed_s() >= self.t_last - self.t_first

    def elapsed_s(self) -> float:
        if self._start is None:
            return 0.0
        return (self.clock() - self._start) * self.speed

    def read(self) -> list[Row]:
        if self._start is None:
            self._start = self.clock()
        t = self.t_first + self.elapsed_s()
        rows: list[Row] = []
        for (d, m), (ts, vs) in self._chan.items():
            k = int(np.searchsorted(ts, t, side="right")) - 1
            if k >= 0:
                rows.append((d, m, float(vs[k])))
        return rows


def write_replay(source: "str | Path | Trace | list[ReplayRow]", out_path: str | Path, *,
                 devices: list[DeviceEntry] | None = None, markers: list[tuple[float, str, str]] | None = None,
                 scenario: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> Path:
    """Write recorded readings as a new trace with their own timestamps (``source="replayed"``)."""
    rows, header, src_markers = _load(source)
    if devices is None:
        devices = list(header.devices) if header is not None else guess_devices(d for _, d, _, _ in rows)
    specs: list[ChannelSpec] = []
    for _, d, m, _ in rows:
        if (d, m, "replay") not in specs:
            specs.append((d, m, "replay"))
    channels = make_channels(specs)
    cid = {(c.device, c.metric): c.id for c in channels}
    hdr = TraceHeader(
        source="replayed", devices=devices, channels=channels,
        t0_unix=header.t0_unix if header is not None else time.time(),
        sensors={"replay": {"available": True, "reason": "replayed readings"}},
        scenario=scenario if scenario is not None else (header.scenario if header is not None else None),
        host=header.host if header is not None else host_inventory(),
        tool_versions=tool_versions(),
        notes=(["replay of " + (header.source if header is not None else "in-memory rows")]),
    )
    rows = sorted(rows, key=lambda r: r[0])
    w = TraceWriter(out_path, hdr, fsync=False)
    try:
        if rows:
            w.samples(np.array([r[0] for r in rows]), np.array([cid[(r[1], r[2])] for r in rows], dtype=np.int32),
                      np.array([r[3] for r in rows]))
        for t, ev, name in sorted(list(src_markers) + list(markers or []), key=lambda m: m[0]):
            w.marker(t, ev, name)
    finally:
        w.close(summary or {"replayed_rows": len(rows)})
    return Path(out_path)
