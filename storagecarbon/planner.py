"""Capacity planning: ``compare`` options with paired Monte Carlo draws, ``plan`` over a sweep.

Both stages share one carbon kernel and one :class:`World` of Monte Carlo draws:

* the **world** holds, for every draw index, one value of every uncertain input: per device
  model (device_db key) its embodied total, lifetime, idle/active power and rated endurance;
  the grid intensity (one uniform per draw shared by every region and hourly series, so draw
  ``d`` is the same "state of the grid" for every option) and the PUE. Streams are keyed by name
  (``np.random.default_rng([seed, crc32(name)])``), so two options that both use an H100 see the
  same H100 draws, whatever else they contain: comparisons are paired draw by draw.
* the **carbon kernel** applies the formulas of :func:`storagecarbon.attribution.attribute`
  (operational: count x idle x T + (active - idle) x busy, x intensity x PUE; embodied: SCI
  time share TE x units.s / lifetime, flash wear TE x written / TBW, the larger per draw under
  ``max``) to usage totals. Its distributions equal attribute()'s (tests/test_planner.py).

``plan`` does not run the iteration-level simulation of :mod:`storagecarbon.perfmodel` (about a
second per configuration); it evaluates a **vectorised analytic steady-state model** of the same
physics over every configuration at once (numpy), documented in docs/planning.md with its
measured agreement with ``run_model`` + ``attribute``.

Everything here is a pure function of its arguments except the ``load_*`` helpers at the edge
(they read files or run the modeled profile of a scenario).
"""

from __future__ import annotations

import csv
import itertools
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from .attribution import J_PER_KWH, SECONDS_PER_YEAR, UNIT_KINDS, Triple
from .devicedb import DeviceDB
from .errors import StoragecarbonError, ValidationError
from .perfmodel import ModelConstants, load_constants, sample_workload
from .scenario import Scenario
from .yamlio import LocatedYaml, StrictModel, load_yaml, validate

PLAN_VERSION = 1
COMPARE_VERSION = 1
SLOTS = ("gpu", "host", "cpu", "dram", "ssd", "hdd")
SLOT_TIER = {"gpu": "hbm", "host": "host", "cpu": "host", "dram": "dram", "ssd": "ssd", "hdd": "hdd"}
CAPACITY_KINDS = ("dram", "ssd", "hdd")


