"""The sweep file: its schema, ``load_sweep`` / ``sweep_from_doc`` and ``expand_sweep`` (the cartesian product of its axes)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..carbon.grid import (
    ERROR_MODELS,
    ErrorBand,
    ForecastErrorModel,
    IntensitySeries,
    error_band_from_mape,
    load_intensity_csv,
)
from ..carbon.sampling import Triple
from ..devicedb import DeviceDB
from ..errors import ValidationError
from ..model.configs import HwConfigs, platform, tier_of
from ..scenario import Scenario
from ..yamlio import LocatedYaml, StrictModel, load_yaml, validate

SLOTS = ("gpu", "host", "cpu", "dram", "ssd", "hdd")
SLOT_TIER = {"gpu": "hbm", "host": "host", "cpu": "host", "dram": "dram", "ssd": "ssd", "hdd": "hdd"}
CAPACITY_KINDS = ("dram", "ssd", "hdd")

_Strict = StrictModel  # strict numbers, no unknown fields (storagecarbon.yamlio)


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


class DeviceCountAxis(_Strict):
    device: str = Field(min_length=1, description="device_db key or exact alias")
    count: list[int] = Field(min_length=1)

    @field_validator("count", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("count")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(c < 1 or c > 100_000 for c in v):
            raise ValueError("counts must be between 1 and 100000")
        return v


class WeightsAxis(_Strict):
    hbm: float = Field(default=1.0, ge=0, le=1)
    dram: float = Field(default=0.0, ge=0, le=1)
    ssd: float = Field(default=0.0, ge=0, le=1)
    hdd: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_one(self) -> "WeightsAxis":
        s = self.hbm + self.dram + self.ssd + self.hdd
        if abs(s - 1.0) > 1e-6:
            raise ValueError(f"weight fractions must sum to 1 (they sum to {s:g})")
        return self


class KvAxis(_Strict):
    cpu_gb: list[float] = Field(default_factory=lambda: [-1.0], description="LMCache CPU (DRAM) tier sizes; 0 = off")
    disk_gb: list[float] = Field(default_factory=lambda: [-1.0], description="LMCache disk tier sizes; 0 = off")

    @field_validator("cpu_gb", "disk_gb", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("cpu_gb", "disk_gb")
    @classmethod
    def _nonneg(cls, v: list[float]) -> list[float]:
        if any(x < 0 and x != -1.0 for x in v):
            raise ValueError("sizes must be >= 0 (0 turns the tier off)")
        return v


class LifetimeVariant(_Strict):
    name: str = Field(min_length=1)
    years: dict[str, float] = Field(default_factory=dict, description="slot (gpu, host, dram, ssd, hdd) or device key -> years")

    @field_validator("years")
    @classmethod
    def _pos(cls, v: dict[str, float]) -> dict[str, float]:
        for k, y in v.items():
            if not y > 0:
                raise ValueError(f"years.{k} must be > 0")
        return v


class ErrorBandSpec(_Strict):
    max_horizon_h: float = Field(gt=0)
    mape_pct: float | None = Field(default=None, ge=0, le=500)
    ape_p50_pct: float | None = Field(default=None, ge=0)
    ape_p90_pct: float | None = Field(default=None, ge=0)
    ape_p95_pct: float | None = Field(default=None, ge=0)
    ape_p99_pct: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_form(self) -> "ErrorBandSpec":
        qs = [self.ape_p50_pct, self.ape_p90_pct, self.ape_p95_pct, self.ape_p99_pct]
        if self.mape_pct is None and any(q is None for q in qs):
            raise ValueError("give mape_pct, or all of ape_p50_pct, ape_p90_pct, ape_p95_pct, ape_p99_pct")
        if self.mape_pct is None and qs != sorted(qs):  # type: ignore[type-var]
            raise ValueError("APE quantiles must be increasing")
        return self


class SeriesSpec(_Strict):
    name: str = Field(min_length=1)
    file: str = Field(min_length=1, description="CSV with timestamp,gco2e_per_kwh (relative to the sweep file)")
    lead_hours: float = Field(default=0.0, ge=0, description="hours between forecast issue and the first row")
    error: str | list[ErrorBandSpec] = Field(default="carboncast-ciso")
    error_source: str | None = None
    source: str = "given in the sweep"

    @field_validator("error")
    @classmethod
    def _known(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ERROR_MODELS:
            raise ValueError(f"unknown error model {v!r} (allowed: {', '.join(ERROR_MODELS)} or a list of bands)")
        return v


class PowerRange(_Strict):
    low: float | None = Field(default=None, ge=0)
    best: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "PowerRange":
        vals = [v for v in (self.low, self.best, self.high) if v is not None]
        if not vals:
            raise ValueError("give at least one of low, best, high")
        if vals != sorted(vals):
            raise ValueError("values must satisfy low <= best <= high")
        return self

    def triple(self, source: str) -> Triple:
        lo, hi = self.low, self.high
        c = self.best if self.best is not None else (
            math.sqrt(lo * hi) if lo and hi else (lo if lo is not None else hi))
        return Triple(lo if lo is not None else c, c, hi if hi is not None else c, source)  # type: ignore[arg-type]


class DeviceOverride(_Strict):
    """A sourced figure the device_db lacks (or a documented proxy), for this sweep only."""

    bf16_tflops: float | None = Field(default=None, gt=0)
    read_gb_per_s: float | None = Field(default=None, gt=0)
    idle_w: PowerRange | None = None
    source: str = Field(min_length=3)


class SweepSlo(_Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)


class Sweep(_Strict):
    name: str | None = None
    description: str = ""
    gpus: list[DeviceCountAxis] = Field(min_length=1)
    weights: list[WeightsAxis] | None = None
    dram: list[DeviceCountAxis | None] | None = None
    ssd: list[DeviceCountAxis | None] | None = None
    hdd: list[DeviceCountAxis | None] | None = None
    kv: KvAxis = KvAxis()
    gpu_memory_utilization: list[float] | None = None
    max_num_seqs: list[int] | None = None
    lifetimes: list[LifetimeVariant] = Field(default_factory=lambda: [LifetimeVariant(name="device_db lifetimes")])
    regions: list[str] = Field(default_factory=list)
    intensity_series: list[SeriesSpec] = Field(default_factory=list)
    device_overrides: dict[str, DeviceOverride] = Field(default_factory=dict)
    slo: SweepSlo | None = None
    draws: int = Field(default=1000, ge=10, le=100_000)
    seed: int = 0
    robust_quantile: float = Field(default=0.95, gt=0.5, lt=1.0)

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _util(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not (0 < x <= 1) for x in v):
            raise ValueError("each utilisation must be in (0, 1]")
        return v

    @field_validator("max_num_seqs")
    @classmethod
    def _seqs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(x < 1 for x in v):
            raise ValueError("max_num_seqs must be >= 1")
        return v


@dataclass
class LoadedSweep:
    sweep: Sweep
    file: str
    series: list[IntensitySeries]


def load_sweep(path: str | Path, db: DeviceDB) -> LoadedSweep:
    """Read and validate a sweep YAML; errors read ``FILE:LINE: field: problem``."""
    doc = load_yaml(path)
    return sweep_from_doc(doc, db, base_dir=Path(path).parent)


def check_sweep_size(sw: Sweep, doc: LocatedYaml) -> None:
    """Refuse a sweep whose product of axes is too large, before anything is expanded."""
    from .. import limits

    def tier(axis: list[DeviceCountAxis | None] | None) -> int:
        return 1 if axis is None else max(1, sum(len(a.count) if a is not None else 1 for a in axis))

    configs = (sum(len(a.count) for a in sw.gpus) * len(sw.weights or [None]) * tier(sw.dram) * tier(sw.ssd)
               * tier(sw.hdd) * len(sw.kv.cpu_gb) * len(sw.kv.disk_gb) * len(sw.gpu_memory_utilization or [None])
               * len(sw.max_num_seqs or [None]))
    cells = configs * max(1, len(sw.lifetimes)) * max(1, len(sw.regions) + len(sw.intensity_series))
    for what, n, bound in (("hardware configurations (the product of the axes)", configs, limits.SWEEP_CONFIGS),
                           ("configurations x lifetimes x grids", cells, limits.SWEEP_CELLS),
                           ("configurations x lifetimes x grids x draws", cells * sw.draws, limits.SWEEP_CELL_DRAWS)):
        problem = limits.check(n, bound)
        if problem:
            raise ValidationError(doc.file, doc.line_of(("gpus",)), "(sweep size)", f"{what}: {problem}")


def sweep_from_doc(doc: LocatedYaml, db: DeviceDB, base_dir: Path | None = None) -> LoadedSweep:
    if not isinstance(doc.data, dict):
        raise ValidationError(doc.file, 1, "(top level)", "a sweep is a mapping (gpus, weights, dram, ssd, kv, regions, ...)")
    sw: Sweep = validate(Sweep, doc)
    check_sweep_size(sw, doc)
    want = {"gpus": "gpu", "dram": "dram", "ssd": "ssd", "hdd": "hdd"}
    for axis, kind in want.items():
        for i, ax in enumerate(getattr(sw, axis) or []):
            if ax is None:
                continue
            dev = db.resolve(ax.device)
            path = (axis, i, "device")
            if dev is None:
                import difflib

                close = difflib.get_close_matches(ax.device, list(db.devices), n=3, cutoff=0.3)
                raise ValidationError(doc.file, doc.line_of(path), f"{axis}[{i}].device",
                                      f"unknown device {ax.device!r} (closest known: {', '.join(close) or 'none'})")
            if dev.kind != kind:
                raise ValidationError(doc.file, doc.line_of(path), f"{axis}[{i}].device", f"{dev.key} is a {dev.kind}, not a {kind}")
    for i, r in enumerate(sw.regions):
        if r not in db.regions:
            raise ValidationError(doc.file, doc.line_of(("regions", i)), f"regions[{i}]",
                                  f"unknown region {r!r} (allowed: {', '.join(sorted(db.regions))})")
    for k in sw.device_overrides:
        if db.resolve(k) is None:
            raise ValidationError(doc.file, doc.line_of(("device_overrides", k)), f"device_overrides.{k}", "unknown device")
    for i, lv in enumerate(sw.lifetimes):
        for k in lv.years:
            if k not in SLOTS and db.resolve(k) is None:
                raise ValidationError(doc.file, doc.line_of(("lifetimes", i, "years", k)), f"lifetimes[{i}].years.{k}",
                                      f"not a slot ({', '.join(SLOTS)}) nor a device key")
    series = []
    for i, s in enumerate(sw.intensity_series):
        f = Path(s.file)
        if not f.is_absolute() and base_dir is not None:
            f = base_dir / f
        if not f.exists():
            raise ValidationError(doc.file, doc.line_of(("intensity_series", i, "file")), f"intensity_series[{i}].file",
                                  f"file {str(f)!r} does not exist")
        vals = load_intensity_csv(f)
        if isinstance(s.error, str):
            em = ERROR_MODELS[s.error]
        else:
            bands_ = []
            for b in s.error:
                if b.mape_pct is not None:
                    bands_.append(error_band_from_mape(b.max_horizon_h, b.mape_pct))
                else:
                    bands_.append(ErrorBand(b.max_horizon_h, (b.ape_p50_pct, b.ape_p90_pct, b.ape_p95_pct, b.ape_p99_pct)))  # type: ignore[arg-type]
            em = ForecastErrorModel(f"{s.name}-bands", tuple(sorted(bands_, key=lambda b: b.max_horizon_h)),
                                    s.error_source or "given in the sweep")
        series.append(IntensitySeries(s.name, vals, em, s.lead_hours, s.source))
    return LoadedSweep(sw, doc.file, series)


# =========================================================================== hardware configurations
def expand_sweep(base: Scenario, sw: Sweep, db: DeviceDB) -> HwConfigs:
    """The cartesian product of the sweep's perf-relevant axes (axes absent from the sweep keep the base)."""
    gpus = [(db.get(a.device).key, c) for a in sw.gpus for c in a.count]
    pl = base.placement
    weights = [(w.hbm, w.dram, w.ssd, w.hdd) for w in sw.weights] if sw.weights else \
        [(pl.weights.hbm, pl.weights.dram, pl.weights.ssd, pl.weights.hdd)]

    def tier_opts(axis: list[DeviceCountAxis | None] | None, tier: str) -> list[tuple[str | None, int]]:
        if axis is None:
            t = tier_of(base, tier)
            return [(db.get(t[0]).key, t[1])] if t else [(None, 0)]
        out: list[tuple[str | None, int]] = []
        for a in axis:
            if a is None:
                out.append((None, 0))
            else:
                out.extend((db.get(a.device).key, c) for c in a.count)
        return out

    drams, ssds, hdds = tier_opts(sw.dram, "dram"), tier_opts(sw.ssd, "ssd"), tier_opts(sw.hdd, "hdd")
    base_cpu = pl.kv.local_cpu.size_gb if pl.kv.local_cpu and pl.kv.local_cpu.enabled else 0.0
    base_disk = pl.kv.local_disk.size_gb if pl.kv.local_disk and pl.kv.local_disk.enabled else 0.0
    cpus = [base_cpu if x == -1.0 else x for x in sw.kv.cpu_gb]
    disks = [base_disk if x == -1.0 else x for x in sw.kv.disk_gb]
    utils = sw.gpu_memory_utilization or [pl.gpu_memory_utilization]
    seqs = sw.max_num_seqs or [base.engine.max_num_seqs]
    combos = list(itertools.product(gpus, weights, drams, ssds, hdds, cpus, disks, utils, seqs))
    H = len(combos)
    cfg = HwConfigs(
        gpu=[c[0][0] for c in combos], n_gpu=np.array([c[0][1] for c in combos], dtype=np.float64),
        w_frac=np.array([c[1] for c in combos], dtype=np.float64).reshape(H, 4),
        dram=[c[2][0] for c in combos], n_dram=np.array([c[2][1] for c in combos], dtype=np.float64),
        ssd=[c[3][0] for c in combos], n_ssd=np.array([c[3][1] for c in combos], dtype=np.float64),
        hdd=[c[4][0] for c in combos], n_hdd=np.array([c[4][1] for c in combos], dtype=np.float64),
        cpu_gb=np.array([c[5] for c in combos], dtype=np.float64), disk_gb=np.array([c[6] for c in combos], dtype=np.float64),
        util=np.array([c[7] for c in combos], dtype=np.float64), max_seqs=np.array([c[8] for c in combos], dtype=np.float64),
        **platform(base, db))
    return cfg
