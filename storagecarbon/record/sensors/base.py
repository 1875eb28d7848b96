"""The sensor protocol and the small helpers every sensor shares.

A sensor reads one source (NVML, ``/proc/diskstats``, ``/proc/<pid>/io``, RAPL sysfs, LMCache tap
files, a Prometheus endpoint, a recorded trace) and answers raw values in the trace's metric
vocabulary (:data:`storagecarbon.trace.CUMULATIVE_METRICS` / :data:`~storagecarbon.trace.GAUGE_METRICS`),
already converted to the unit in the metric's name (J, B, s, W, B/s).

* ``probe()`` says whether the sensor can read on this machine, and if not, why. A sensor that is
  not available contributes **no** channels: the trace header records ``{"available": False,
  "reason": ...}`` and downstream stages treat the quantity as missing, never as zero.
* ``channels()`` lists ``(device_id, metric, sensor_name)`` triples (only meaningful once probed
  available).
* ``read()`` returns ``(device_id, metric, value)`` rows. Counters are cumulative and monotonic
  where the sensor can make them so (wraps are unfolded here, see :class:`MonotonicCounter`); a
  row may be left out when there is no reading yet (absent is not zero). ``read()`` may raise:
  the recorder records the failure and keeps sampling.

A sensor that fails mid-run never writes a made-up value. Failures become *labelled gaps*:

* ``read()`` raises: every channel of the sensor is in a gap from that tick until it reads again;
* one channel fails while the others read (an NVML call, a vanished block device): the sensor
  leaves that row out and calls :meth:`SensorBase.fault` with ``kind="error"``: that channel alone
  is in a gap;
* a counter went backwards and is not a wrap (device re-attached, driver reloaded): ``kind="reset"``;
  the counter goes on from its new origin, and the increment lost between the last read before the
  reset and the reset itself is labelled;
* a value that is not a finite number is never written: a gap, as for an error.

A sensor that reads its sources at a lower rate than the recorder ticks may say so with a
``next_read_s`` attribute or property (monotonic seconds): the recorder does not call ``read()`` before
that time (a tick then costs nothing for it), except after ``refresh()``. Without it, ``read()`` is called
on every tick. A ``read()`` that returns the very list object it returned last time says "every channel reads
as before, and nothing failed": the recorder then holds all of them in one step instead of comparing row by row
(a sensor that caches its rows between changes, such as the disk counters between IOs, costs a tick almost
nothing). A caller must therefore not modify the list ``read()`` returns.

The recorder writes ``gap_start`` / ``gap_end`` and ``counter_reset`` markers named
``<device>.<metric>`` (plus the reason) and lists every gap in the trace footer; other channels go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ...trace import CUMULATIVE_METRICS, GAUGE_METRICS, DeviceEntry

Row = tuple[str, str, float]            # (device_id, metric, value)
ChannelSpec = tuple[str, str, str]      # (device_id, metric, sensor_name)

WORKLOAD_DEVICE = "workload"            # pseudo-device of the token/request counters


@dataclass(frozen=True)
class Probe:
    """Whether a sensor can read here; ``reason`` says why not (or what it found)."""

    available: bool
    reason: str = ""

    def as_header(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason}


@runtime_checkable
class Sensor(Protocol):
    name: str

    def probe(self) -> Probe: ...

    def channels(self) -> list[ChannelSpec]: ...

    def devices(self) -> list[DeviceEntry]: ...

    def read(self) -> list[Row]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ChannelFault:
    """One channel of a sensor that failed (``kind="error"``) or whose counter reset, in one read."""

    device: str
    metric: str
    kind: str          # "error" | "reset"
    reason: str


class SensorBase:
    """Defaults for the optional parts of the protocol (no devices, nothing to close, no summary),
    and the per-channel fault report the recorder collects after each read."""

    name = "sensor"

    def fault(self, device: str, metric: str, reason: str, kind: str = "error") -> None:
        """Report that ``device.metric`` has no valid reading in this ``read()`` (or that its counter reset)."""
        faults = self.__dict__.setdefault("_faults", [])
        faults.append(ChannelFault(device, metric, kind, reason))

    def take_faults(self) -> list[ChannelFault]:
        """The faults reported since the last call (the recorder calls it after every read)."""
        return self.__dict__.pop("_faults", [])

    def devices(self) -> list[DeviceEntry]:
        return []

    def close(self) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        """Extra figures for the trace footer (totals the metric vocabulary has no channel for)."""
        return {}


def check_metric(metric: str) -> str:
    if metric not in CUMULATIVE_METRICS and metric not in GAUGE_METRICS:
        raise ValueError(f"unknown metric {metric!r} (see storagecarbon.trace metric vocabulary)")
    return metric


class MonotonicCounter:
    """Unfolds a raw hardware/kernel counter into a monotonic total.

    ``width_bits`` is the counter's width (32 for ``unsigned int`` kernel fields such as the
    ``io_ticks`` column of ``/proc/diskstats``, or ``unsigned long`` fields on 32-bit kernels;
    64 otherwise). When the raw value goes down:

    * if the counter is narrower than 64 bits and the last raw value was in the upper half of its
      range, it is a **wrap**: add ``(raw - last) mod 2**width`` (one wrap per sample interval at
      most; at 10 Hz a 32-bit sector counter would need 2 TiB/s to wrap twice);
    * otherwise it is a **reset** (device re-attached, driver reloaded, stats cleared): the raw
      value counts from zero again, so add ``raw``.

    ``wrap_range`` overrides the modulus for counters that wrap at a published maximum (RAPL's
    ``max_energy_range_uj``): then every decrease is a wrap, adding ``raw + wrap_range - last``.

    The first value sets the origin: ``value`` is the raw first value plus the unfolded increments,
    so that the exposed counter equals the raw counter until the first wrap.
    """

    def __init__(self, width_bits: int = 64, wrap_range: float | None = None):
        self.width_bits = width_bits
        self.wrap_range = wrap_range
        self.last_raw: float | None = None
        self.value: float = 0.0
        self.wraps = 0
        self.resets = 0

    def update(self, raw: float) -> float:
        if self.last_raw is None:
            self.value = float(raw)
        elif raw >= self.last_raw:
            self.value += raw - self.last_raw
        elif self.wrap_range is not None:
            self.value += raw + self.wrap_range - self.last_raw
            self.wraps += 1
        elif self.width_bits < 64 and self.last_raw >= 2 ** (self.width_bits - 1):
            self.value += (raw - self.last_raw) % (2 ** self.width_bits)
            self.wraps += 1
        else:
            self.value += raw
            self.resets += 1
        self.last_raw = float(raw)
        return self.value


class KeepLast:
    """Per-key cumulative totals that never go backwards when sources come and go.

    Used for per-process and per-file counters: a source that disappears keeps its last value in
    the total; a source whose counter goes down (restarted with the same key) folds its old value
    into a base and counts from zero again.
    """

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}
        self._base: dict[Any, float] = {}

    def update(self, key: Any, value: float) -> None:
        last = self._last.get(key)
        if last is not None and value < last:
            self._base[key] = self._base.get(key, 0.0) + last
        self._last[key] = float(value)

    def forget(self, key: Any) -> None:
        """Drop a key without keeping its value (it was absorbed into another key's counter)."""
        self._base.pop(key, None)
        self._last.pop(key, None)

    def keys(self) -> list[Any]:
        return list(self._last)

    def total(self) -> float:
        return float(sum(self._last.values()) + sum(self._base.values()))

    def __len__(self) -> int:
        return len(self._last)


class Every:
    """A source read at its own cadence, below the recorder's tick rate: :meth:`due` is true once per
    ``interval_s`` (on every call when it is 0) and on the first call after :meth:`refresh`.

    The one rule for sensors that read some sources less often than the recorder ticks (a source that cannot
    change faster, or whose read costs milliseconds): the schedule is anchored (``interval_s`` apart, not
    ``interval_s`` after each late tick), with 5 ms of slack for tick jitter; after a long pause, or a refresh, it
    starts again at the next multiple of ``interval_s`` on the monotonic clock, so sources read every 0.5, 1, 2 or 5 s
    fall due together. The recorder calls its sensors' ``refresh()`` for its first and final samples and after
    live phase markers, so those always read every source."""

    __slots__ = ("interval_s", "_next")
    SLACK_S = 0.005

    def __init__(self, interval_s: float):
        self.interval_s = max(0.0, float(interval_s))
        self._next = -math.inf

    def due(self, now: float) -> bool:
        if now + self.SLACK_S < self._next:
            return False
        iv = self.interval_s
        nxt = self._next + iv
        if nxt <= now:
            # (re)start on the clock's grid of the interval (multiples of it): every source of the same or a
            # multiple interval falls due on the same instants, so one wake-up of the sampling thread serves them
            nxt = (math.floor(now / iv) + 1) * iv if iv > 0 else now
        self._next = nxt
        return True

    def refresh(self) -> None:
        self._next = -math.inf

    @property
    def next_s(self) -> float:
        """When :meth:`due` answers true next (monotonic s)."""
        return self._next - self.SLACK_S
