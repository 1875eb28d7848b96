"""Hardware configurations as arrays (struct of arrays): one per scenario, or a sweep's product.

The per-step physics (:mod:`.physics`) is written over these arrays; the simulation evaluates a
configuration of one, the steady state thousands at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..devicedb import DeviceDB
from ..errors import StoragecarbonError
from ..scenario import Scenario


@dataclass
class HwConfigs:
    """Perf-relevant configurations as arrays (struct of arrays), one entry per configuration."""

    gpu: list[str]
    n_gpu: np.ndarray
    w_frac: np.ndarray            # [H, 4] hbm, dram, ssd, hdd
    dram: list[str | None]
    n_dram: np.ndarray
    ssd: list[str | None]
    n_ssd: np.ndarray
    hdd: list[str | None]
    n_hdd: np.ndarray
    cpu_gb: np.ndarray
    disk_gb: np.ndarray
    util: np.ndarray
    max_seqs: np.ndarray
    host: str | None
    n_host: int
    host_share: float = 1.0
    cpu: str | None = None
    n_cpu: int = 0
    cpu_share: float = 1.0

    def __len__(self) -> int:
        return len(self.gpu)

    def label(self, i: int) -> str:
        parts = [f"{int(self.n_gpu[i])}x {self.gpu[i]}"]
        w = self.w_frac[i]
        if w[0] < 1:
            parts.append("weights " + "/".join(f"{t} {f:.0%}" for t, f in zip(("hbm", "dram", "ssd", "hdd"), w) if f > 0))
        if self.dram[i]:
            parts.append(f"{int(self.n_dram[i])}x {self.dram[i]}")
        if self.ssd[i]:
            parts.append(f"{int(self.n_ssd[i])}x {self.ssd[i]}")
        if self.hdd[i]:
            parts.append(f"{int(self.n_hdd[i])}x {self.hdd[i]}")
        kv = []
        if self.cpu_gb[i] > 0:
            kv.append(f"cpu {self.cpu_gb[i]:g} GB")
        if self.disk_gb[i] > 0:
            kv.append(f"disk {self.disk_gb[i]:g} GB")
        if kv:
            parts.append("KV " + ", ".join(kv))
        parts.append(f"util {self.util[i]:g}, seqs {int(self.max_seqs[i])}")
        return "; ".join(parts)

    def describe(self, i: int) -> dict[str, Any]:
        w = self.w_frac[i]
        return {"gpu": {"device": self.gpu[i], "count": int(self.n_gpu[i])},
                "host": {"device": self.host, "count": self.n_host} if self.host else None,
                "cpu": {"device": self.cpu, "count": self.n_cpu} if self.cpu else None,
                "dram": {"device": self.dram[i], "count": int(self.n_dram[i])} if self.dram[i] else None,
                "ssd": {"device": self.ssd[i], "count": int(self.n_ssd[i])} if self.ssd[i] else None,
                "hdd": {"device": self.hdd[i], "count": int(self.n_hdd[i])} if self.hdd[i] else None,
                "weights": {t: float(f) for t, f in zip(("hbm", "dram", "ssd", "hdd"), w) if f > 0},
                "kv": {"cpu_gb": float(self.cpu_gb[i]), "disk_gb": float(self.disk_gb[i])},
                "gpu_memory_utilization": float(self.util[i]), "max_num_seqs": int(self.max_seqs[i])}


def tier_of(scn: Scenario, tier: str) -> tuple[str, int] | None:
    hw = scn.hardware.tiers().get(tier)
    return (hw.device, hw.count) if hw else None


def platform(scn: Scenario, db: DeviceDB) -> dict[str, Any]:
    """The scenario's host chassis and host CPUs (fixed across a sweep)."""
    out: dict[str, Any] = {}
    for slot in ("host", "cpu"):
        hw = scn.hardware.tiers().get(slot)
        out[slot] = db.get(hw.device).key if hw else None
        out[f"n_{slot}"] = hw.count if hw else 0
        out[f"{slot}_share"] = float(getattr(hw, "share", 1.0) or 1.0) if hw else 1.0
    return out


def configs_from_scenarios(scns: Sequence[Scenario], db: DeviceDB) -> HwConfigs:
    """One configuration per scenario (hardware and placement); the platform comes from the first."""
    rows: list[tuple[Any, ...]] = []
    for s in scns:
        pl = s.placement
        g = tier_of(s, "gpu")
        if g is None:
            raise StoragecarbonError(f"{s.name}: the performance model needs hardware.gpu")
        rows.append(((db.get(g[0]).key, g[1]), (pl.weights.hbm, pl.weights.dram, pl.weights.ssd, pl.weights.hdd),
                     *[(db.get(t[0]).key, t[1]) if t else (None, 0) for t in (tier_of(s, x) for x in ("dram", "ssd", "hdd"))],
                     pl.kv.local_cpu.size_gb if pl.kv.local_cpu and pl.kv.local_cpu.enabled else 0.0,
                     pl.kv.local_disk.size_gb if pl.kv.local_disk and pl.kv.local_disk.enabled else 0.0,
                     pl.gpu_memory_utilization, s.engine.max_num_seqs))
    H = len(rows)
    return HwConfigs(
        gpu=[r[0][0] for r in rows], n_gpu=np.array([r[0][1] for r in rows], float),
        w_frac=np.array([r[1] for r in rows], float).reshape(H, 4),
        dram=[r[2][0] for r in rows], n_dram=np.array([r[2][1] for r in rows], float),
        ssd=[r[3][0] for r in rows], n_ssd=np.array([r[3][1] for r in rows], float),
        hdd=[r[4][0] for r in rows], n_hdd=np.array([r[4][1] for r in rows], float),
        cpu_gb=np.array([r[5] for r in rows], float), disk_gb=np.array([r[6] for r in rows], float),
        util=np.array([r[7] for r in rows], float), max_seqs=np.array([r[8] for r in rows], float),
        **platform(scns[0], db))


def figure_array(keys: Sequence[str | None], db: DeviceDB, attr: str,
                 overrides: Mapping[str, Any] | None = None) -> np.ndarray:
    """A device figure's central value per configuration (NaN where the key is None or the figure is
    missing); ``overrides`` (a sweep's ``device_overrides``) take precedence."""
    ov = overrides or {}

    def one(k: str | None) -> float:
        if k is None:
            return np.nan
        o = ov.get(k)
        oattr = "bf16_tflops" if attr == "tensor_tflops" else attr   # a sweep overrides the bf16 figure
        if o is not None and getattr(o, oattr, None) is not None:
            return float(getattr(o, oattr))
        rec = db.get(k)
        f = getattr(rec, attr, None)
        if f is not None:
            return float(f.central)
        if attr == "capacity_gb":
            return float(rec.capacity_gb or np.nan)
        return np.nan

    vals = {k: one(k) for k in set(keys)}
    return np.array([vals[k] for k in keys], dtype=float)


def capacity_array(keys: Sequence[str | None], db: DeviceDB) -> np.ndarray:
    """Capacity in bytes per configuration (0 where the key is None or has no capacity)."""
    vals = {k: float(db.get(k).capacity_bytes or 0.0) if k else 0.0 for k in set(keys)}
    return np.array([vals[k] for k in keys], dtype=float)
