"""Capacity planning: ``compare`` options with paired Monte Carlo draws, ``plan`` over a sweep.

Both stages use the carbon package (:mod:`storagecarbon.carbon`), as ``profile`` does:

* the **keyed sampler** (:class:`~storagecarbon.carbon.sampling.KeyedSampler`; :class:`World` binds it
  to a device_db) holds, for every draw index, one value of every uncertain input: per device model
  (device_db key) its embodied total, lifetime, power and rated endurance; the grid intensity (one
  uniform per draw shared by every region and hourly series) and the PUE. Streams are keyed by name,
  so two options that both use an H100 see the same H100 draws: comparisons are paired draw by draw,
  and ``compare`` gives exactly ``profile``'s numbers for the same scenario, seed and draws;
* ``compare`` attributes each option with :func:`~storagecarbon.carbon.attribute.attribute_uses`;
  ``plan`` calls the same kernel functions (:mod:`storagecarbon.carbon.kernel`) over arrays of
  configurations.

``plan`` does not run the iteration-level simulation (:mod:`storagecarbon.model.simulate`, about a
second per configuration); it evaluates the steady state of :mod:`storagecarbon.model.steady_state`
over every configuration at once, on the same per-step physics (:mod:`storagecarbon.model.physics`),
documented in docs/planning.md with its measured agreement with ``run_model`` + ``attribute``.

Everything here is a pure function of its arguments except the ``load_*`` helpers at the edge
(they read files or run the modeled profile of a scenario).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from .carbon import kernel as ck
from .carbon.attribute import Allocation, Attribution, CarbonInputs, Scope, attribute_uses, carbon_inputs_for
from .carbon.grid import (CARBONCAST_CISO, ERROR_MODELS, HALF_NORMAL_Z, NO_ERROR, QUANTILES, ErrorBand,  # noqa: F401
                          ForecastErrorModel, IntensitySeries, error_model_from_mape, grid_for_region, grid_spec_for,
                          load_intensity_csv, pue_triple)
from .carbon.sampling import (J_PER_KWH, SECONDS_PER_YEAR, DeviceDraws, GridSpec, KeyedSampler, Triple,  # noqa: F401
                              band, logtri_ppf, stream)
from .carbon.usage import DeviceUse, uses_from_usage
from .devicedb import DeviceDB
from .errors import StoragecarbonError, ValidationError
from .model.configs import HwConfigs, configs_from_scenarios, platform, tier_of  # noqa: F401  (configs_from_scenarios: re-exported)
from .model.constants import ModelConstants, constants_for
from .model.steady_state import PerfResult, analytic_model
from .model.workload import WorkloadStats, workload_stats  # noqa: F401  (re-exported)
from .scenario import Scenario
from .yamlio import LocatedYaml, StrictModel, load_yaml, validate

PLAN_VERSION = 1
COMPARE_VERSION = 1
SLOTS = ("gpu", "host", "cpu", "dram", "ssd", "hdd")
SLOT_TIER = {"gpu": "hbm", "host": "host", "cpu": "host", "dram": "dram", "ssd": "ssd", "hdd": "hdd"}
CAPACITY_KINDS = ("dram", "ssd", "hdd")


# =========================================================================== carbon (one kernel, one sampler)
# The sampler, grid, kernel and attribute() live in storagecarbon.carbon; compare and plan call them.
# Names kept here for callers of the planner module.
KeyDraws = DeviceDraws
_stream = stream


def bands(x: np.ndarray, axis: int = -1) -> dict[str, float]:
    return band(x)


class World(KeyedSampler):
    """The keyed sampler bound to a device_db: figures by device_db key, grid and PUE by draw index."""

    def __init__(self, db: DeviceDB, draws: int, seed: int = 0) -> None:
        if draws < 1:
            raise StoragecarbonError("draws must be >= 1")
        super().__init__(draws, seed)
        self.db = db

    def key(self, key: str) -> DeviceDraws:
        return self.device(self.db.get(key))

    def ratio(self, key: str, life_years: float | None) -> np.ndarray:
        """Embodied g per unit-second held: TE / lifetime (per draw); 0 where TE is missing (flagged by callers)."""
        kd = self.key(key)
        if kd.te_g is None:
            return np.zeros(self.draws)
        life = kd.life_s if life_years is None else life_years * SECONDS_PER_YEAR
        return ck.time_share_g(1.0, kd.te_g, life)


# =========================================================================== compare
@dataclass
class Option:
    """One option to compare: its usage per device (as profile reads it) and its carbon settings."""

    name: str
    source: str
    report: dict[str, Any]
    uses: list[DeviceUse]
    grid: GridSpec
    pue: Triple
    allocation: Allocation
    requests: int
    generated_tokens: int
    mode: str
    slo: dict[str, Any] = field(default_factory=dict)
    phases: list[str] | None = None
    scope: Scope = "dedicated"
    lifetime_overrides: dict[str, float] = field(default_factory=dict)
    db: DeviceDB | None = None          # the device_db with the option's device_overrides
    scenario: dict[str, Any] | None = None
    prompt_tokens: int = 0
    usage: Any = None

    def inputs(self, draws: int, seed: int) -> CarbonInputs:
        return CarbonInputs(self.grid, self.pue, self.allocation, dict(self.lifetime_overrides), draws, seed,
                            scope=self.scope)


def option_names(paths: Sequence[str | Path]) -> list[str | None]:
    """Names for compare's options: ``None`` (the default: scenario name, report folder, trace's
    folder) unless two inputs would share one; then trace files are named by their stem (and by
    folder/stem if stems collide too), so two traces in one folder stay two options."""
    def default(p: Path) -> str:
        return p.stem if p.suffix in (".yaml", ".yml") else (p.name if p.is_dir() else (p.parent.name or p.stem))

    ps = [Path(x) for x in paths]
    base = [default(p) for p in ps]
    out: list[str | None] = [None] * len(ps)
    for i, p in enumerate(ps):
        if base.count(base[i]) > 1 and p.is_file() and p.suffix not in (".yaml", ".yml"):
            stems = [q.stem for q in ps]
            out[i] = p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}"
    return out


def load_option(path: str | Path, db: DeviceDB, *, out_root: Path, region: str | None = None,
                progress: Callable[[str], None] = lambda s: None, name: str | None = None) -> Option:
    """A scenario (modeled profile), a report directory or a trace file -> :class:`Option` (IO edge).
    ``name``: the option's name for a trace or report folder (default: its folder's name)."""
    from .pipeline import attribute_trace, default_report_dir, profile
    from .scenario import Carbon, load_scenario

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        scn = load_scenario(p, db)
        name = scn.name or p.stem
        progress(f"modeling {name}")
        res = profile(p, db=db, out_dir=default_report_dir(out_root, name, progress), mode="modeled", region=region)
        report, attr, carbon, odb = res.report, res.attribution, scn.carbon, res.db or db
        base_dir = p.parent
    else:
        trace = p / "trace.arrows" if p.is_dir() else p
        if not trace.exists():
            raise StoragecarbonError(f"{p}: not a scenario (.yaml), a report directory with trace.arrows, or a trace file")
        name = name or (p.name if p.is_dir() else (p.parent.name or p.stem))
        progress(f"reading {trace}")
        res2 = attribute_trace(trace, db, None, scenario=name, region=region)
        report, attr, odb = res2.report, res2.attribution, res2.db or db
        assert attr.usage is not None  # an attribution of a trace keeps the trace's usage
        echo = (attr.usage.header.scenario or {}).get("carbon")
        try:
            carbon = Carbon.model_validate(echo or {"region": region or "world"})
        except Exception:
            carbon = Carbon(region=region or "world")
        base_dir = trace.parent
    usage = attr.usage
    assert usage is not None  # both branches attribute a trace: its usage is kept
    inputs = carbon_inputs_for(carbon, odb, region=region, base_dir=base_dir)
    slo = (usage.header.scenario or {}).get("slo") or {}
    return Option(name=name, source=str(p), report=report, uses=uses_from_usage(usage, odb), grid=inputs.grid,
                  pue=inputs.pue, allocation=inputs.allocation, requests=int(report.get("requests") or 0),
                  generated_tokens=int((report.get("tokens") or {}).get("generated") or 0),
                  mode=str(report.get("mode", "?")), slo=slo, phases=list(usage.phases), scope=inputs.scope,
                  lifetime_overrides=dict(inputs.lifetime_overrides_years), db=odb, scenario=usage.header.scenario,
                  prompt_tokens=int((report.get("tokens") or {}).get("prompt") or 0), usage=usage)


def _grid_of_carbon(carbon: Any, db: DeviceDB, region: str | None, base_dir: Path | None) -> GridSpec:
    return grid_spec_for(carbon, db, region, base_dir)


def option_attribution(opt: Option, db: DeviceDB, sampler: KeyedSampler) -> Attribution:
    """attribute() of one option on the shared sampler (the same cells profile computes)."""
    phases = opt.phases or [f"run{i}" for i in range(len(opt.uses[0].phase_time_s))] if opt.uses else []
    a = attribute_uses(opt.uses, phases, opt.db or db, opt.inputs(sampler.draws, sampler.seed), sampler=sampler,
                       scenario=opt.scenario or {}, workload={"requests": opt.requests,
                                                              "prompt_tokens": opt.prompt_tokens,
                                                              "generated_tokens": opt.generated_tokens})
    a.usage = opt.usage
    return a


def option_draws(opt: Option, world: KeyedSampler, db: DeviceDB | None = None) -> dict[str, Any]:
    """Per-draw carbon of one option: totals, per tier, per 1k tokens and per request."""
    a = option_attribution(opt, db or opt.db or world.db, world)
    emb = np.nansum(a.embodied_g, axis=1)   # [device, draw]
    op = np.nansum(a.operational_g, axis=1)
    tiers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, u in enumerate(opt.uses):
        e0, o0 = tiers.get(u.tier, (np.zeros(world.draws), np.zeros(world.draws)))
        tiers[u.tier] = (e0 + emb[i], o0 + op[i])
    total = a.total_g
    return {"emb": np.nansum(a.embodied_g, axis=(0, 1)), "op": np.nansum(a.operational_g, axis=(0, 1)), "total": total,
            "tiers": tiers, "per_1k": total / opt.generated_tokens * 1000 if opt.generated_tokens else None,
            "per_req": total / opt.requests if opt.requests else None, "warnings": a.warnings, "ci": a.ci,
            "pue": a.pue, "attribution": a}


TIER_ORDER = ["hbm", "host", "dram", "ssd", "hdd", "remote"]


def compare(options: Sequence[Option], db: DeviceDB, *, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Side-by-side carbon of options with paired Monte Carlo draws (pure given the options).

    Every option is attributed by attribute() on one keyed sampler: draw ``d`` holds the same
    grid-intensity quantile, PUE and device-model figures for all of them (and for ``profile``
    with the same seed and draws), so ``P(A < B)`` is the share of draws in which A's gCO2e per
    1k generated tokens is below B's.
    """
    from .report.build import build_report

    if len(options) < 2:
        raise StoragecarbonError("compare needs at least two options")
    world = World(db, draws, seed)
    res = [option_draws(o, world, o.db or db) for o in options]
    tiers_seen = {t for r in res for t in r["tiers"]}
    tier_list = [t for t in TIER_ORDER if t in tiers_seen] + sorted(tiers_seen - set(TIER_ORDER))
    out_opts = []
    for o, r in zip(options, res):
        rep = build_report(r["attribution"], scenario=o.name, slo=o.slo)
        lat = o.report.get("latency") or {}
        by_tier = {t["tier"]: t for t in rep["tiers"]}
        rows = []
        for t in tier_list:
            if t not in by_tier:
                rows.append({"tier": t, "present": False})
                continue
            e, op = r["tiers"][t]
            tr = by_tier[t]
            rows.append({"tier": t, "present": True, "devices": tr["devices"], "embodied_gco2e": tr["embodied_gco2e"],
                         "operational_gco2e": tr["operational_gco2e"], "total_gco2e": tr["total_gco2e"],
                         "energy_kwh": tr["energy_kwh"], "energy_basis": tr["energy_basis"],
                         "per_1k_tokens_gco2e": band((e + op) / o.generated_tokens * 1000) if o.generated_tokens else None})
        out_opts.append({
            "name": o.name, "source": o.source, "mode": o.mode.upper(),
            "mode_reason": o.report.get("mode_reason"),
            "requests": o.requests, "generated_tokens": o.generated_tokens,
            "duration_s": o.report.get("duration_s"),
            "scope": o.scope,
            "grid": {"label": o.grid.label, "source": o.grid.source, "gco2e_per_kwh": band(r["ci"])},
            "pue": {"best": o.pue.best, "source": o.pue.source}, "allocation": o.allocation,
            "totals": rep["totals"], "headline": rep["headline"],
            "per_1k_tokens_gco2e": rep["per_1k_tokens_gco2e"], "per_request_gco2e": rep["per_request_gco2e"],
            "embodied_share": float(np.median(r["emb"] / np.maximum(r["total"], 1e-300))),
            "tiers": rows, "devices": rep["devices"], "ledger": rep["ledger"], "wear": rep["wear"],
            "missing": rep["missing"], "excludes": rep["excludes"], "coverage": rep["coverage"],
            "device_overrides": rep["device_overrides"],
            "latency": {"ttft_ms": lat.get("ttft_ms"), "tpot_ms": lat.get("tpot_ms"), "slo": lat.get("slo") or {}},
            "slo_met": _slo_met(lat.get("slo") or {}),
            "warnings": sorted(set(r["warnings"])),
        })
    pairs = []
    metric = [r["per_1k"] if r["per_1k"] is not None else r["total"] for r in res]
    for i, j in itertools.combinations(range(len(options)), 2):
        d = metric[i] - metric[j]
        tie = 0.5 * float(np.mean(d == 0))
        pairs.append({"a": options[i].name, "b": options[j].name, "p_a_less": float(np.mean(d < 0)) + tie,
                      "p_b_less": float(np.mean(d > 0)) + tie,
                      "diff_per_1k_gco2e": bands(d),
                      "rel_diff": bands(d / np.maximum(np.abs(metric[j]), 1e-300)),
                      "diff_total_gco2e": bands(res[i]["total"] - res[j]["total"])})
    stack = np.vstack(metric)
    best = np.argmin(stack, axis=0)
    p_best = {o.name: float(np.mean(best == k)) for k, o in enumerate(options)}
    base = 0
    diffs = []
    for k, o in enumerate(options):
        if k == base:
            continue
        d = metric[k] - metric[base]
        diffs.append({"option": o.name, "baseline": options[base].name, "diff_per_1k_gco2e": bands(d),
                      "rel_diff": bands(d / np.maximum(np.abs(metric[base]), 1e-300))})
    p50 = np.median(stack, axis=1)
    p95 = np.percentile(stack, 95, axis=1)
    # candidates: options that meet their SLO (or have none); the others are out, with the reason
    excluded = []
    for o in out_opts:
        why = _slo_misses(o["latency"]["slo"])
        if why:
            excluded.append({"name": o["name"], "reason": "; ".join(why)})
    out_names = {e["name"] for e in excluded}
    cand = [k for k, o in enumerate(options) if o.name not in out_names]
    cand_best = np.argmin(stack[cand], axis=0) if cand else np.zeros(0, int)
    candidates = {
        "names": [options[k].name for k in cand],
        "excluded": excluded,
        "rule": "an option is a candidate when it meets every latency SLO it states (p90 at or under the target)",
        "ranking": {"by_p50": [options[k].name for k in sorted(cand, key=lambda k: p50[k])],
                    "by_p95": [options[k].name for k in sorted(cand, key=lambda k: p95[k])]},
        "p_lowest": {options[k].name: float(np.mean(cand_best == j)) for j, k in enumerate(cand)},
    }
    return {
        "compare_version": COMPARE_VERSION,
        "metric": "gCO2e per 1k generated tokens" if all(r["per_1k"] is not None for r in res) else "gCO2e per run",
        "draws": draws, "seed": seed,
        "pairing": ("one keyed sampler for every option (and for profile): draw d shares the grid-intensity quantile, "
                    "the PUE and the figures of each device model (device_db key) across options; P(A<B) counts draws "
                    "with A below B"),
        "tiers": tier_list,
        "options": out_opts,
        "pairs": pairs,
        "p_lowest": p_best,
        "differences_vs_baseline": diffs,
        "ranking": {"by_p50": [options[k].name for k in np.argsort(p50)],
                    "by_p95": [options[k].name for k in np.argsort(p95)]},
        "candidates": candidates,
        "sources": _sources_of(options, world),
    }


