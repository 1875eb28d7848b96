"""NVIDIA GPUs through NVML. The only module of storagecarbon that imports ``pynvml``.

Per GPU ``gpu<i>`` (NVML index order), each read at its own cadence (:data:`EVERY_S`, the recorder ticks
faster; ``every_s=FULL_RATE`` reads every metric on every tick):

* ``energy_j``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded, 64-bit;
  Volta and newer) -> J, cumulative. **The expensive one**: 3.4 ms of CPU per call (median; max 16 ms) on
  the lent H200 with driver 580.159.04, 4.4 ms on the H100 before (``benchmarks/gpu/nvml_cost.py``,
  ``benchmarks/results/recorder_cost.md``), against 0.05-0.11 ms for the gauges below. A cumulative counter
  loses no energy when read less often, so it is read every 30 s (0.11 ms of CPU a second at 3.4 ms a
  read), and at once for the recorder's first and final samples (``refresh``; not after a live marker,
  ``refresh_at_marker``, when the GPU reports power). Between two reads, attribution places the increment as the power readings of the same GPU
  say (:func:`storagecarbon.carbon.usage.spread` with :func:`~storagecarbon.carbon.usage.power_shape`), so a
  phase cut after the fact (``--window``, a serving window found from the metrics) still gets its energy;
* ``power_w``: ``nvmlDeviceGetPowerUsage`` (mW) -> W, gauge, every 1 s: on Ampere (except GA100) and
  newer GPUs NVML returns the power averaged over 1 s (NVML API reference, ``nvmlDeviceGetPowerUsage``),
  so reading it faster adds no information;
* ``resident_bytes``: ``nvmlDeviceGetMemoryInfo(...).used`` (B) -> HBM occupancy, gauge, every 5 s
  (vLLM allocates its KV cache once; a phase marker refreshes it);
* ``utilization``: ``nvmlDeviceGetUtilizationRates(...).gpu`` (%) -> 0..1, gauge, every 5 s (NVML's own
  sample period is 1/6 s to 1 s; no attribution uses it, the HTML chart shows it);
* ``pcie_tx_bps`` / ``pcie_rx_bps`` (only with ``pcie=True``; off by default: no attribution or report uses
  them): ``nvmlDeviceGetPcieThroughput`` (KB/s) -> B/s, gauges. Each such call samples the link for about
  20 ms (it blocks: 21 ms wall, 1.1 ms CPU on the H200), so at most one GPU is asked per ``read()`` and at
  most once per ``pcie_interval_s`` (round robin): with the default 10 s and 8 GPUs each GPU's PCIe gauge
  updates every 80 s (a gauge holds until its next sample).

While a process is creating its CUDA context, NVML calls can block for ~0.5 s (seen on the H100):
the recorder then skips the missed ticks and counts an overrun.

Every metric is tried once per GPU at ``probe()``; a call the GPU does not support leaves that
channel out (an old GPU without the energy counter still gets ``power_w``, which attribution
integrates). Not available when ``import pynvml`` fails or ``nvmlInit`` fails; the reason says
which. NVML errors become plain ``RuntimeError``\\ s with the NVML message.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from ...trace import DeviceEntry
from .base import ChannelSpec, Every, Probe, Row, SensorBase

KB = 1000.0  # NVML documents PCIe throughput in KB/s
EVERY_S = {"energy_j": 30.0, "power_w": 1.0, "resident_bytes": 5.0, "utilization": 5.0}
"""Default cadence per metric, in seconds (see the module's docstring for why each)."""
FULL_RATE = {m: 0.0 for m in EVERY_S}
"""Every metric on every tick: for the measurement harnesses (offline engine runs, calibration), whose
sub-second phases need the energy counter at the tick rate, and whose cost is not production's."""


def _text(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def parse_visible_devices(spec: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: comma-separated indices or UUIDs, up to the first invalid
    entry (``-1`` or an empty string: no GPU). Indices are taken as NVML's (PCI bus order; with
    ``CUDA_DEVICE_ORDER=FASTEST_FIRST`` on mixed GPUs CUDA may number them otherwise)."""
    out: list[str] = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok or tok.startswith("-"):
            break
        out.append(tok)
    return out


class NvmlSensor(SensorBase):
    name = "nvml"

    def __init__(self, *, pcie: bool = False, pcie_interval_s: float = 10.0, indices: list[int] | None = None,
                 id_prefix: str = "gpu", visible: str | None = None, every_s: Mapping[str, float] | None = None):
        self.pcie = pcie
        self.pcie_interval_s = pcie_interval_s
        self.every_s = {**EVERY_S, **(every_s or {})}
        self._due = {m: Every(v) for m, v in self.every_s.items()}  # one schedule per metric, all GPUs at once
        self._pcie_t = -1e9
        self.indices = indices
        # CUDA_VISIBLE_DEVICES of the recorded command: only the GPUs it can use are its GPUs
        self.visible = parse_visible_devices(visible) if visible is not None else None
        self.id_prefix = id_prefix
        self._nv: Any = None
        self._handles: list[tuple[str, Any]] = []
        self._names: dict[str, str] = {}
        self._mem_total: dict[str, float] = {}
        self._metrics: dict[str, list[str]] = {}
        self._rr = 0
        self._inited = False
        self.driver = ""
        self.partial_errors = 0
        self.first_partial_error = ""

    # ------------------------------------------------------------------ probing
    def probe(self) -> Probe:
        try:
            import pynvml  # the one import of pynvml in storagecarbon
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
            return Probe(False, f"pynvml cannot be imported ({type(exc).__name__}: {exc})")
        self._nv = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and friends
            return Probe(False, f"nvmlInit failed ({_text(exc) or type(exc).__name__}): no NVIDIA driver or GPU")
        self._inited = True
        try:
            self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except Exception:  # noqa: BLE001
            self.driver = ""
        try:
            n = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            return Probe(False, f"nvmlDeviceGetCount failed ({exc})")
        idx = list(range(n)) if self.indices is None else [i for i in self.indices if 0 <= i < n]
        if self.visible is not None:
            idx = [i for i in idx if i in self._visible_indices(n)]
        if not idx:
            return Probe(False, "NVML sees no GPU" if n == 0 else f"none of GPUs {self.indices} exist ({n} present)")
        self._handles = []
        for i in idx:
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            did = f"{self.id_prefix}{i}"
            self._handles.append((did, h))
            self._names[did] = _text(pynvml.nvmlDeviceGetName(h)).strip()
            self._metrics[did] = [m for m in ("energy_j", "power_w", "resident_bytes", "utilization")
                                  if self._try(lambda: self._read_metric(m, h))]
            try:
                self._mem_total[did] = float(pynvml.nvmlDeviceGetMemoryInfo(h).total)
            except Exception:  # noqa: BLE001
                pass
            if self.pcie and self._try(lambda: self._pcie(h)):
                self._metrics[did] += ["pcie_tx_bps", "pcie_rx_bps"]
        names = ", ".join(sorted(set(self._names.values())))
        drv = f"; driver {self.driver}" if self.driver else ""
        return Probe(True, f"{len(self._handles)} GPU(s): {names}{drv}")

    def _visible_indices(self, n: int) -> set[int]:
        """NVML indices named by ``visible`` (indices, or GPU UUIDs / their prefixes as CUDA accepts them)."""
        out: set[int] = set()
        for tok in self.visible or []:
            if tok.isdigit():
                out.add(int(tok))
                continue
            for i in range(n):
                try:
                    uuid = _text(self._nv.nvmlDeviceGetUUID(self._nv.nvmlDeviceGetHandleByIndex(i)))
                except Exception:  # noqa: BLE001
                    continue
                if uuid.startswith(tok) or uuid.startswith("GPU-" + tok):
                    out.add(i)
        return out

    @staticmethod
    def _try(fn: Any) -> bool:
        try:
            fn()
            return True
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported etc.
            return False

    def _read_metric(self, metric: str, h: Any) -> float:
        nv = self._nv
        if metric == "energy_j":
            return float(nv.nvmlDeviceGetTotalEnergyConsumption(h)) / 1000.0
        if metric == "power_w":
            return float(nv.nvmlDeviceGetPowerUsage(h)) / 1000.0
        if metric == "resident_bytes":
            return float(nv.nvmlDeviceGetMemoryInfo(h).used)
        if metric == "utilization":
            return float(nv.nvmlDeviceGetUtilizationRates(h).gpu) / 100.0
        raise KeyError(metric)

    def _pcie(self, h: Any) -> tuple[float, float]:
        nv = self._nv
        tx = float(nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_TX_BYTES)) * KB
        rx = float(nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_RX_BYTES)) * KB
        return tx, rx

    # ------------------------------------------------------------------ protocol
    def channels(self) -> list[ChannelSpec]:
        return [(did, m, self.name) for did, _ in self._handles for m in self._metrics.get(did, [])]

    def devices(self) -> list[DeviceEntry]:
        """One entry per GPU; ``db_key`` is left to the tier map (device_db aliases)."""
        return [DeviceEntry(id=did, tier="hbm", db_key=None, name=self._names[did],
                            capacity_bytes=self._mem_total.get(did)) for did, _ in self._handles]

    def gpu_names(self) -> dict[str, str]:
        return dict(self._names)

    def read(self) -> list[Row]:
        rows: list[Row] = []
        errors: list[str] = []
        now = time.monotonic()
        due = {m for m, e in self._due.items() if e.due(now)}
        for did, h in self._handles:
            for m in self._metrics[did]:
                if m not in due:
                    continue
                try:
                    rows.append((did, m, self._read_metric(m, h)))
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{did} {m}: {_text(exc) or type(exc).__name__}")
                    self.fault(did, m, f"NVML: {_text(exc) or type(exc).__name__}")
        pcie_gpus = [(did, h) for did, h in self._handles if "pcie_tx_bps" in self._metrics[did]]
        if pcie_gpus and now - self._pcie_t >= self.pcie_interval_s:
            self._pcie_t = now
            did, h = pcie_gpus[self._rr % len(pcie_gpus)]
            self._rr += 1
            try:
                tx, rx = self._pcie(h)
                rows += [(did, "pcie_tx_bps", tx), (did, "pcie_rx_bps", rx)]
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{did} pcie: {_text(exc) or type(exc).__name__}")
                for m in ("pcie_tx_bps", "pcie_rx_bps"):
                    self.fault(did, m, f"NVML: {_text(exc) or type(exc).__name__}")
        if errors:
            if not rows:
                raise RuntimeError("NVML: " + "; ".join(errors))
            self.partial_errors += len(errors)
            self.first_partial_error = self.first_partial_error or errors[0]
        return rows

    @property
    def next_read_s(self) -> float:
        """The next metric due (recorder protocol, see base)."""
        nxt = min((e.next_s for e in self._due.values()), default=-math.inf)
        if self.pcie and any(m.startswith("pcie_") for ms in self._metrics.values() for m in ms):
            nxt = min(nxt, self._pcie_t + self.pcie_interval_s)
        return nxt

    def refresh(self) -> None:
        """The next :meth:`read` reads every metric (the recorder's first and final samples)."""
        for e in self._due.values():
            e.refresh()

    def refresh_at_marker(self) -> None:
        """After a live marker: every metric but the energy counter, whose increment the power readings place
        at the cut (:func:`storagecarbon.carbon.usage.power_shape`). On the H200 under load an energy read cost
        ~10x its idle 3.4 ms, and the markers of a served run come exactly then."""
        for m, e in self._due.items():
            if m != "energy_j" or "power_w" not in {x for ms in self._metrics.values() for x in ms}:
                e.refresh()

    def close(self) -> None:
        if self._inited:
            try:
                self._nv.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._inited = False

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"driver": self.driver, "gpus": self._names, "every_s": self.every_s,
                               "pcie_interval_s": self.pcie_interval_s if self.pcie else None}
        if self.partial_errors:
            out["partial_errors"] = {"count": self.partial_errors, "first": self.first_partial_error}
        return out