# =========================================================================== sampling
def logtri_ppf(t: Triple, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of the log-triangular distribution of :func:`attribution.sample`.

    Same distribution as ``sample()`` (triangular on log(low), log(best), log(high); plain
    triangular when low is 0; a point value when the range is empty), but driven by given
    uniforms so that draws can be shared (comonotonic) between options.
    """
    lo, c, hi = t.low, t.best, t.high
    if hi <= lo:
        return np.full(np.shape(u), c, dtype=np.float64)
    if lo > 0:
        a, m, b = math.log(lo), math.log(c), math.log(hi)
    else:
        a, m, b = lo, c, hi
    m = min(max(m, a), b)
    fc = (m - a) / (b - a)
    left = a + np.sqrt(u * (b - a) * (m - a))
    right = b - np.sqrt((1 - u) * (b - a) * (b - m))
    x = np.where(u < fc, left, right)
    return np.exp(x) if lo > 0 else x


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def bands(x: np.ndarray, axis: int = -1) -> dict[str, float]:
    p5, p50, p95 = np.percentile(x, [5, 50, 95], axis=axis)
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95)}


# =========================================================================== forecast error
QUANTILES = (0.5, 0.9, 0.95, 0.99)
HALF_NORMAL_Z = (0.6745, 1.6449, 1.9600, 2.5758)  # quantiles of |N(0,1)|


@dataclass(frozen=True)
class ErrorBand:
    """Absolute percentage error of a carbon-intensity forecast up to ``max_horizon_h`` hours ahead."""

    max_horizon_h: float
    ape_pct: tuple[float, float, float, float]  # at QUANTILES (P50, P90, P95, P99)


@dataclass(frozen=True)
class ForecastErrorModel:
    """Relative forecast error per horizon; actual = forecast / (1 + e), e = +-|APE| with even sign."""

    name: str
    bands: tuple[ErrorBand, ...]
    source: str

    def sample(self, horizon_h: np.ndarray, u_abs: np.ndarray, u_sign: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(horizon_h))
        if not self.bands:
            return out
        edges = np.array([b.max_horizon_h for b in self.bands])
        bi = np.minimum(np.searchsorted(edges, horizon_h, side="left"), len(self.bands) - 1)
        qs = np.array((0.0,) + QUANTILES + (1.0,))
        for i, b in enumerate(self.bands):
            m = bi == i
            if not m.any():
                continue
            p = np.asarray(b.ape_pct, dtype=float)
            tail = p[-1] * max(p[-1] / p[-2], 1.0) if p[-2] > 0 else p[-1]
            vals = np.concatenate([[0.0], p, [tail]]) / 100.0
            out[m] = np.interp(u_abs[m], qs, vals)
        e = np.where(u_sign < 0.5, -out, out)
        return np.maximum(e, -0.9)

    def describe(self) -> list[dict[str, Any]]:
        return [{"max_horizon_h": b.max_horizon_h, **{f"ape_p{int(q * 100)}_pct": v for q, v in zip(QUANTILES, b.ape_pct)}}
                for b in self.bands]


# CarbonCast (Maji, Shenoy, Sitaraman, BuildSys 2022), California ISO: distribution over test days
# of the daily MAPE of its multi-day carbon-intensity forecasts, per forecast day.
# carbonfirst/CarbonCast@0faf82f data/CISO/CISO_MAPE_iter0.txt, rows [day, mean, P50, P90, P95, P99].
CARBONCAST_CISO = ForecastErrorModel(
    name="carboncast-ciso",
    bands=(
        ErrorBand(24, (9.00, 14.49, 17.13, 22.44)),
        ErrorBand(48, (11.58, 18.53, 22.06, 29.36)),
        ErrorBand(72, (11.81, 20.08, 24.69, 36.40)),
        ErrorBand(96, (12.53, 20.91, 28.55, 35.30)),
    ),
    source="CarbonCast (Maji et al., BuildSys 2022) per-day MAPE distribution for CISO, "
           "carbonfirst/CarbonCast@0faf82f data/CISO/CISO_MAPE_iter0.txt (P50/P90/P95/P99 of daily MAPE for "
           "forecast days 1-4; mean MAPE 9.7/12.4/13.2/13.7%); beyond 96 h the day-4 band is reused",
)
NO_ERROR = ForecastErrorModel(name="none", bands=(), source="series taken as exact (no forecast error)")
ERROR_MODELS = {m.name: m for m in (CARBONCAST_CISO, NO_ERROR)}


def error_model_from_mape(name: str, bands: Sequence[tuple[float, float]], source: str) -> ForecastErrorModel:
    """Bands given as (max_horizon_h, MAPE %): |e| half-normal with mean MAPE (sigma = MAPE x sqrt(pi/2))."""
    out = []
    for h, mape in bands:
        sigma = mape * math.sqrt(math.pi / 2)
        out.append(ErrorBand(h, tuple(sigma * z for z in HALF_NORMAL_Z)))  # type: ignore[arg-type]
    return ForecastErrorModel(name, tuple(out), source)


@dataclass(frozen=True)
class IntensitySeries:
    """An hourly intensity series (forecast, or history standing in for one) plus its error model."""

    name: str
    values: np.ndarray            # gCO2e/kWh, one per hour
    error: ForecastErrorModel
    lead_h: float = 0.0           # hours between the forecast's issue and the series' first hour
    source: str = ""

    def sample(self, u_hour: np.ndarray, u_abs: np.ndarray, u_sign: np.ndarray) -> np.ndarray:
        n = len(self.values)
        idx = np.minimum((u_hour * n).astype(np.int64), n - 1)
        horizon = self.lead_h + idx + 1.0
        e = self.error.sample(horizon, u_abs, u_sign)
        return self.values[idx] / (1.0 + e)


def load_intensity_csv(path: str | Path) -> np.ndarray:
    """``timestamp,gco2e_per_kwh`` (other columns ignored); errors name FILE:LINE: field."""
    import io

    from . import limits

    p = Path(path)
    if p.exists() and not p.is_file():
        raise ValidationError(str(p), None, "file", "intensity series is not a regular file")
    try:
        with p.open("rb") as fb:
            raw_bytes = fb.read(int(limits.CSV_BYTES.value) + 1)
    except FileNotFoundError:
        raise ValidationError(str(p), None, "file", "intensity series does not exist") from None
    except OSError as exc:
        raise ValidationError(str(p), None, "file", f"intensity series cannot be read ({exc.__class__.__name__})") from None
    if len(raw_bytes) > limits.CSV_BYTES.value:
        raise ValidationError(str(p), None, "file", f"larger than {limits.CSV_BYTES.value:,.0f} bytes ({limits.CSV_BYTES.why})")
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(str(p), None, "file", f"not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        raise ValidationError(str(p), None, "file", "contains NUL bytes: not a CSV text file")
    rd = csv.DictReader(io.StringIO(text, newline=""))
    vals = []
    try:
        if rd.fieldnames is None or "gco2e_per_kwh" not in rd.fieldnames:
            raise ValidationError(str(p), 1, "header", "needs columns timestamp,gco2e_per_kwh")
        for row in rd:
            i = rd.line_num
            raw = row.get("gco2e_per_kwh")
            try:
                v = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValidationError(str(p), i, "gco2e_per_kwh", f"not a number ({str(raw)[:40]!r})") from None
            if not (v >= 0 and math.isfinite(v)):
                raise ValidationError(str(p), i, "gco2e_per_kwh", "must be a finite number >= 0")
            vals.append(v)
            if len(vals) > limits.CSV_ROWS.value:
                raise ValidationError(str(p), i, "rows", f"more than {limits.CSV_ROWS.value:,.0f} rows ({limits.CSV_ROWS.why})")
    except csv.Error as exc:
        raise ValidationError(str(p), rd.line_num, "csv", f"not valid CSV ({exc})") from None
    if not vals:
        raise ValidationError(str(p), None, "rows", "intensity series has no rows")
    return np.asarray(vals, dtype=np.float64)


# =========================================================================== world of draws
@dataclass
class KeyDraws:
    """Draws of one device model's figures (per unit)."""

    key: str
    kind: str
    idle_w: np.ndarray          # 0 where the record has no idle power
    dyn_w: np.ndarray           # max(active, idle) - idle
    te_g: np.ndarray | None     # embodied per unit, g (None: missing)
    life_s: np.ndarray | None   # default lifetime, s
    tbw_b: np.ndarray | None    # rated endurance, bytes (flash only)
    missing: list[str]
    sources: dict[str, str]
    no_idle: bool = False
    no_power: bool = False
    avg_w: np.ndarray | None = None   # capacity device with one average power figure (per unit held)


@dataclass(frozen=True)
class GridSpec:
    """Where the electricity comes from: a device_db region, a fixed figure or an hourly series."""

    label: str
    triple: Triple | None = None
    series: IntensitySeries | None = None

    @property
    def source(self) -> str:
        if self.series is not None:
            return f"hourly series {self.series.name} ({self.series.source}); forecast error: {self.series.error.source}"
        assert self.triple is not None
        return self.triple.source


class World:
    """Shared Monte Carlo draws: device figures by device_db key, grid and PUE by draw index."""

    def __init__(self, db: DeviceDB, draws: int, seed: int = 0,
                 idle_overrides: dict[str, Triple] | None = None) -> None:
        if draws < 1:
            raise StoragecarbonError("draws must be >= 1")
        self.db, self.draws, self.seed = db, int(draws), int(seed)
        self.idle_overrides = {db.get(k).key: v for k, v in (idle_overrides or {}).items()}
        self._keys: dict[str, KeyDraws] = {}
        g = _stream(seed, "grid")
        self.u_grid = g.random(self.draws)          # one grid state per draw, shared by every region
        self.u_hour = g.random(self.draws)
        self.u_err = g.random(self.draws)
        self.u_sign = g.random(self.draws)
        self.u_pue = _stream(seed, "pue").random(self.draws)
        self._grid: dict[str, np.ndarray] = {}

    def key(self, key: str) -> KeyDraws:
        if key in self._keys:
            return self._keys[key]
        rec = self.db.resolve(key)
        n = self.draws
        if rec is None:
            kd = KeyDraws(key, "?", np.zeros(n), np.zeros(n), None, None, None,
                          [f"no device_db record {key!r}: its carbon is missing, not zero"], {})
            self._keys[key] = kd
            return kd
        u = _stream(self.seed, f"device:{rec.key}").random((5, n))
        missing, sources = [], {}
        idle = self.idle_overrides.get(rec.key) or Triple.of(rec.idle_w)
        act = Triple.of(rec.active_w)
        avg = None
        if rec.kind in CAPACITY_KINDS and idle is None and act is not None:
            # as attribute(): one average figure, charged over the capacity-seconds held (CCF method)
            avg = logtri_ppf(act, u[1])
        elif idle is None and act is None:
            missing.append(f"{rec.key}: no idle/active power in device_db; operational energy missing")
        elif idle is None:
            missing.append(f"{rec.key}: idle power missing in device_db; idle energy not counted")
        idle_d = logtri_ppf(idle, u[0]) if idle else np.zeros(n)
        act_d = logtri_ppf(act, u[1]) if act else idle_d
        act_d = np.maximum(act_d, idle_d)
        te = rec.embodied_total_triple()
        te_d = None
        if te is None:
            missing.append(f"{rec.key}: no embodied figure in device_db; embodied carbon missing")
        else:
            te_d = logtri_ppf(Triple(*te), u[2]) * 1000.0
            sources["embodied"] = rec.embodied_kgco2e.source if rec.embodied_kgco2e else ""
        life = Triple.of(rec.lifetime_years)
        life_d = logtri_ppf(life, u[3]) * SECONDS_PER_YEAR if life else None
        tbw_d = None
        if rec.kind == "ssd" and rec.endurance_tbw is not None:
            tbw_d = logtri_ppf(Triple.of(rec.endurance_tbw), u[4]) * 1e12  # type: ignore[arg-type]
        if avg is not None:
            idle_d = act_d = np.zeros(n)
        kd = KeyDraws(rec.key, rec.kind, idle_d, act_d - idle_d, te_d, life_d, tbw_d, missing, sources,
                      no_idle=idle is None and avg is None, no_power=idle is None and act is None, avg_w=avg)
        self._keys[key] = kd
        return kd

    def ratio(self, key: str, life_years: float | None) -> np.ndarray:
        """Embodied g per unit-second held: TE / lifetime (per draw)."""
        kd = self.key(key)
        if kd.te_g is None:
            return np.zeros(self.draws)
        if life_years is not None:
            return kd.te_g / (life_years * SECONDS_PER_YEAR)
        if kd.life_s is None:
            return np.zeros(self.draws)
        return kd.te_g / kd.life_s

    def grid(self, spec: GridSpec) -> np.ndarray:
        if spec.label in self._grid:
            return self._grid[spec.label]
        if spec.series is not None:
            v = spec.series.sample(self.u_hour, self.u_err, self.u_sign)
        else:
            assert spec.triple is not None
            v = logtri_ppf(spec.triple, self.u_grid)
        self._grid[spec.label] = v
        return v

    def pue(self, t: Triple) -> np.ndarray:
        return logtri_ppf(t, self.u_pue)


def grid_for_region(db: DeviceDB, region: str) -> GridSpec:
    r = db.region(region)
    t = Triple.of(r.gco2e_per_kwh)
    assert t is not None
    return GridSpec(f"region:{region}", Triple(t.low, t.best, t.high, f"{r.name} {r.year}: {t.source}"))


def pue_triple(db: DeviceDB, pue: str | float) -> Triple:
    if isinstance(pue, (int, float)):
        return Triple.fixed(float(pue), "given in the scenario")
    p = db.pue_of(pue)
    t = Triple.of(p.value)
    assert t is not None
    return Triple(t.low, t.best, t.high, f"{p.name}: {t.source}")


# =========================================================================== carbon kernel
@dataclass(frozen=True)
class DeviceUse:
    """Usage totals of one device (or a group of identical units) over a run."""

    id: str
    tier: str
    key: str | None
    count: int
    duration_s: float
    busy_s: float                  # unit-seconds of activity summed over units (power-weighted)
    units_s: float | None          # embodied occupancy in unit-seconds (None: missing)
    flash_written_b: float = 0.0
    measured_j: float | None = None
    life_years: float | None = None
    share: float = 1.0             # SCI resource share of each unit (unit devices)


def device_carbon(uses: Sequence[DeviceUse], world: World, allocation: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-draw embodied g and operational energy J of each device: arrays [device, draw]."""
    n = world.draws
    emb = np.zeros((len(uses), n))
    opj = np.zeros((len(uses), n))
    warnings: list[str] = []
    for i, u in enumerate(uses):
        if u.key is None:
            warnings.append(f"{u.id}: no device_db record; its carbon is missing, not zero")
            continue
        kd = world.key(u.key)
        warnings.extend(f"{u.id}: {m}" for m in kd.missing)
        if u.measured_j is not None:
            opj[i] = u.measured_j
        elif kd.avg_w is not None:
            opj[i] = kd.avg_w * (u.units_s or 0.0)
        else:
            opj[i] = u.share * (u.count * u.duration_s * kd.idle_w + u.busy_s * kd.dyn_w)
        if kd.te_g is None:
            continue
        if u.units_s is None:
            units = 0.0
            warnings.append(f"{u.id}: no occupancy (resident or reserved bytes); time-share embodied missing")
        else:
            units = u.units_s
        time = units * world.ratio(u.key, u.life_years)
        wear = np.zeros(n)
        if kd.kind == "ssd" and kd.tbw_b is not None and allocation in ("wear", "max"):
            wear = u.flash_written_b / kd.tbw_b * kd.te_g
        if allocation == "time":
            emb[i] = time
        elif allocation == "wear":
            # as attribute(): rated flash by wear, every other device by time share
            emb[i] = wear if (kd.kind == "ssd" and kd.tbw_b is not None) else time
        else:
            emb[i] = np.where(wear > time, wear, time)
    return emb, opj, warnings


# =========================================================================== compare
@dataclass
class Option:
    """One option to compare: its report (from the pipeline) and the usage behind it."""

    name: str
    source: str
    report: dict[str, Any]
    uses: list[DeviceUse]
    grid: GridSpec
    pue: Triple
    allocation: str
    requests: int
    generated_tokens: int
    mode: str
    slo: dict[str, Any] = field(default_factory=dict)


def uses_from_usage(usage: Any, db: DeviceDB, lifetime_overrides: dict[str, float]) -> list[DeviceUse]:
    """Usage totals per device from a :class:`storagecarbon.usage.Usage` (as attribute() reads them)."""
    out = []
    T = float(np.sum(usage.phase_time_s))
    q = usage.by_phase
    for i, e in enumerate(usage.header.devices):
        rec = db.resolve(e.db_key) if e.db_key else None
        measured = None
        if usage.has.get((e.id, "energy_j")):
            measured = float(q["energy_j"][i].sum())
        elif usage.has.get((e.id, "power_j")):
            measured = float(q["power_j"][i].sum())
        units: float | None
        share = float(getattr(e, "share", 1.0) or 1.0)
        busy = float(q["busy_s"][i].sum())
        if rec is not None and rec.kind in UNIT_KINDS:
            units = e.count * share * T
            if not usage.has.get((e.id, "busy_s")) and usage.has.get((e.id, "cpu_time_s")):
                cpus = float((usage.header.host or {}).get("cpu_count") or 1)
                busy = float((np.minimum(q["cpu_time_s"][i] / cpus, usage.phase_time_s) * e.count).sum())
        else:
            cap = e.capacity_bytes or (rec.capacity_bytes if rec else None)
            if usage.has.get((e.id, "resident_byte_s")) and cap:
                per_phase = q["resident_byte_s"][i] / cap
                units = float(np.minimum(per_phase, e.count * usage.phase_time_s).sum())
            elif e.reserved_bytes is not None and cap:
                units = float(min(e.reserved_bytes / cap * T, e.count * T))
            else:
                units = None
        written = float(np.maximum(q["bytes_written"][i], q["app_bytes_written"][i]).sum())
        life = None
        for k in (e.id, e.db_key, e.tier):
            if k is not None and k in lifetime_overrides:
                life = float(lifetime_overrides[k])
                break
        out.append(DeviceUse(e.id, e.tier, rec.key if rec else e.db_key, e.count, T, busy, units, written, measured,
                             life, share))
    return out


def load_option(path: str | Path, db: DeviceDB, *, out_root: Path, region: str | None = None,
                progress: Callable[[str], None] = lambda s: None) -> Option:
    """A scenario (modeled profile), a report directory or a trace file -> :class:`Option` (IO edge)."""
    from .pipeline import attribute_trace, default_report_dir, profile
    from .scenario import Carbon, load_scenario

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        scn = load_scenario(p, db)
        name = scn.name or p.stem
        progress(f"modeling {name}")
        res = profile(p, db=db, out_dir=default_report_dir(out_root, name, progress), mode="modeled", region=region,
                      draws=200)
        report, usage, carbon = res.report, res.attribution.usage, scn.carbon
        base_dir = p.parent
    else:
        trace = p / "trace.arrows" if p.is_dir() else p
        if not trace.exists():
            raise StoragecarbonError(f"{p}: not a scenario (.yaml), a report directory with trace.arrows, or a trace file")
        name = p.name if p.is_dir() else (p.parent.name or p.stem)
        progress(f"reading {trace}")
        res2 = attribute_trace(trace, db, None, scenario=name, region=region, draws=200)
        report, usage = res2.report, res2.attribution.usage
        echo = (usage.header.scenario or {}).get("carbon")
        try:
            carbon = Carbon.model_validate(echo or {"region": region or "world"})
        except Exception:
            carbon = Carbon(region=region or "world")
        base_dir = trace.parent
    grid = _grid_of_carbon(carbon, db, region, base_dir)
    uses = uses_from_usage(usage, db, dict(carbon.lifetime_years))
    slo = (usage.header.scenario or {}).get("slo") or {}
    return Option(name=name, source=str(p), report=report, uses=uses, grid=grid, pue=pue_triple(db, carbon.pue),
                  allocation=carbon.allocation, requests=int(report.get("requests") or 0),
                  generated_tokens=int((report.get("tokens") or {}).get("generated") or 0),
                  mode=str(report.get("mode", "?")), slo=slo)


def _grid_of_carbon(carbon: Any, db: DeviceDB, region: str | None, base_dir: Path | None) -> GridSpec:
    if region is not None:
        return grid_for_region(db, region)
    if carbon.gco2e_per_kwh is not None:
        g = carbon.gco2e_per_kwh
        t = Triple(g.low if g.low is not None else g.best, g.best, g.high if g.high is not None else g.best, g.source)
        return GridSpec(f"fixed:{t.low}:{t.best}:{t.high}", t)
    if carbon.intensity_file:
        f = Path(carbon.intensity_file)
        if not f.is_absolute() and base_dir is not None:
            f = base_dir / f
        vals = load_intensity_csv(f)
        return GridSpec(f"series:{f}", series=IntensitySeries(f.name, vals, NO_ERROR, source=str(f)))
    return grid_for_region(db, carbon.region)


def option_draws(opt: Option, world: World) -> dict[str, Any]:
    """Per-draw carbon of one option: totals, per tier, per 1k tokens and per request."""
    emb, opj, warns = device_carbon(opt.uses, world, opt.allocation)
    ci = world.grid(opt.grid)
    pue = world.pue(opt.pue)
    op = opj / J_PER_KWH * (ci * pue)[None, :]
    tiers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, u in enumerate(opt.uses):
        e0, o0 = tiers.get(u.tier, (np.zeros(world.draws), np.zeros(world.draws)))
        tiers[u.tier] = (e0 + emb[i], o0 + op[i])
    total = emb.sum(axis=0) + op.sum(axis=0)
    return {"emb": emb.sum(axis=0), "op": op.sum(axis=0), "total": total, "tiers": tiers,
            "per_1k": total / opt.generated_tokens * 1000 if opt.generated_tokens else None,
            "per_req": total / opt.requests if opt.requests else None, "warnings": warns, "ci": ci, "pue": pue}


TIER_ORDER = ["hbm", "host", "dram", "ssd", "hdd", "remote"]


def compare(options: Sequence[Option], db: DeviceDB, *, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Side-by-side carbon of options with paired Monte Carlo draws (pure given the options).

    Every option is evaluated on one :class:`World`: draw ``d`` holds the same grid-intensity
    quantile, PUE and device-model figures for all of them, so ``P(A < B)`` is the share of
    draws in which A's gCO2e per 1k generated tokens is below B's.
    """
    if len(options) < 2:
        raise StoragecarbonError("compare needs at least two options")
    world = World(db, draws, seed)
    res = [option_draws(o, world) for o in options]
    tiers_seen = {t for r in res for t in r["tiers"]}
    tier_list = [t for t in TIER_ORDER if t in tiers_seen] + sorted(tiers_seen - set(TIER_ORDER))
    out_opts = []
    for o, r in zip(options, res):
        lat = o.report.get("latency") or {}
        rows = []
        for t in tier_list:
            if t not in r["tiers"]:
                rows.append({"tier": t, "present": False})
                continue
            e, op = r["tiers"][t]
            devs = [f"{u.count} x {u.key}" for u in o.uses if u.tier == t]
            rows.append({"tier": t, "present": True, "devices": devs, "embodied_gco2e": bands(e),
                         "operational_gco2e": bands(op), "total_gco2e": bands(e + op),
                         "per_1k_tokens_gco2e": bands((e + op) / o.generated_tokens * 1000) if o.generated_tokens else None})
        out_opts.append({
            "name": o.name, "source": o.source, "mode": o.mode.upper(),
            "mode_reason": o.report.get("mode_reason"),
            "requests": o.requests, "generated_tokens": o.generated_tokens,
            "duration_s": o.report.get("duration_s"),
            "grid": {"label": o.grid.label, "source": o.grid.source, "gco2e_per_kwh": bands(r["ci"])},
            "pue": {"best": o.pue.best, "source": o.pue.source}, "allocation": o.allocation,
            "totals": {"embodied_gco2e": bands(r["emb"]), "operational_gco2e": bands(r["op"]),
                       "total_gco2e": bands(r["total"])},
            "per_1k_tokens_gco2e": bands(r["per_1k"]) if r["per_1k"] is not None else None,
            "per_request_gco2e": bands(r["per_req"]) if r["per_req"] is not None else None,
            "embodied_share": float(np.median(r["emb"] / np.maximum(r["total"], 1e-300))),
            "tiers": rows,
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
        "pairing": ("one World of draws for every option: draw d shares the grid-intensity quantile, the PUE and the "
                    "figures of each device model (device_db key) across options; P(A<B) counts draws with A below B"),
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
                rec = world.db.resolve(u.key)
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


# =========================================================================== workload statistics
@dataclass(frozen=True)
class WorkloadStats:
    """The base scenario's workload as the simulation draws it (same generator and seed)."""

    p: np.ndarray                 # prompt tokens per request (one pass)
    o: np.ndarray                 # output tokens per request
    pre: np.ndarray               # shared-prefix tokens per request
    arrivals: np.ndarray          # arrival times of every request of every pass
    o_all: np.ndarray             # output tokens of every request of every pass (aligned with arrivals)
    passes: int
    rate: float | None

    @property
    def n_total(self) -> int:
        return len(self.o_all)


def workload_stats(scn: Scenario) -> WorkloadStats:
    wl = scn.workload
    n = wl.num_requests()
    p, o, pre, arr = sample_workload(wl)
    if wl.arrival_rate_rps:
        span = float(arr[-1]) + 1.0
        arrivals = np.concatenate([arr + k * span for k in range(wl.passes)])
    else:
        arrivals = np.zeros(n * wl.passes)
    return WorkloadStats(p, o, pre, arrivals, np.tile(o, wl.passes), wl.passes, wl.arrival_rate_rps)


# =========================================================================== hardware configurations
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


def _tier_of(scn: Scenario, tier: str) -> tuple[str, int] | None:
    hw = scn.hardware.tiers().get(tier)
    return (hw.device, hw.count) if hw else None


def _platform(scn: Scenario, db: DeviceDB) -> dict[str, Any]:
    """The base scenario's host chassis and host CPUs (fixed across a sweep)."""
    out: dict[str, Any] = {}
    for slot in ("host", "cpu"):
        hw = scn.hardware.tiers().get(slot)
        out[slot] = db.get(hw.device).key if hw else None
        out[f"n_{slot}"] = hw.count if hw else 0
        out[f"{slot}_share"] = float(getattr(hw, "share", 1.0) or 1.0) if hw else 1.0
    return out


def expand_sweep(base: Scenario, sw: Sweep, db: DeviceDB) -> HwConfigs:
    """The cartesian product of the sweep's perf-relevant axes (axes absent from the sweep keep the base)."""
    gpus = [(db.get(a.device).key, c) for a in sw.gpus for c in a.count]
    pl = base.placement
    weights = [(w.hbm, w.dram, w.ssd, w.hdd) for w in sw.weights] if sw.weights else \
        [(pl.weights.hbm, pl.weights.dram, pl.weights.ssd, pl.weights.hdd)]

    def tier_opts(axis: list[DeviceCountAxis | None] | None, tier: str) -> list[tuple[str | None, int]]:
        if axis is None:
            t = _tier_of(base, tier)
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
        **_platform(base, db))
    return cfg


def configs_from_scenarios(scns: Sequence[Scenario], db: DeviceDB) -> HwConfigs:
    """One configuration per scenario (hardware and placement); the workload comes from the first."""
    rows = []
    for s in scns:
        pl = s.placement
        g = _tier_of(s, "gpu")
        if g is None:
            raise StoragecarbonError(f"{s.name}: the analytic model needs hardware.gpu")
        rows.append(((db.get(g[0]).key, g[1]), (pl.weights.hbm, pl.weights.dram, pl.weights.ssd, pl.weights.hdd),
                     *[(db.get(t[0]).key, t[1]) if t else (None, 0) for t in (_tier_of(s, x) for x in ("dram", "ssd", "hdd"))],
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
        **_platform(scns[0], db))


# =========================================================================== analytic model
@dataclass
class PerfResult:
    """Analytic steady-state results per configuration (arrays of length H)."""

    feasible: np.ndarray
    reason: list[str]
    reason_code: list[str]
    duration_s: np.ndarray
    ttft_p90_ms: np.ndarray
    ttft_mean_ms: np.ndarray
    tpot_p90_ms: np.ndarray
    tpot_mean_ms: np.ndarray
    saturated: np.ndarray
    batch: np.ndarray
    busy: dict[str, np.ndarray]       # slot -> unit-seconds (power-weighted for the GPU)
    units_s: dict[str, np.ndarray]    # slot -> embodied occupancy unit-seconds
    flash_written_b: dict[str, np.ndarray]
    kv_hit_share: np.ndarray          # share of prompt chunks served from a cache tier
    generated_tokens: float
    requests: int


def _figure_array(keys: Sequence[str | None], db: DeviceDB, attr: str, overrides: dict[str, DeviceOverride]) -> np.ndarray:
    cache: dict[str | None, float] = {}
    out = np.full(len(keys), np.nan)
    for i, k in enumerate(keys):
        if k not in cache:
            v = np.nan
            if k is not None:
                ov = overrides.get(k)
                if ov is not None and getattr(ov, attr, None) is not None:
                    v = float(getattr(ov, attr))
                else:
                    rec = db.get(k)
                    f = getattr(rec, attr, None)
                    if f is not None:
                        v = float(f.central)
                    elif attr == "capacity_gb":
                        v = float(rec.capacity_gb or np.nan)
            cache[k] = v
        out[i] = cache[k]
    return out


def _capacity(keys: Sequence[str | None], db: DeviceDB) -> np.ndarray:
    cache: dict[str | None, float] = {}
    out = np.zeros(len(keys))
    for i, k in enumerate(keys):
        if k not in cache:
            cache[k] = float(db.get(k).capacity_bytes or 0.0) if k else 0.0
        out[i] = cache[k]
    return out


def analytic_model(scn: Scenario, cfg: HwConfigs, db: DeviceDB, *, constants: ModelConstants | None = None,
                   overrides: dict[str, DeviceOverride] | None = None, ws: WorkloadStats | None = None) -> PerfResult:
    """Vectorised steady-state model of :func:`perfmodel.run_model`'s physics over all configurations.

    Prefill is compute-bound (2 x params x computed tokens + attention FLOPs over the GPUs' peak x
    efficiency x TP factor, plus one read of the HBM-resident weights); decode is memory-bound
    ((HBM weights + batch x mean context x KV bytes) / HBM bandwidth, or compute when larger);
    offloaded weights stream every step and overlap with GPU work as in the simulation; shared-
    prefix chunks hit the HBM prefix cache / LMCache CPU / disk tiers by an LRU reuse-distance
    model; the decode batch solves Little's law B = lambda x (outputs - 1) x cycle time, capped
    by max_num_seqs and by the KV space in HBM, beyond which the configuration is saturated and
    queues. Energy/occupancy follow from the step counts as in the simulation's accounting.
    """
    k = constants or load_constants(scn.calibration)
    ov = overrides or {}
    ws = ws or workload_stats(scn)
    H = len(cfg)
    dims = scn.model.dims()
    params = dims.param_count()
    W = scn.model.weight_bytes()
    kvb = scn.model.kv_bytes_per_token()
    chunk = scn.placement.kv.chunk_size
    cb = chunk * kvb
    reasons = [""] * H
    codes = [""] * H

    def flag(mask: np.ndarray, why: Callable[[int], str], code: str = "") -> None:
        for i in np.flatnonzero(mask):
            if not reasons[i]:
                reasons[i] = why(int(i))
                codes[i] = code or reasons[i]

    n = cfg.n_gpu
    gpu_bw = _figure_array(cfg.gpu, db, "read_gbps", ov)
    gpu_tf = _figure_array(cfg.gpu, db, "bf16_tflops", ov)
    gpu_cap = _capacity(cfg.gpu, db)
    flag(np.isnan(gpu_tf), lambda i: f"{cfg.gpu[i]}: no dense bf16 TFLOP/s in device_db (give device_overrides with a sourced figure)",
         "GPU has no compute figure in device_db")
    flag(np.isnan(gpu_bw), lambda i: f"{cfg.gpu[i]}: no HBM bandwidth in device_db", "GPU has no HBM bandwidth in device_db")
    hbm_bw = np.nan_to_num(gpu_bw) * 1e9 * n * k.hbm_efficiency
    tp = np.where(n > 1, k.tp_efficiency, 1.0)
    F = np.nan_to_num(gpu_tf) * 1e12 * n * k.compute_efficiency * tp
    pcie = k.pcie_gbps * 1e9 * n
    wf = cfg.w_frac
    w_hbm, w_dram, w_ssd, w_hdd = (W * wf[:, j] for j in range(4))
    hbm_cap = gpu_cap * n
    hbm_gb = scn.placement.kv.hbm_gb
    kv_hbm = np.full(H, hbm_gb * 1e9) if hbm_gb else hbm_cap * cfg.util - w_hbm
    flag(kv_hbm <= 0, lambda i: f"weights in HBM ({w_hbm[i] / 1e9:.0f} GB) leave no room for KV cache in "
                                f"{int(n[i])} x {gpu_cap[i] / 1e9:g} GB at utilisation {cfg.util[i]:g}",
         "weights in HBM leave no room for KV cache")
    kv_tokens = np.floor(np.maximum(kv_hbm, 0) / kvb)
    need_one = float(np.mean(ws.p + ws.o))
    flag((kv_tokens < need_one) & (kv_hbm > 0),
         lambda i: f"KV space in HBM ({kv_tokens[i]:.0f} tokens) is below one average request ({need_one:.0f} tokens)",
         "KV space in HBM below one request")

    # tiers present
    has_dram = np.array([d is not None for d in cfg.dram])
    has_ssd = np.array([d is not None for d in cfg.ssd])
    has_hdd = np.array([d is not None for d in cfg.hdd])
    flag((w_dram > 0) & ~has_dram, lambda i: "weights placed in DRAM but the configuration has no DRAM")
    flag((w_ssd > 0) & ~has_ssd, lambda i: "weights placed on SSD but the configuration has no SSD")
    flag((w_hdd > 0) & ~has_hdd, lambda i: "weights placed on HDD but the configuration has no HDD")
    flag((cfg.cpu_gb > 0) & ~has_dram, lambda i: "LMCache CPU tier needs DRAM")
    flag((cfg.disk_gb > 0) & ~has_ssd & ~has_hdd, lambda i: "LMCache disk tier needs an SSD or HDD")
    dram_cap = _capacity(cfg.dram, db) * cfg.n_dram
    ssd_cap = _capacity(cfg.ssd, db) * cfg.n_ssd
    hdd_cap = _capacity(cfg.hdd, db) * cfg.n_hdd
    disk_on_ssd = has_ssd
    disk_kv_b = cfg.disk_gb * 1e9
    flag(has_dram & (w_dram + cfg.cpu_gb * 1e9 > dram_cap),
         lambda i: f"DRAM holds {dram_cap[i] / 1e9:.0f} GB < weights {w_dram[i] / 1e9:.0f} GB + KV CPU tier {cfg.cpu_gb[i]:g} GB",
         "DRAM too small for offloaded weights + KV CPU tier")
    flag(has_ssd & (w_ssd + np.where(disk_on_ssd, disk_kv_b, 0) > ssd_cap),
         lambda i: f"SSD holds {ssd_cap[i] / 1e9:.0f} GB < weights + KV disk tier", "SSD too small")
    flag(has_hdd & (w_hdd + np.where(~disk_on_ssd, disk_kv_b, 0) > hdd_cap),
         lambda i: f"HDD holds {hdd_cap[i] / 1e9:.0f} GB < weights + KV disk tier", "HDD too small")

    def drive(keys: list[str | None], count: np.ndarray, used: np.ndarray, tier: str) -> tuple[np.ndarray, np.ndarray]:
        r = _figure_array(keys, db, "read_gbps", ov)
        w = _figure_array(keys, db, "write_gbps", ov)
        w = np.where(np.isnan(w), r, w)
        flag(used & np.isnan(r), lambda i: f"{keys[i]}: no read bandwidth in device_db ({tier} is used for weights or KV)",
             f"{tier} has no read bandwidth in device_db")
        return np.nan_to_num(r) * 1e9 * count * k.disk_efficiency, np.nan_to_num(w) * 1e9 * count * k.disk_efficiency

    ssd_used = (w_ssd > 0) | ((cfg.disk_gb > 0) & has_ssd)
    hdd_used = (w_hdd > 0) | ((cfg.disk_gb > 0) & ~has_ssd & has_hdd)
    ssd_r, ssd_w = drive(cfg.ssd, cfg.n_ssd, ssd_used, "ssd")
    hdd_r, hdd_w = drive(cfg.hdd, cfg.n_hdd, hdd_used, "hdd")
    dram_rd = _figure_array(cfg.dram, db, "read_gbps", ov)
    dram_bw = np.where(np.isnan(dram_rd), pcie * 4, np.nan_to_num(dram_rd) * 1e9 * cfg.n_dram)
    feasible = np.array([not r for r in reasons])
    safe = lambda x: np.where(x > 0, x, 1.0)  # noqa: E731

    # ---------------------------------------------------------------- KV cache hits (per request)
    nch = ws.p // chunk
    npre = ws.pre // chunk
    m = npre > 0
    f_pre = float(m.mean())
    u_pre = float((nch - npre)[m].mean()) if m.any() else 0.0
    u_non = float(nch[~m].mean()) if (~m).any() else 0.0
    n_pre = float(npre[m].mean()) if m.any() else 0.0
    U_pass = float((nch - npre).sum() + (npre.max() if m.any() else 0))
    K_h = np.floor(kv_tokens / (4 * chunk))
    cpu_on = (cfg.cpu_gb > 0) & has_dram
    disk_on = (cfg.disk_gb > 0) & (has_ssd | has_hdd)
    K_c = np.where(cpu_on, np.floor(cfg.cpu_gb * 1e9 / cb), 0)
    K_d = np.where(disk_on, np.floor(cfg.disk_gb * 1e9 / cb), 0)

    def p_gap(K: np.ndarray) -> np.ndarray:
        """P(prefix chunks survive in an LRU of K chunks between consecutive prefix requests)."""
        room = K - n_pre - u_pre
        if f_pre <= 0:
            return np.zeros_like(K)
        if u_non <= 0 or f_pre >= 1:
            return np.where(room >= 0, 1.0, 0.0)
        mm = np.floor(np.maximum(room, 0) / u_non)
        return np.where(room >= 0, 1.0 - (1.0 - f_pre) ** (mm + 1), 0.0)

    ph = p_gap(K_h)
    pc_cum = np.where(cpu_on, np.maximum(p_gap(K_c), ph), ph)
    pd_cum = np.where(disk_on, np.maximum(p_gap(K_d), pc_cum), pc_cum)
    pre_h, pre_c, pre_d = ph, pc_cum - ph, pd_cum - pc_cum
    pre_miss = 1.0 - pd_cum
    # unique chunks on later passes: an LRU hit only if one pass's chunks fit the tier
    later = ws.passes - 1
    fit_h = K_h >= U_pass
    fit_c = cpu_on & (K_c >= U_pass) & ~fit_h
    fit_d = disk_on & (K_d >= U_pass) & ~fit_h & ~fit_c
    fit_any = fit_h | fit_c | fit_d

    P = float(ws.passes)
    n_req1 = len(ws.p)
    N = n_req1 * P
    pre_chunks_pass = float(npre.sum())            # prefix chunk uses per pass
    uni_chunks_pass = float((nch - npre).sum())    # unique chunk uses per pass
    first_pre = float(npre.max()) if m.any() else 0.0
    # chunk counts over the whole run
    pre_uses = pre_chunks_pass * P - first_pre
    c_hbm = pre_uses * pre_h + uni_chunks_pass * later * fit_h
    c_cpu = pre_uses * pre_c + uni_chunks_pass * later * fit_c
    c_disk = pre_uses * pre_d + uni_chunks_pass * later * fit_d
    c_miss = pre_uses * pre_miss + first_pre + uni_chunks_pass * (1 + later * ~fit_any)
    total_chunks = pre_chunks_pass * P + uni_chunks_pass * P
    hit_share = (c_hbm + c_cpu + c_disk) / max(total_chunks, 1.0)
    # compute per request: tokens and attention FLOPs (mixture over prefix hit / miss / all-hit)
    q_pre = pd_cum  # any-tier hit of the prefix chunks
    hit_pre_tok = (npre * chunk).astype(float)
    hit_all_tok = (nch * chunk).astype(float)
    p = ws.p.astype(float)

    def lin_att(hit: np.ndarray) -> tuple[float, float]:
        c = p - hit
        return float(c.sum()), float((c * (hit + c / 2)).sum())

    L0, A0 = lin_att(np.zeros_like(p))
    Lp, Ap = lin_att(np.where(m, hit_pre_tok, 0.0))
    La, Aa = lin_att(hit_all_tok)
    lin_pass1 = q_pre * Lp + (1 - q_pre) * L0
    att_pass1 = q_pre * Ap + (1 - q_pre) * A0
    lin_later = np.where(fit_any, La, lin_pass1)
    att_later = np.where(fit_any, Aa, att_pass1)
    lin_tot = lin_pass1 + later * lin_later
    att_tot = att_pass1 + later * att_later
    att_coef = 4.0 * dims.layers * dims.num_heads * dims.head_dim
    gpu_pf_s_total = (2.0 * params * lin_tot + att_coef * att_tot) / safe(F)   # over all requests
    a_pf = gpu_pf_s_total / N                                               # per request
    # p90 request: computed tokens at the 90th percentile of the mixture
    c_miss90 = float(np.percentile(p, 90))
    c_hit90 = float(np.percentile(p - np.where(m, hit_pre_tok, 0.0), 90))
    c90 = q_pre * c_hit90 + (1 - q_pre) * c_miss90
    c_mean = lin_tot / N
    a90 = a_pf * np.where(c_mean > 0, c90 / safe(c_mean), 1.0)
    rbw_disk = np.where(disk_on_ssd, ssd_r, hdd_r)
    wbw_disk = np.where(disk_on_ssd, ssd_w, hdd_w)
    n_disk_units = np.where(disk_on_ssd, cfg.n_ssd, cfg.n_hdd)
    load_total = c_cpu * cb / safe(pcie) + c_disk * (cb / safe(rbw_disk) + cb / safe(pcie))
    ld = load_total / N

    # ---------------------------------------------------------------- step times
    t_off = np.where(w_dram > 0, w_dram / safe(pcie), 0) + np.where(w_ssd > 0, w_ssd / safe(ssd_r), 0) + \
        np.where(w_hdd > 0, w_hdd / safe(hdd_r), 0)
    ovl, oh = k.overlap, k.step_overhead_s

    def step(t: np.ndarray) -> np.ndarray:
        return np.maximum(t, t_off) + (1 - ovl) * np.minimum(t, t_off) + oh

    w_read = w_hbm / safe(hbm_bw)
    o_all = ws.o_all.astype(float)
    dec_tok = float(np.maximum(o_all - 1, 0).sum())
    O_dec = dec_tok / N
    po = np.maximum(ws.o.astype(float) - 1, 0)
    c_dec = float((po * (ws.p + ws.o / 2.0)).sum() / max(po.sum(), 1e-9))

    def t_dec(B: np.ndarray) -> np.ndarray:
        return np.maximum((w_hbm + B * c_dec * kvb) / safe(hbm_bw), 2.0 * params * B / safe(F))

    def t_pf_in(kk: np.ndarray) -> np.ndarray:
        return kk * a_pf + w_read + kk * ld * (1 - ovl)

    budget = float(scn.engine.max_num_batched_tokens)
    k_max = np.maximum(1.0, np.floor(budget / max(float(p.mean()), 1.0)))
    B_cap = np.maximum(1.0, np.minimum(cfg.max_seqs, np.floor(kv_tokens / max(need_one, 1.0))))

    def cycle(B: np.ndarray, X: np.ndarray, tau0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode-to-decode cycle time with the prefill steps that admissions X (req/s) add."""
        s_d = step(t_dec(B))
        tau = tau0
        for _ in range(12):
            lam_tau = X * tau
            q = -np.expm1(-lam_tau)
            kbar = np.clip(lam_tau / np.maximum(q, 1e-12), 1.0, k_max)
            n_pf = lam_tau / kbar
            tau = s_d + n_pf * step(t_pf_in(kbar))
        lam_tau = X * tau
        q = -np.expm1(-lam_tau)
        kbar = np.clip(lam_tau / np.maximum(q, 1e-12), 1.0, k_max)
        return tau, kbar, lam_tau / kbar

    lam = float(ws.rate) if ws.rate else 0.0
    offline = ws.rate is None
    if offline:
        sat = np.ones(H, dtype=bool)
    else:
        tau_cap, _, _ = cycle(B_cap, np.full(H, lam), step(t_dec(B_cap)))
        sat = lam * O_dec * tau_cap >= B_cap
    # ---- non-saturated: bisection on the time-average decode population L
    lo = np.zeros(H)
    hi = B_cap.copy()
    tau = step(t_dec(np.ones(H)))
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        Bm = np.clip(mid / np.maximum(-np.expm1(-mid), 1e-12), 1.0, B_cap)
        tau, _, _ = cycle(Bm, np.full(H, lam), tau)
        g = lam * O_dec * tau - mid
        lo = np.where(g > 0, mid, lo)
        hi = np.where(g > 0, hi, mid)
    L = 0.5 * (lo + hi)
    B_ns = np.clip(L / np.maximum(-np.expm1(-L), 1e-12), 1.0, B_cap)
    # ---- saturated: batch at its cap, admissions at the completion rate
    if offline:
        B_sat = np.minimum(B_cap, max(N, 1.0))
    else:
        B_sat = B_cap
    X = B_sat / (O_dec * step(t_dec(B_sat)) + 1e-12)
    tau_s = step(t_dec(B_sat))
    for _ in range(20):
        tau_s, _, _ = cycle(B_sat, X, tau_s)
        X = B_sat / (max(O_dec, 1e-9) * tau_s)
    B = np.where(sat, B_sat, B_ns)
    Xadm = np.where(sat, X, lam)
    tau, kbar, n_pf_cyc = cycle(B, Xadm, np.where(sat, tau_s, tau))
    s_d = step(t_dec(B))
    s_pf = step(t_pf_in(kbar))
    n_dec = dec_tok / B
    n_pf = N / kbar
    busy_time = n_dec * s_d + n_pf * s_pf

    # ---- saturated configurations: FIFO admission into B_cap slots (ramp-up, queueing, drain)
    arr = ws.arrivals
    order = np.argsort(arr, kind="stable")
    arr_s, o_s = arr[order], o_all[order]
    ttft_sat_p90 = np.zeros(H)
    ttft_sat_mean = np.zeros(H)
    end_sat = np.zeros(H)
    si = np.flatnonzero(sat & feasible)
    if len(si):
        c = np.minimum(B_cap[si], len(arr_s)).astype(np.int64)
        cmax = int(c.max())
        free = np.zeros((len(si), cmax))
        free[np.arange(cmax)[None, :] >= c[:, None]] = np.inf
        s_pf_si = s_pf[si]
        tau_si = tau[si]
        waits = np.zeros((len(si), len(arr_s)))
        rows = np.arange(len(si))
        end = np.zeros(len(si))
        for i in range(len(arr_s)):
            j = np.argmin(free, axis=1)
            st = np.maximum(arr_s[i], free[rows, j])
            fin = st + s_pf_si + (o_s[i] - 1) * tau_si
            free[rows, j] = fin
            waits[:, i] = st - arr_s[i]
            end = np.maximum(end, fin)
        resid = 0.5 * step(t_dec(B))[si]
        ttft_sat_p90[si] = np.percentile(waits, 90, axis=1) + resid + s_pf_si
        ttft_sat_mean[si] = waits.mean(axis=1) + resid + s_pf_si
        end_sat[si] = end
        B_eff = np.clip(dec_tok * tau_si / np.maximum(end - arr_s[0], 1e-9), 1.0, B_cap[si])
        B[si] = B_eff
        s_d = step(t_dec(B))
        n_dec = dec_tok / B
        busy_time = n_dec * s_d + n_pf * s_pf

    # ---------------------------------------------------------------- latency
    ord_o = np.sort(ws.o)
    o_med = float(np.median(ws.o))
    tpot_mean = tau
    tpot_p90 = tau + 1.2816 * s_pf * np.sqrt(n_pf_cyc / max(o_med - 1, 1.0))
    s_pf90 = step(t_pf_in(kbar) + (a90 - a_pf))
    span = float(arr.max() - arr.min()) if len(arr) else 0.0
    # decode running fraction of time (for the residual wait of a new arrival)
    if offline:
        ttft_p90 = ttft_sat_p90 + (s_pf90 - s_pf)
        ttft_mean = ttft_sat_mean
    else:
        rho = np.clip(n_dec * s_d / np.maximum(span + tau * O_dec, 1e-9), 0, 1)
        ttft_p90 = np.where(sat, ttft_sat_p90 + (s_pf90 - s_pf), 0.9 * rho * s_d + s_pf90)
        ttft_mean = np.where(sat, ttft_sat_mean, 0.5 * rho * s_d + s_pf)
    # ---------------------------------------------------------------- duration
    if offline:
        duration = np.where(sat, end_sat, busy_time)
    else:
        # the run ends when the last of the late, long requests finishes
        late = np.argsort(arr)[-max(64, int(0.1 * len(arr))):]
        ends = arr[late][None, :] + (o_all[late][None, :] - 1) * tau[:, None]
        end_ns = ends.max(axis=1) + ttft_mean
        duration = np.where(sat, end_sat - float(arr.min()), end_ns)
        duration = np.maximum(duration, busy_time)

    # ---------------------------------------------------------------- busy and occupancy
    steps = n_dec + n_pf
    tg_d = t_dec(B)
    iow_d = np.maximum(0, s_d - tg_d - oh)
    tg_pf = kbar * a_pf + w_read
    iow_pf = np.maximum(0, s_pf - t_pf_in(kbar) - oh)
    gpu_busy = n * (n_dec * (tg_d * k.power_frac_decode + iow_d * k.power_frac_io_wait)
                    + n_pf * (tg_pf * k.power_frac_prefill + iow_pf * k.power_frac_io_wait))
    host_busy = cfg.n_host * busy_time * k.host_busy_frac
    cpu_busy = cfg.n_cpu * busy_time * k.host_busy_frac
    dram_busy = steps * np.where(w_dram > 0, w_dram / safe(dram_bw), 0) + \
        np.where(cpu_on, (c_cpu + c_miss) * cb / safe(dram_bw), 0)
    ssd_busy = steps * np.where(w_ssd > 0, w_ssd / safe(ssd_r) * cfg.n_ssd, 0)
    hdd_busy = steps * np.where(w_hdd > 0, w_hdd / safe(hdd_r) * cfg.n_hdd, 0)
    disk_io_busy = np.where(disk_on, (c_disk * cb / safe(rbw_disk) + c_miss * cb / safe(wbw_disk)) * n_disk_units, 0)
    ssd_busy = ssd_busy + np.where(disk_on_ssd, disk_io_busy, 0)
    hdd_busy = hdd_busy + np.where(~disk_on_ssd, disk_io_busy, 0)
    written_disk = np.where(disk_on, c_miss * cb, 0.0)
    puts = np.where(disk_on, c_miss, 0.0)
    fill_mean = np.where(puts <= K_d, puts / 2.0, K_d * (1 - K_d / (2 * np.maximum(puts, 1e-9)))) * cb
    D = duration

    def occ(resident: np.ndarray, keys: list[str | None], count: np.ndarray) -> np.ndarray:
        cap = _capacity(keys, db)
        return np.minimum(resident / safe(cap) * D, count * D) * (cap > 0)

    units = {
        "gpu": n * D,
        "host": np.full(H, float(cfg.n_host) * cfg.host_share) * D,
        "cpu": np.full(H, float(cfg.n_cpu) * cfg.cpu_share) * D,
        "dram": occ(w_dram + np.where(cpu_on, cfg.cpu_gb * 1e9, 0), cfg.dram, cfg.n_dram),
        "ssd": occ(w_ssd + np.where(disk_on_ssd, fill_mean, 0), cfg.ssd, cfg.n_ssd),
        "hdd": occ(w_hdd + np.where(~disk_on_ssd, fill_mean, 0), cfg.hdd, cfg.n_hdd),
    }
    busy = {"gpu": gpu_busy, "host": host_busy, "cpu": cpu_busy, "dram": dram_busy, "ssd": ssd_busy, "hdd": hdd_busy}
    written = {"ssd": np.where(disk_on_ssd, written_disk, 0.0), "hdd": np.where(~disk_on_ssd, written_disk, 0.0)}
    bad = ~feasible
    for arr_ in (duration, ttft_p90, tpot_p90):
        arr_[bad] = np.nan
    return PerfResult(feasible=feasible, reason=reasons, reason_code=codes, duration_s=duration, ttft_p90_ms=ttft_p90 * 1e3,
                      ttft_mean_ms=ttft_mean * 1e3, tpot_p90_ms=tpot_p90 * 1e3, tpot_mean_ms=tpot_mean * 1e3,
                      saturated=sat, batch=B, busy=busy, units_s=units, flash_written_b=written,
                      kv_hit_share=hit_share, generated_tokens=float(o_all.sum()), requests=int(N))


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
        idle[i], dyn[i] = kd.idle_w, kd.dyn_w
        if kd.avg_w is not None:
            avg[i] = kd.avg_w
        if kd.te_g is not None and kd.tbw_b is not None:
            wear[i] = kd.te_g / kd.tbw_b
        me[i] = kd.te_g is None
        mp[i] = kd.no_power
    return _KeyTable(uniq, idle, dyn, wear, avg, me, mp)


def _life_for(slot: str, key: str | None, variant: LifetimeVariant) -> float | None:
    if key is not None and key in variant.years:
        return variant.years[key]
    return variant.years.get(slot)


def plan_carbon(perf: PerfResult, cfg: HwConfigs, world: World, grids: Sequence[GridSpec], pue: Triple,
                lifetimes: Sequence[LifetimeVariant], allocation: str, *, chunk: int = 512,
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
    cif = ci * pue_d[None, :] / J_PER_KWH                 # g per J
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
            opj += sh * ((cnt * D_s[hs])[:, None] * tab.idle[ki] + perf.busy[s][hs][:, None] * tab.dyn[ki]) \
                + units[:, None] * tab.avg[ki]
            time = units[:, None, None] * R[ridx[s][hs]]          # [h, L, D]
            if s in ("ssd", "hdd") and allocation in ("wear", "max"):
                wear = (perf.flash_written_b[s][hs][:, None] * tab.wear[ki])[:, None, :]
                if allocation == "wear":
                    # as attribute(): rated flash by wear, other devices by time share
                    rated = np.broadcast_to((np.asarray(tab.wear[ki]) > 0).reshape(len(ki), -1).any(axis=1)[:, None, None],
                                            time.shape)
                    emb += np.where(rated, np.broadcast_to(wear, time.shape), time)
                else:
                    emb += np.maximum(time, wear)
            else:
                emb += time
        op = opj[:, None, :] * cif[None, :, :]                       # [h, G, D]
        tot = (emb[:, :, None, :] + op[:, None, :, :]) * (1000.0 / gen)  # [h, L, G, D] per 1k tokens
        if draws_of is not None:
            draws_of.update({int(h): tot[k] for k, h in enumerate(hs)})
        out_q[hs] = np.moveaxis(np.percentile(tot, quantiles, axis=-1), 0, -1)
        out_rq[hs] = np.percentile(tot, robust_q, axis=-1)
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
    k = constants or load_constants(base.calibration)
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
    idle_ov = {kk: v.idle_w.triple(v.source) for kk, v in sw.device_overrides.items() if v.idle_w is not None}
    world = World(db, sw.draws, sw.seed, idle_overrides=idle_ov)
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
    car = plan_carbon(perf, cfg, world, grids, pue, lifetimes, base.carbon.allocation, robust_q=rq, candidate=eligible)
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
            "constants": {kk: v for kk, v in k.__dict__.items()},
            "device_overrides": {kk: v.model_dump() for kk, v in sw.device_overrides.items()},
            "pairing": "one World of draws: every configuration sees the same device-model, grid-quantile and PUE draws",
            "sampling": "log-triangular on (low, best, high) per input, as attribute()",
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