def _slo_misses(slo: dict[str, Any]) -> list[str]:
    """Why an option is out of the candidates: each SLO it misses, or cannot show it meets."""
    from .report.units import millis

    out = []
    for key, v in (slo or {}).items():
        if not isinstance(v, dict):
            continue
        name = key.replace("_ms", "").upper()
        if v.get("p90") is None:
            out.append(f"{name} p90 missing (SLO {millis(v.get('target'))})")
        elif v.get("met") is False:
            out.append(f"{name} p90 {millis(v['p90'])} > SLO {millis(v.get('target'))}")
    return out


def _slo_met(slo: dict[str, Any]) -> bool | None:
    vals = [v.get("met") for v in slo.values() if isinstance(v, dict)]
    if not vals or any(v is None for v in vals):
        return None
    return bool(all(vals))


def _sources_of(options: Sequence[Option], world: World) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in options:
        for u in o.uses:
            if u.key and u.key not in out:
                rec = (o.db or world.db).resolve(u.key)
                if rec is not None:
                    out[u.key] = {"embodied": rec.embodied_kgco2e.source if rec.embodied_kgco2e else None,
                                  "lifetime": rec.lifetime_years.source,
                                  "power": "; ".join(f.source for f in (rec.idle_w, rec.active_w) if f is not None) or None}
        out[f"grid:{o.grid.label}"] = o.grid.source
        out[f"pue:{o.pue.best:g}"] = o.pue.source
    return out


