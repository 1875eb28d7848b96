"""Per-tier KV bytes from the project's vLLM stat-logger plugin (``vllm_stats`` markers).

The plugin (:mod:`storagecarbon.engines.stat_logger`) runs inside ``vllm serve`` and appends
cumulative scheduler and KV-connector totals to the recorder's marker file. This sensor tails the
same file and turns the latest totals' ``tiers`` into channels:

* ``cpu`` -> ``app_bytes_written`` / ``app_bytes_read`` of the DRAM device (KV stored to / loaded
  from host memory by the KV connector: vLLM's offloading connector, or LMCache's CPU tier);
* ``disk`` (LMCache's local disk tier) and vLLM's secondary tiers (``1:fs``, ...) -> the same
  metrics of the disk device (summed over those tiers).

Totals are per engine (``engine`` in each line) and summed over engines. The plugin's totals count
from the engine's start, so once the engine has announced itself (``vllm_engine_ready``) or sent its
first totals, the channels read 0 first (a true reading: nothing moved before the engine existed),
then the totals; before that there is no reading (no rows), never zeros. The last totals also go to the footer (``summary()``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...engines.stat_logger import MARKER_EVENT, READY_EVENT, parse_stats_label
from .base import ChannelSpec, Probe, Row, SensorBase

DRAM_TIERS = {"cpu"}
REMOTE_TIERS = {"remote"}


class VllmStatsSensor(SensorBase):
    name = "vllm_stats"

    def __init__(self, markers_file: str | Path, *, dram_device: str | None = None, disk_device: str | None = None):
        self.markers_file = Path(markers_file)
        self.dram_device = dram_device
        self.disk_device = disk_device
        self._tail: Any = None
        self.last: dict[int, dict[str, Any]] = {}
        self.lines = 0
        self.ready_unix: float | None = None
        self.first_active_unix: float | None = None
        self.last_active_unix: float | None = None
        self._prev_iter: dict[int, int] = {}
        self._based = False
        self._reads_started: set[str] = set()
        self._rows: list[Row] | None = None   # returned again while no new line came (recorder protocol, base.py)
        self._fed: list[tuple[float, str, str]] | None = None   # lines from the recorder's own read of the file

    def use_marker_feed(self) -> None:
        """The recorder reads the marker file anyway: it hands this sensor the new lines (:meth:`feed_markers`)
        instead of the sensor reading the file a second time, and the sensor is read only when lines came."""
        self._fed = []

    def feed_markers(self, lines: list[tuple[float, str, str]]) -> bool:
        """New ``(t_unix, event, label)`` lines of the marker file; true when one of them is this sensor's."""
        if self._fed is None:
            return False
        mine = [ln for ln in lines if ln[1] == MARKER_EVENT or ln[1] == READY_EVENT]
        self._fed += mine
        return bool(mine)

    @property
    def next_read_s(self) -> float:
        """Fed by the recorder: due only when lines came (recorder protocol, see base)."""
        if self._fed is None or self._fed or self._rows is None:
            return -math.inf
        return math.inf

    def probe(self) -> Probe:
        if not self.markers_file.parent.is_dir():
            return Probe(False, f"marker directory {self.markers_file.parent} does not exist")
        return Probe(True, f"reading vllm_stats markers of the storagecarbon vLLM stat-logger plugin from "
                           f"{self.markers_file}")

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = []
        for dev in (self.dram_device, self.disk_device):
            if dev:
                out += [(dev, "app_bytes_written", self.name), (dev, "app_bytes_read", self.name)]
        return out

    def _device_of(self, tier: str) -> str | None:
        if tier in DRAM_TIERS:
            return self.dram_device
        if tier in REMOTE_TIERS:
            return None
        return self.disk_device

    def read(self) -> list[Row]:
        if self._fed is not None:
            new, self._fed = self._fed, []
        else:
            if self._tail is None:
                from ..recorder import _MarkerTail
                self._tail = _MarkerTail(self.markers_file)
            new = self._tail.read()
        if not new and self._rows is not None:
            return self._rows   # no new line: every channel as before
        for t_unix, event, label in new:
            if event == READY_EVENT and self.ready_unix is None:
                self.ready_unix = t_unix
            if event != MARKER_EVENT:
                continue
            d = parse_stats_label(label)
            if d is None:
                continue
            eng = int(d.get("engine", 0) or 0)
            it = int(d.get("generation_tokens", 0) or 0) + int(d.get("prompt_tokens", 0) or 0)
            if it > self._prev_iter.get(eng, 0):
                if self.first_active_unix is None:
                    self.first_active_unix = t_unix
                self.last_active_unix = t_unix
            self._prev_iter[eng] = it
            self.last[eng] = d
            self.lines += 1
        # Counters start at 0 when the engine is ready. Bytes read (KV loaded back) start only once the connector
        # reports a read direction at all: LMCache's GPU retrieval path is not tapped, and a read it never reports
        # must stay missing, not read as 0 (the offload ledger would count 0 hits).
        base: list[Row] = []
        if not self._based and (self.ready_unix is not None or self.last):
            self._based = True
            base = [(dev, metric, 0.0) for dev, metric, _ in self.channels() if metric == "app_bytes_written"]
        if not self.last:
            self._rows = []
            return base
        acc: dict[tuple[str, str], float] = {}
        for d in self.last.values():
            for tier, vals in (d.get("tiers") or {}).items():
                dev = self._device_of(tier)
                if dev is None:
                    continue
                for key, metric in (("bytes_written", "app_bytes_written"), ("bytes_read", "app_bytes_read")):
                    if key in vals or metric == "app_bytes_written":
                        acc[(dev, metric)] = acc.get((dev, metric), 0.0) + float(vals.get(key, 0.0) or 0.0)
        rows = base + [(dev, metric, v) for (dev, metric), v in acc.items()]
        for dev, metric in acc:
            if metric == "app_bytes_read" and dev not in self._reads_started:
                self._reads_started.add(dev)
                rows.insert(0, (dev, metric, 0.0))   # the read counter's zero, then its first total
        self._rows = [(dev, metric, v) for (dev, metric), v in acc.items()]   # without this read's one-off zeros
        return rows

    def totals(self) -> dict[str, Any] | None:
        """The latest totals summed over engines (``None`` before the first plugin line)."""
        if not self.last:
            return None
        if len(self.last) == 1:
            return dict(next(iter(self.last.values())))
        return {"engines": {str(k): v for k, v in self.last.items()}}

    def summary(self) -> dict[str, Any]:
        return {"lines": self.lines, "ready_unix": self.ready_unix, "first_active_unix": self.first_active_unix,
                "last_active_unix": self.last_active_unix, "totals": self.totals()}
