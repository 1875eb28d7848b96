"""CPU package and DRAM energy from RAPL, via the Linux powercap sysfs (``intel-rapl`` zones).

Layout: ``/sys/class/powercap/intel-rapl:<pkg>/`` is a package zone (``name`` = ``package-N``)
with sub-zones ``intel-rapl:<pkg>:<k>`` named ``core``, ``uncore`` or ``dram``; a top-level zone
named ``psys`` (platform) is skipped, since it overlaps the others. Each zone has ``energy_uj``,
a counter that wraps to 0 after ``max_energy_range_uj``; a decrease is unfolded as one wrap
(``+ raw + max_range - last``), as zeus does.

Channels: ``energy_j`` on the host device (sum of packages; core and uncore are inside the package
and not added again) and on the DRAM device (sum of ``dram`` sub-zones). AMD CPUs expose their
package counters through the same ``intel-rapl`` powercap driver on recent kernels.

Not available when the directory does not exist (most VMs, both machines of this project) or when
``energy_uj`` is not readable (root only since Linux 5.10, CVE-2020-8694): the reason says which.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

from .base import ChannelSpec, MonotonicCounter, Probe, Row, SensorBase

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplZone:
    path: Path
    name: str            # package-0, dram, core, uncore, psys
    kind: str            # package | dram | other
    max_energy_range_uj: float


def discover_zones(root: str | Path = POWERCAP) -> list[RaplZone]:
    """Package zones and their ``dram`` sub-zones under ``root``."""
    root = Path(root)
    zones: list[RaplZone] = []
    for top in sorted(root.glob("intel-rapl:*")):
        if top.name.count(":") != 1:
            continue
        tname = (top / "name").read_text().strip()
        if tname.startswith("package"):
            zones.append(RaplZone(top, tname, "package", float((top / "max_energy_range_uj").read_text())))
        for sub in sorted(top.glob(f"{top.name}:*")):
            sname = (sub / "name").read_text().strip()
            if sname == "dram":
                zones.append(RaplZone(sub, f"{tname}/dram", "dram", float((sub / "max_energy_range_uj").read_text())))
    return zones


class RaplSensor(SensorBase):
    name = "rapl"

    def __init__(self, *, host_device: str = "host", dram_device: str | None = "dram",
                 root: str | Path = POWERCAP):
        self.host_device = host_device
        self.dram_device = dram_device
        self.root = Path(root)
        self.zones: list[RaplZone] = []
        self._ctr: dict[Path, MonotonicCounter] = {}
        self._fds: list[int] | None = None

    def probe(self) -> Probe:
        if not self.root.is_dir():
            return Probe(False, f"{self.root} does not exist (no RAPL powercap: VM or non-x86 host)")
        try:
            zones = discover_zones(self.root)
        except OSError as exc:
            return Probe(False, f"RAPL zones under {self.root} unreadable ({exc.strerror or exc})")
        if not any(z.kind == "package" for z in zones):
            return Probe(False, f"no intel-rapl package zone under {self.root}")
        for z in zones:
            try:
                float((z.path / "energy_uj").read_text())
            except PermissionError:
                return Probe(False, f"{z.path / 'energy_uj'} is readable by root only (Linux >= 5.10); "
                                    "run as root or grant read access")
            except (OSError, ValueError) as exc:
                return Probe(False, f"{z.path / 'energy_uj'} unreadable ({exc})")
        self.zones = zones
        names = ", ".join(z.name for z in zones)
        return Probe(True, f"zones: {names}")

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = [(self.host_device, "energy_j", self.name)]
        if self.dram_device and any(z.kind == "dram" for z in self.zones):
            out.append((self.dram_device, "energy_j", self.name))
        return out

    def read(self) -> list[Row]:
        return self._rows([float((z.path / "energy_uj").read_text()) for z in self.zones])

    def _rows(self, raws: list[float]) -> list[Row]:
        pkg = dram = 0.0
        for z, raw in zip(self.zones, raws):
            c = self._ctr.get(z.path)
            if c is None:
                c = self._ctr[z.path] = MonotonicCounter(wrap_range=z.max_energy_range_uj)
            v = c.update(raw) / 1e6
            if z.kind == "package":
                pkg += v
            elif z.kind == "dram":
                dram += v
        rows: list[Row] = [(self.host_device, "energy_j", pkg)]
        if self.dram_device and any(z.kind == "dram" for z in self.zones):
            rows.append((self.dram_device, "energy_j", dram))
        return rows

    # ---- the recorder's native ticker (record/ticker.py) reads the zones' energy_uj on every tick
    def ticker_files(self) -> list[int] | None:
        if self._fds is None:
            self._fds = []
            try:
                for z in self.zones:
                    self._fds.append(os.open(z.path / "energy_uj", os.O_RDONLY))
            except OSError:
                self.close()
                self._fds = []
        return list(self._fds) if self._fds and len(self._fds) == len(self.zones) else None

    def rows_from_ticker(self, nums: list[Any]) -> list[Row]:
        return self._rows([float(n[0]) for n in nums])

    def close(self) -> None:
        for fd in self._fds or []:
            os.close(fd)
        self._fds = None

    def summary(self) -> dict[str, Any]:
        return {"zones": [z.name for z in self.zones], "wraps": sum(c.wraps for c in self._ctr.values())}