# =========================================================================== sweep schema
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
    read_gbps: float | None = Field(default=None, gt=0)
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
    from . import limits

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
                    sigma = b.mape_pct * math.sqrt(math.pi / 2)
                    bands_.append(ErrorBand(b.max_horizon_h, tuple(sigma * z for z in HALF_NORMAL_Z)))  # type: ignore[arg-type]
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


# =========================================================================== vectorised carbon
@dataclass
class _KeyTable:
    keys: list[str]
    idle: np.ndarray     # [K, D]
    dyn: np.ndarray
    wear: np.ndarray     # TE / TBW, g per byte (0 when none)
    avg: np.ndarray      # average power per unit held (capacity devices with one figure), W
    missing_emb: np.ndarray
    missing_power: np.ndarray


def _key_table(world: World, keys: Sequence[str]) -> _KeyTable:
    uniq = list(dict.fromkeys(keys))
    D = world.draws
    K = len(uniq) + 1  # last row: absent device (zeros)
    idle = np.zeros((K, D))
    dyn = np.zeros((K, D))
    wear = np.zeros((K, D))
    avg = np.zeros((K, D))
    me = np.zeros(K, dtype=bool)
    mp = np.zeros(K, dtype=bool)
    for i, key in enumerate(uniq):
        kd = world.key(key)
        if kd.idle_w is not None:
            idle[i] = kd.idle_w
        if kd.dyn_w is not None:
            dyn[i] = kd.dyn_w
        if kd.avg_w is not None:
            avg[i] = kd.avg_w
        if kd.te_g is not None and kd.tbw_b is not None:
            wear[i] = ck.wear_g(1.0, kd.te_g, kd.tbw_b)
        me[i] = kd.te_g is None
        mp[i] = kd.no_power
    return _KeyTable(uniq, idle, dyn, wear, avg, me, mp)


def _life_for(slot: str, key: str | None, variant: LifetimeVariant) -> float | None:
    if key is not None and key in variant.years:
        return variant.years[key]
    return variant.years.get(slot)


def plan_carbon(perf: PerfResult, cfg: HwConfigs, world: World, grids: Sequence[GridSpec], pue: Triple,
                lifetimes: Sequence[LifetimeVariant], allocation: str, *, chunk: int = 512, scope: str = "dedicated",
                quantiles: Sequence[float] = (5, 50, 95), robust_q: float = 95.0,
                candidate: np.ndarray | None = None, draws_of: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
    """Per-draw carbon of every (hardware, lifetime, grid) configuration, reduced to percentiles.

    Returns arrays shaped [H, L, G] of per-1k-token percentiles, embodied/operational medians and
    the share of draws in which each configuration is the lowest among ``candidate`` ones. With
    ``draws_of`` (a dict, for a few configurations only) it also keeps each feasible configuration's
    per-draw gCO2e per 1k tokens, [L, G, D], under its index.
    """
    H, Lv, G, Dr = len(cfg), len(lifetimes), len(grids), world.draws
    slot_keys = {"gpu": cfg.gpu, "host": [cfg.host] * H, "cpu": [cfg.cpu] * H, "dram": cfg.dram, "ssd": cfg.ssd,
                 "hdd": cfg.hdd}
    all_keys = [k for s in SLOTS for k in slot_keys[s] if k is not None]
    tab = _key_table(world, all_keys)
    kidx = {k: i for i, k in enumerate(tab.keys)}
    absent = len(tab.keys)
    counts = {"gpu": cfg.n_gpu, "host": np.full(H, float(cfg.n_host)), "cpu": np.full(H, float(cfg.n_cpu)),
              "dram": cfg.n_dram, "ssd": cfg.n_ssd, "hdd": cfg.n_hdd}
    shares = {"host": cfg.host_share, "cpu": cfg.cpu_share}
    idx = {s: np.array([kidx[k] if k is not None else absent for k in slot_keys[s]]) for s in SLOTS}
    # ratio table per (key, lifetime variant, slot)
    ratio_rows: list[np.ndarray] = []
    ratio_of: dict[tuple[str, float | None], int] = {}

    def ratio_index(slot: str, key: str | None, lv: LifetimeVariant) -> int:
        if key is None:
            return -1
        life = _life_for(slot, key, lv)
        rk = (key, life)
        if rk not in ratio_of:
            ratio_of[rk] = len(ratio_rows)
            ratio_rows.append(world.ratio(key, life))
        return ratio_of[rk]

    ridx = {s: np.array([[ratio_index(s, slot_keys[s][h], lv) for lv in lifetimes] for h in range(H)]) for s in SLOTS}
    ratio_rows.append(np.zeros(Dr))
    R = np.vstack(ratio_rows)
    for s in SLOTS:
        ridx[s][ridx[s] < 0] = len(ratio_rows) - 1
    ci = np.vstack([world.grid(g) for g in grids])        # [G, D]
    pue_d = world.pue(pue)
    gen = perf.generated_tokens
    D_s = np.nan_to_num(perf.duration_s)
    nq = len(quantiles)
    out_q = np.full((H, Lv, G, nq), np.nan)
    out_rq = np.full((H, Lv, G), np.nan)
    emb_q = np.full((H, Lv, 3), np.nan)
    op_q = np.full((H, G, 3), np.nan)
    best_val = np.full((Lv, G, Dr), np.inf)
    best_idx = np.full((Lv, G, Dr), -1, dtype=np.int64)
    cand = perf.feasible if candidate is None else candidate & perf.feasible
    feas_idx = np.flatnonzero(perf.feasible)
    chunk = max(8, min(chunk, int(8e6 // max(Lv * G * Dr, 1))))  # bounds memory: ~8e6 cells per array
    for a in range(0, len(feas_idx), chunk):
        hs = feas_idx[a:a + chunk]
        opj = np.zeros((len(hs), Dr))
        emb = np.zeros((len(hs), Lv, Dr))
        for s in SLOTS:
            ki = idx[s][hs]
            cnt = counts[s][hs]
            units = perf.units_s[s][hs]
            sh = shares.get(s, 1.0)
            kind = "gpu" if s == "gpu" else ("host" if s in ("host", "cpu") else s)
            held = ck.held_units_s(kind, scope, cnt, sh, D_s[hs], units)[:, None]   # [h, 1]
            opj += ck.idle_energy_j(tab.idle[ki], held) + ck.dynamic_energy_j(tab.dyn[ki], perf.busy[s][hs][:, None], sh) \
                + ck.average_energy_j(tab.avg[ki], held)
            time = held[:, :, None] * R[ridx[s][hs]]              # [h, L, D]
            if s in ("ssd", "hdd") and allocation in ("wear", "max"):
                wear = ck.wear_g(perf.flash_written_b[s][hs][:, None], tab.wear[ki], 1.0)[:, None, :]
                if allocation == "wear":
                    # as attribute(): rated flash by wear, other devices by time share
                    rated = np.broadcast_to((np.asarray(tab.wear[ki]) > 0).reshape(len(ki), -1).any(axis=1)[:, None, None],
                                            time.shape)
                    emb += np.where(rated, np.broadcast_to(wear, time.shape), time)
                else:
                    emb += ck.allocate(time, np.broadcast_to(wear, time.shape), "max", True)[0]
            else:
                emb += time
        op = ck.operational_g(opj[:, None, :], ci[None, :, :], pue_d[None, None, :])  # [h, G, D]
        tot = (emb[:, :, None, :] + op[:, None, :, :]) * (1000.0 / gen)  # [h, L, G, D] per 1k tokens
        pc = np.percentile(tot, [*quantiles, robust_q], axis=-1)      # one partition for every quantile
        if draws_of is not None:
            draws_of.update({int(h): tot[k] for k, h in enumerate(hs)})
        out_q[hs] = np.moveaxis(pc[:nq], 0, -1)
        out_rq[hs] = pc[nq]
        emb_q[hs] = np.moveaxis(np.percentile(emb * (1000.0 / gen), [5, 50, 95], axis=-1), 0, -1)
        op_q[hs] = np.moveaxis(np.percentile(op * (1000.0 / gen), [5, 50, 95], axis=-1), 0, -1)
        cm = cand[hs]
        if cm.any():
            sub = tot[cm]                                            # [h', L, G, D]
            am = np.argmin(sub, axis=0)
            mv = np.take_along_axis(sub, am[None], axis=0)[0]
            better = mv < best_val
            best_val = np.where(better, mv, best_val)
            best_idx = np.where(better, hs[cm][am], best_idx)
    p_best = np.zeros((H, Lv, G))
    for li in range(Lv):
        for gi in range(G):
            bi = best_idx[li, gi]
            ok = bi >= 0
            if ok.any():
                cnt = np.bincount(bi[ok], minlength=H)
                p_best[:, li, gi] = cnt / Dr
    return {"q": out_q, "robust": out_rq, "emb": emb_q, "op": op_q, "p_best": p_best,
            "missing_emb": {k: bool(tab.missing_emb[i]) for i, k in enumerate(tab.keys)},
            "missing_power": {k: bool(tab.missing_power[i]) for i, k in enumerate(tab.keys)},
            "grid_p50": [float(np.median(c)) for c in ci]}


def carbon_db(db: DeviceDB, sw: "Sweep") -> DeviceDB:
    """The device_db with a sweep's carbon-relevant overrides (idle power) as device_overrides."""
    from .devicedb import DeviceOverride as DbOverride, FigureOverride

    ov = {k: DbOverride(source=v.source, idle_w=FigureOverride(low=v.idle_w.low, best=v.idle_w.best, high=v.idle_w.high))
          for k, v in sw.device_overrides.items() if v.idle_w is not None}
    return db.with_overrides(ov)


# =========================================================================== pareto
def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (x, y), both minimised, sorted by x."""
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(ok) == 0:
        return ok
    order = ok[np.lexsort((y[ok], x[ok]))]
    front = []
    best = np.inf
    for i in order:
        if y[i] < best - 1e-9 * abs(best if np.isfinite(best) else 0.0):
            front.append(i)
            best = y[i]
    return np.asarray(front, dtype=np.int64)


def robust_picks(samples: np.ndarray, eligible: np.ndarray | None = None, q: float = 95.0) -> dict[str, int]:
    """Index of the median pick and of the robust (P``q``) pick among rows of ``samples`` [option, draw]."""
    ok = np.ones(samples.shape[0], bool) if eligible is None else eligible
    idx = np.flatnonzero(ok)
    p50 = np.median(samples[idx], axis=1)
    pq = np.percentile(samples[idx], q, axis=1)
    return {"median": int(idx[np.argmin(p50)]), "robust": int(idx[np.argmin(pq)])}


# =========================================================================== plan
def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def plan(base: Scenario, loaded: LoadedSweep, db: DeviceDB, *, top: int = 10, constants: ModelConstants | None = None,
         progress: Callable[[str], None] = lambda s: None, detail_grid: str | None = None) -> dict[str, Any]:
    """Evaluate a sweep over tier configurations with the analytic model and paired draws."""
    sw = loaded.sweep
    if "gpu" not in base.hardware.tiers():
        raise StoragecarbonError(f"{base.name}: plan needs a base scenario with hardware.gpu")
    progress("expanding the sweep")
    cfg = expand_sweep(base, sw, db)
    progress(f"analytic model over {len(cfg)} hardware configurations")
    k = constants or constants_for(base)
    perf = analytic_model(base, cfg, db, constants=k, overrides=dict(sw.device_overrides))
    grids: list[GridSpec] = [grid_for_region(db, r) for r in sw.regions]
    grids += [GridSpec(f"series:{s.name}", series=s) for s in loaded.series]
    if not grids:
        c = base.carbon
        grids = [_grid_of_carbon(c, db, None, Path(loaded.file).parent)]
    slo = sw.slo or SweepSlo(**base.slo.model_dump())
    slo_ok = perf.feasible.copy()
    if slo.ttft_ms is not None:
        slo_ok &= perf.ttft_p90_ms <= slo.ttft_ms
    if slo.tpot_ms is not None:
        slo_ok &= perf.tpot_p90_ms <= slo.tpot_ms
    world = World(carbon_db(db, sw), sw.draws, sw.seed)
    pue = pue_triple(db, base.carbon.pue)
    lifetimes = list(sw.lifetimes)
    # configurations whose data is incomplete (a device without embodied figure, a GPU without
    # idle or any power figure) are evaluated and shown but never recommended
    why_incomplete: dict[str, str] = {}
    for kk in set(cfg.gpu) | {x for x in cfg.dram + cfg.ssd + cfg.hdd + [cfg.host, cfg.cpu] if x}:
        kd = world.key(kk)
        if kd.te_g is None:
            why_incomplete[kk] = f"{kk}: no embodied figure in device_db"
        elif kk in cfg.gpu and kd.no_power:
            why_incomplete[kk] = f"{kk}: no power figures in device_db"
        elif kk in cfg.gpu and kd.no_idle:
            why_incomplete[kk] = f"{kk}: no idle power in device_db (idle energy would be left out; give device_overrides.idle_w)"
    incomplete_reason = [next((why_incomplete[x] for x in (cfg.gpu[h], cfg.host, cfg.cpu, cfg.dram[h], cfg.ssd[h], cfg.hdd[h])
                               if x and x in why_incomplete), "") for h in range(len(cfg))]
    incomplete = np.array([bool(r) for r in incomplete_reason])
    eligible = slo_ok & ~incomplete
    progress(f"carbon: {len(cfg) * len(lifetimes) * len(grids)} configurations x {sw.draws} draws")
    rq = 100.0 * sw.robust_quantile
    car = plan_carbon(perf, cfg, world, grids, pue, lifetimes, base.carbon.allocation, robust_q=rq, candidate=eligible,
                      scope=base.carbon.scope)
    progress("ranking")
    H, Lv, G = len(cfg), len(lifetimes), len(grids)
    grid_labels = [g.label.split(":", 1)[1] for g in grids]
    order_g = np.argsort(car["grid_p50"])

    def cid(h: int, li: int, gi: int) -> str:
        return f"c{h:05d}-l{li}-g{gi}"

    def row(h: int, li: int, gi: int) -> dict[str, Any]:
        q = car["q"][h, li, gi]
        return {"id": cid(h, li, gi), "label": cfg.label(h), "hardware": cfg.describe(h),
                "lifetime": lifetimes[li].name, "grid": grid_labels[gi],
                "per_1k_tokens_gco2e": {"p5": _finite(q[0]), "p50": _finite(q[1]), "p95": _finite(q[2])},
                "robust_gco2e_per_1k": _finite(car["robust"][h, li, gi]),
                "embodied_per_1k_gco2e": {"p5": _finite(car["emb"][h, li, 0]), "p50": _finite(car["emb"][h, li, 1]),
                                          "p95": _finite(car["emb"][h, li, 2])},
                "operational_per_1k_gco2e": {"p5": _finite(car["op"][h, gi, 0]), "p50": _finite(car["op"][h, gi, 1]),
                                             "p95": _finite(car["op"][h, gi, 2])},
                "p_lowest": float(car["p_best"][h, li, gi]),
                "ttft_p90_ms": _finite(perf.ttft_p90_ms[h]), "tpot_p90_ms": _finite(perf.tpot_p90_ms[h]),
                "saturated": bool(perf.saturated[h]), "decode_batch": float(perf.batch[h]),
                "kv_hit_share": float(perf.kv_hit_share[h]), "duration_s": _finite(perf.duration_s[h]),
                "slo_met": bool(slo_ok[h]), "complete": not bool(incomplete[h]),
                "incomplete_reason": incomplete_reason[h] or None}

    # flatten over (h, l, g)
    P50 = car["q"][..., 1]
    RQ = car["robust"]
    elig3 = np.broadcast_to(eligible[:, None, None], P50.shape)

    size = cfg.n_gpu * 100 + cfg.n_dram + cfg.n_ssd + cfg.n_hdd + cfg.cpu_gb / 1e4 + cfg.disk_gb / 1e6 + cfg.max_seqs / 1e7
    size3 = np.broadcast_to(size[:, None, None], P50.shape)

    def ordered(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Flat indices of eligible cells by value, the leanest hardware first among equal values."""
        vv = np.where(mask & np.isfinite(v), v, np.inf).ravel()
        rounded = np.round(vv, 12)
        idx = np.lexsort((size3.ravel(), rounded))
        return idx[np.isfinite(vv[idx])]

    def argmin3(v: np.ndarray, mask: np.ndarray) -> tuple[int, int, int] | None:
        o = ordered(v, mask)
        if len(o) == 0:
            return None
        return tuple(int(x) for x in np.unravel_index(o[0], v.shape))  # type: ignore[return-value]

    robust = argmin3(RQ, elig3)
    median = argmin3(P50, elig3)
    # top N by the robust quantile
    top_rows: list[dict[str, Any]] = []
    last_key = None
    for i in ordered(RQ, elig3):
        cell = tuple(int(x) for x in np.unravel_index(i, RQ.shape))
        key = (round(float(RQ[cell]), 12), round(float(P50[cell]), 12), cell[1], cell[2])
        if key == last_key and top_rows:
            top_rows[-1]["equivalent_configurations"] += 1  # same draws: a device that carries nothing
            continue
        if len(top_rows) >= top:
            break
        last_key = key
        top_rows.append({**row(*cell), "equivalent_configurations": 0})
    # per grid: best robust choice (other axes free), clean -> dirty
    by_grid = []
    for gi in order_g:
        m3 = np.zeros_like(elig3)
        m3[:, :, gi] = elig3[:, :, gi]
        b = argmin3(RQ, m3)
        bm = argmin3(P50, m3)
        by_grid.append({"grid": grid_labels[gi], "gco2e_per_kwh_p50": car["grid_p50"][gi],
                        "source": grids[gi].source,
                        "robust_pick": row(*b) if b else None, "median_pick": row(*bm) if bm else None})
    changes = []
    prev = None
    for g in by_grid:
        lab = g["robust_pick"]["label"] if g["robust_pick"] else None
        if lab != prev:
            changes.append({"from_grid": g["grid"], "gco2e_per_kwh_p50": g["gco2e_per_kwh_p50"], "choice": lab})
            prev = lab
    # Pareto frontiers per grid (lifetime: the first variant)
    dg = detail_grid if detail_grid in grid_labels else (
        base.carbon.region if base.carbon.region in grid_labels else grid_labels[order_g[len(order_g) // 2]])
    gsel = grid_labels.index(dg)
    fronts = {}
    for gi in range(G):
        lat = perf.tpot_p90_ms
        fe = np.flatnonzero(perf.feasible & ~incomplete)
        f50 = fe[pareto_front(lat[fe], P50[fe, 0, gi])]
        f95 = fe[pareto_front(lat[fe], car["q"][fe, 0, gi, 2])]
        fs = np.flatnonzero(eligible)
        feo = fs[pareto_front(car["emb"][fs, 0, 1], car["op"][fs, gi, 1])] if len(fs) else np.zeros(0, int)
        fronts[grid_labels[gi]] = {
            "latency_vs_p50": [cid(int(h), 0, gi) for h in f50],
            "latency_vs_p95": [cid(int(h), 0, gi) for h in f95],
            "embodied_vs_operational": [cid(int(h), 0, gi) for h in feo],
        }
    # scatter for the detail grid: every feasible hardware configuration, first lifetime variant
    fe = np.flatnonzero(perf.feasible & ~incomplete)
    scatter = {"grid": dg, "lifetime": lifetimes[0].name,
               "id": [cid(int(h), 0, gsel) for h in fe], "label": [cfg.label(int(h)) for h in fe],
               "gpu": [cfg.gpu[int(h)] for h in fe],
               "tpot_p90_ms": [float(perf.tpot_p90_ms[h]) for h in fe],
               "ttft_p90_ms": [float(perf.ttft_p90_ms[h]) for h in fe],
               "p50": [float(P50[h, 0, gsel]) for h in fe], "p95": [float(car["q"][h, 0, gsel, 2]) for h in fe],
               "emb_p50": [float(car["emb"][h, 0, 1]) for h in fe], "op_p50": [float(car["op"][h, gsel, 1]) for h in fe],
               "slo_met": [bool(slo_ok[h]) for h in fe]}
    front_rows = {}
    for kind in ("latency_vs_p50", "latency_vs_p95", "embodied_vs_operational"):
        ids = fronts[dg][kind]
        front_rows[kind] = [row(int(i[1:6]), 0, gsel) for i in ids]
    purchase = _purchase(base, sw, db, cfg, perf, world, grids, grid_labels, order_g, gsel, lifetimes, pue, rq, k,
                         eligible, car, row, ordered, P50, RQ, top, slo)
    reasons: dict[str, int] = {}
    for h in range(H):
        if not perf.feasible[h]:
            key = perf.reason_code[h]
            reasons[key] = reasons.get(key, 0) + 1
    n_cfg = H * Lv * G
    return {
        "plan_version": PLAN_VERSION,
        "mode": "MODELED",
        "mode_reason": "analytic steady-state model of the performance model's physics (no sensors); see docs/planning.md",
        "base_scenario": base.name,
        "sweep": {"name": sw.name or Path(loaded.file).stem, "file": loaded.file, "description": sw.description},
        "counts": {"hardware": H, "lifetimes": Lv, "grids": G, "configurations": n_cfg,
                   "feasible_hardware": int(perf.feasible.sum()), "slo_met_hardware": int(slo_ok.sum()),
                   "eligible_hardware": int(eligible.sum()), "draws": sw.draws},
        "infeasible_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "not_ranked": sorted(set(why_incomplete.values())),
        "slo": slo.model_dump(),
        "metric": "gCO2e per 1k generated tokens",
        "robust_quantile": sw.robust_quantile,
        "recommendation": {
            "robust": row(*robust) if robust else None,
            "median": row(*median) if median else None,
            "robust_differs_from_median": bool(robust and median and robust != median),
            "rule": f"lowest P{int(rq)} of gCO2e per 1k generated tokens among configurations that meet the SLO "
                    f"and have complete device data; the median pick is shown for contrast",
        },
        "purchase": purchase,
        "top": top_rows,
        "by_grid": by_grid,
        "choice_changes": changes,
        "pareto": {"grid": dg, "lifetime": lifetimes[0].name, **front_rows},
        "pareto_ids": fronts,
        "scatter": scatter,
        "grids": [{"label": grid_labels[gi], "source": grids[gi].source, "gco2e_per_kwh_p50": car["grid_p50"][gi],
                   "forecast_error": grids[gi].series.error.describe() if grids[gi].series else None}
                  for gi in order_g],
        "lifetimes": [lv.model_dump() for lv in lifetimes],
        "workload": {"requests": perf.requests, "generated_tokens": perf.generated_tokens,
                     "arrival_rate_rps": base.workload.arrival_rate_rps},
        "assumptions": {
            "pue": {"best": pue.best, "low": pue.low, "high": pue.high, "source": pue.source},
            "allocation": base.carbon.allocation,
            "scope": base.carbon.scope,
            "constants": {kk: v for kk, v in k.__dict__.items()},
            "device_overrides": {kk: v.model_dump() for kk, v in sw.device_overrides.items()},
            "pairing": "one World of draws: every configuration sees the same device-model, grid-quantile and PUE draws",
            "sampling": "the keyed sampler of attribute(): log-triangular on (low, best, high) per input",
        },
        "warnings": sorted({f"{kk}: no embodied figure in device_db (configurations with it are not ranked)"
                            for kk, v in car["missing_emb"].items() if v} |
                           {f"{kk}: no power figures in device_db (operational energy missing)"
                            for kk, v in car["missing_power"].items() if v}),
    }


# =========================================================================== what to buy
def _cfg_rows(cfg: HwConfigs, idx: Sequence[int]) -> HwConfigs:
    """The configurations ``idx`` of ``cfg`` (same host and CPUs)."""
    import dataclasses

    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kw[f.name] = [v[i] for i in idx] if isinstance(v, list) else v[list(idx)] if isinstance(v, np.ndarray) else v
    return HwConfigs(**kw)


def _cfg_concat(a: HwConfigs, b: HwConfigs) -> HwConfigs:
    """``a`` then ``b``; the platform (host, CPUs) is ``a``'s."""
    import dataclasses

    kw: dict[str, Any] = {}
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        kw[f.name] = va + vb if isinstance(va, list) else np.concatenate([va, vb]) if isinstance(va, np.ndarray) else va
    return HwConfigs(**kw)


def _bom(cfg: HwConfigs, h: int, basecfg: HwConfigs, sw: Sweep, db: DeviceDB) -> dict[str, Any]:
    """Bill of materials of configuration ``h``: devices to buy, then how they are used."""
    swept = {"gpu": True, "dram": sw.dram is not None, "ssd": sw.ssd is not None, "hdd": sw.hdd is not None,
             "host": False, "cpu": False}
    items = []
    for slot, item in (("gpu", "GPU"), ("host", "host server"), ("cpu", "host CPU"), ("dram", "DRAM"), ("ssd", "SSD"),
                       ("hdd", "HDD")):
        if slot in ("host", "cpu"):
            key, n = getattr(cfg, slot), getattr(cfg, f"n_{slot}")
            bkey, bn = getattr(basecfg, slot), getattr(basecfg, f"n_{slot}")
        else:
            key, n = getattr(cfg, slot)[h], int(getattr(cfg, f"n_{slot}")[h])
            bkey, bn = getattr(basecfg, slot)[0], int(getattr(basecfg, f"n_{slot}")[0])
        if key is None and bkey is None:
            continue
        rec = db.resolve(key) if key else None
        cap = rec.capacity_gb if rec is not None else None
        items.append({"item": item, "slot": slot, "device": key, "name": rec.name if rec is not None else None,
                      "count": int(n) if key else 0, "capacity_gb_each": cap,
                      "capacity_gb_total": cap * n if cap is not None and key else None,
                      "base": {"device": bkey, "count": int(bn) if bkey else 0},
                      "swept": swept[slot],
                      "note": None if swept[slot] else "from the base scenario; the sweep does not vary it"})
    w = cfg.w_frac[h]
    return {"devices": items,
            "weights": {t: float(f) for t, f in zip(("hbm", "dram", "ssd", "hdd"), w) if f > 0},
            "kv": {"hbm": "what the weights leave at the memory utilisation below",
                   "cpu_gb": float(cfg.cpu_gb[h]), "disk_gb": float(cfg.disk_gb[h]),
                   "disk_device": cfg.ssd[h] or cfg.hdd[h] if cfg.disk_gb[h] > 0 else None},
            "engine": {"gpu_memory_utilization": float(cfg.util[h]), "max_num_seqs": int(cfg.max_seqs[h]),
                       "note": "vLLM settings of the configuration, not purchases"}}


def _headroom(p90: float | None, target: float | None) -> dict[str, Any] | None:
    from .report.units import TIGHT_HEADROOM

    if target is None:
        return None
    if p90 is None or not np.isfinite(p90):
        return {"p90": None, "target": target, "headroom": None, "tight": None, "met": None}
    head = 1.0 - p90 / target
    return {"p90": float(p90), "target": float(target), "headroom": float(head), "met": bool(p90 <= target),
            "tight": bool(0 <= head < TIGHT_HEADROOM)}


def _purchase(base: Scenario, sw: Sweep, db: DeviceDB, cfg: HwConfigs, perf: PerfResult, world: World,
              grids: Sequence[GridSpec], grid_labels: list[str], order_g: np.ndarray, gsel: int,
              lifetimes: Sequence[LifetimeVariant], pue: Triple, rq: float, k: ModelConstants, eligible: np.ndarray,
              car: dict[str, Any], row: Callable[..., dict[str, Any]], ordered: Callable[..., np.ndarray],
              P50: np.ndarray, RQ: np.ndarray, top: int, slo: SweepSlo) -> dict[str, Any] | None:
    """The hardware to buy: ranked on one grid (the scenario's region or ``--grid``) and the first
    lifetime assumption, so that where and how long stay what-if axes beside the answer; its bill of
    materials, SLO headroom and saving against the base scenario's hardware (paired draws)."""
    mask = np.zeros(P50.shape, bool)
    mask[:, 0, gsel] = eligible
    order = ordered(RQ, mask)
    out: dict[str, Any] = {
        "grid": grid_labels[gsel], "lifetime": lifetimes[0].name,
        "rule": (f"lowest P{int(rq)} of gCO2e per 1k generated tokens on grid {grid_labels[gsel]} with lifetime "
                 f"assumption '{lifetimes[0].name}', among hardware that meets the SLO with complete device data; "
                 f"grid and lifetime are what-if axes shown beside it"),
        "pick": None}
    if len(order) == 0:
        return out
    hb = int(np.unravel_index(order[0], RQ.shape)[0])
    tops: list[dict[str, Any]] = []
    last = None
    for i in order:
        h = int(np.unravel_index(i, RQ.shape)[0])
        key = (round(float(RQ[h, 0, gsel]), 12), round(float(P50[h, 0, gsel]), 12))
        if key == last and tops:
            tops[-1]["equivalent_configurations"] += 1
            continue
        if len(tops) >= top:
            break
        last = key
        tops.append({**row(h, 0, gsel), "equivalent_configurations": 0})
    basecfg = configs_from_scenarios([base], db)
    pick = row(hb, 0, gsel)
    out["pick"] = pick
    out["top"] = tops
    out["bom"] = _bom(cfg, hb, basecfg, sw, db)
    out["slo_headroom"] = {kk: hr for kk, hr in (("ttft_ms", _headroom(pick["ttft_p90_ms"], slo.ttft_ms)),
                                                 ("tpot_ms", _headroom(pick["tpot_p90_ms"], slo.tpot_ms))) if hr}
    # the base scenario's own hardware, on the same grid, lifetime and draws
    pair = _cfg_concat(_cfg_rows(cfg, [hb]), basecfg)
    perf2 = analytic_model(base, pair, db, constants=k, overrides=dict(sw.device_overrides))
    kept: dict[int, np.ndarray] = {}
    plan_carbon(perf2, pair, world, [grids[gsel]], pue, [lifetimes[0]], base.carbon.allocation, robust_q=rq,
                draws_of=kept)
    vs: dict[str, Any] = {"base_scenario": base.name, "base_label": pair.label(1), "base_hardware": pair.describe(1),
                          "same_hardware": pair.label(1) == pair.label(0),
                          "base_feasible": bool(perf2.feasible[1]),
                          "base_ttft_p90_ms": _finite(perf2.ttft_p90_ms[1]), "base_tpot_p90_ms": _finite(perf2.tpot_p90_ms[1])}
    if not perf2.feasible[1] or 0 not in kept or 1 not in kept:
        vs.update({"reason": perf2.reason[1] or "the base hardware does not run this workload in the analytic model",
                   "saving_per_1k_gco2e": None, "saving_share": None, "p_pick_lower": None})
    else:
        a, b = kept[0][0, 0], kept[1][0, 0]
        ok = (slo.ttft_ms is None or perf2.ttft_p90_ms[1] <= slo.ttft_ms) and \
             (slo.tpot_ms is None or perf2.tpot_p90_ms[1] <= slo.tpot_ms)
        vs.update({"base_slo_met": bool(ok), "base_per_1k_tokens_gco2e": bands(b), "pick_per_1k_tokens_gco2e": bands(a),
                   "saving_per_1k_gco2e": bands(b - a), "saving_share": bands((b - a) / np.maximum(b, 1e-300)),
                   "p_pick_lower": float(np.mean(a < b) + 0.5 * np.mean(a == b)),
                   "pairing": "the same draws for both (one World): device models, grid quantile and PUE"})
    out["vs_base"] = vs
    # what if: the same hardware on every grid and lifetime assumption; the best hardware there
    rows_g = []
    for gi in order_g:
        gi = int(gi)
        m = np.zeros(P50.shape, bool)
        m[:, 0, gi] = eligible
        o = ordered(RQ, m)
        best = int(np.unravel_index(o[0], RQ.shape)[0]) if len(o) else None
        rows_g.append({"grid": grid_labels[gi], "gco2e_per_kwh_p50": car["grid_p50"][gi],
                       "per_1k_tokens_gco2e": [{"p50": _finite(P50[hb, li, gi]), "p95": _finite(RQ[hb, li, gi])}
                                               for li in range(len(lifetimes))],
                       "best_hardware": None if best is None or cfg.label(best) == cfg.label(hb) else cfg.label(best),
                       "best_hardware_p95": None if best is None else _finite(RQ[best, 0, gi])})
    out["what_if"] = {"lifetimes": [lv.name for lv in lifetimes], "grids": rows_g,
                      "note": "the chosen hardware under each grid and lifetime assumption; best_hardware: the pick "
                              "had the plan been made for that grid (first lifetime assumption)"}
    return out
