"""attribute(): usage x device data x grid -> embodied and operational gCO2e per device, phase and draw.

Pure: no IO, no globals; every input is an argument. It reads each device's usage
(:class:`~storagecarbon.carbon.usage.DeviceUse`), draws the device's figures from the keyed
sampler and applies the kernel (:mod:`storagecarbon.carbon.kernel`). ``profile``, ``report`` and
``compare`` all call it; ``plan`` calls the same kernel over arrays of configurations.

A figure without data is NaN in the per-draw arrays and an entry of ``missing``; totals are sums
over what is known and ``excludes`` says what they leave out. Nothing missing becomes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np

from . import kernel as K
from .grid import grid_spec_for, pue_triple
from .sampling import GridSpec, KeyedSampler, Triple, band
from .usage import DeviceUse, Usage, uses_from_usage

GENERIC_PER_GB = {"dram": "ddr4-rdimm-per-gb", "ssd": "ssd-enterprise-tlc-per-gb", "hdd": "hdd-nearline-per-gb"}
ENDURANCE_RATING_YEARS = 5.0  # every TBW in device_db is a 5-year (warranty period) rating; docs/device_db.md


Scope = Literal["dedicated", "shared"]
Allocation = Literal["time", "wear", "max"]


@dataclass(frozen=True)
class CarbonInputs:
    """Grid, PUE, lifetime overrides, scope and policy for one attribution."""

    intensity_gco2e_per_kwh: Triple | GridSpec
    pue: Triple
    allocation: Allocation = "max"
    lifetime_overrides_years: dict[str, float] = field(default_factory=dict)  # device id, device key or tier
    draws: int = 2000
    seed: int = 0
    region: str | None = None
    scope: Scope = "dedicated"

    @property
    def grid(self) -> GridSpec:
        x = self.intensity_gco2e_per_kwh
        if isinstance(x, GridSpec):
            return x
        return GridSpec(f"fixed:{x.low}:{x.best}:{x.high}", x)


@dataclass
class DeviceBasis:
    """How each figure of one device was obtained (the report's provenance)."""

    id: str
    tier: str
    db_key: str | None
    name: str
    count: int
    kind: str | None = None
    energy_basis: str = "missing"      # measured | modeled | missing
    energy: str = ""                   # the method in words
    occupancy: str = ""
    embodied_source: str = ""
    power_source: str = ""
    lifetime: Triple | None = None
    embodied_unit_kg: Triple | None = None
    held_units_s: float | None = None
    occupied_units_s: float | None = None
    idle_capacity_share: float | None = None
    stand_in: bool = False
    overridden: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class LedgerRow:
    """One offload tier's account, per draw (g); ``saving`` None when it cannot be computed."""

    tier: str
    kind: str                          # kv | weights
    devices: list[str]
    cost_g: np.ndarray | None
    wear_g: np.ndarray | None
    saving_g: np.ndarray | None
    hit_tokens: float | None
    basis: str
    cost_best_g: float | None = None
    saving_best_g: float | None = None


@dataclass
class Attribution:
    """Per-draw carbon and energy of every (device, phase) cell, plus provenance and workload."""

    devices: list[DeviceBasis]
    phases: list[str]
    embodied_g: np.ndarray        # [device, phase, draw], NaN where missing
    operational_g: np.ndarray     # [device, phase, draw], NaN where missing
    energy_j: np.ndarray          # [device, phase, draw], NaN where missing
    embodied_best_g: np.ndarray   # [device, phase] at central values
    operational_best_g: np.ndarray
    energy_best_j: np.ndarray
    wear_g: np.ndarray            # [device, draw] flash wear share (NaN: not rated flash)
    wear_share_won: np.ndarray    # [device] share of draws in which wear beat time
    usage: Usage | None
    inputs: CarbonInputs
    ci: np.ndarray                # [draw] grid intensity
    pue: np.ndarray               # [draw]
    workload: dict[str, float] = field(default_factory=dict)
    phase_time_s: np.ndarray | None = None
    missing: list[dict[str, str]] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    coverage: float | None = 1.0
    ledger: list[LedgerRow] = field(default_factory=list)
    wear: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def total_g(self) -> np.ndarray:
        return np.nansum(self.embodied_g, axis=(0, 1)) + np.nansum(self.operational_g, axis=(0, 1))

    def tiers(self) -> list[str]:
        order = ["hbm", "host", "dram", "ssd", "hdd", "remote"]
        seen = {d.tier for d in self.devices}
        return [t for t in order if t in seen] + sorted(seen - set(order))

    def tier_mask(self, tier: str) -> np.ndarray:
        return np.array([d.tier == tier for d in self.devices], dtype=bool)


def _life(u: DeviceUse, overrides: dict[str, float]) -> float | None:
    for k in (u.id, u.key, u.tier):
        if k is not None and k in overrides:
            return float(overrides[k])
    return None


def _miss(out: list[dict[str, str]], device: str, fld: str, reason: str) -> None:
    out.append({"device": device, "field": fld, "reason": reason})


def attribute(usage: Usage, db: Any, inputs: CarbonInputs, *, sampler: KeyedSampler | None = None,
              scenario: dict[str, Any] | None = None) -> Attribution:
    """Attribute an aggregated trace to gCO2e (pure function of its arguments)."""
    summ = usage.summary or {}
    workload = {
        "requests": float(summ.get("requests") or usage.workload.get("requests_done") or usage.requests_from_markers or 0),
        "prompt_tokens": float(summ.get("prompt_tokens") or usage.workload.get("prompt_tokens") or 0),
        "generated_tokens": float(summ.get("generated_tokens") or usage.workload.get("generated_tokens") or 0),
    }
    a = attribute_uses(uses_from_usage(usage, db), usage.phases, db, inputs, sampler=sampler,
                       scenario=scenario if scenario is not None else usage.header.scenario, workload=workload)
    a.usage = usage
    if usage.truncated:
        a.warnings.append("trace was cut short (no footer): figures cover the recorded part only")
    a.warnings.extend(usage.notes)  # faults while recording: failed command, sensor gaps, counter resets
    return a


def attribute_uses(uses: Sequence[DeviceUse], phases: Sequence[str], db: Any, inputs: CarbonInputs, *,
                   sampler: KeyedSampler | None = None, scenario: dict[str, Any] | None = None,
                   workload: dict[str, float] | None = None) -> Attribution:
    """The kernel over the devices of one run: per-draw cells [device, phase, draw]."""
    sampler = sampler or KeyedSampler(inputs.draws, inputs.seed)
    n = sampler.draws
    n_dev, n_ph = len(uses), len(phases)
    emb = np.full((n_dev, n_ph, n), np.nan)
    opj = np.full((n_dev, n_ph, n), np.nan)
    emb_b = np.full((n_dev, n_ph), np.nan)
    opj_b = np.full((n_dev, n_ph), np.nan)
    wear_d = np.full((n_dev, n), np.nan)
    won_share = np.zeros(n_dev)
    bases: list[DeviceBasis] = []
    missing: list[dict[str, str]] = []
    excludes: list[str] = []
    wear_rows: list[dict[str, Any]] = []
    plausible_missing_g: list[float | None] = []  # best-value estimate of each excluded part (coverage)
    scope, policy = inputs.scope, inputs.allocation
    overrides = getattr(db, "overrides", {}) or {}
    grid_best = inputs.grid.best
    cif_best = K.operational_g(1.0, grid_best, inputs.pue.best)  # g per J at central values

    for i, u in enumerate(uses):
        rec = db.resolve(u.key) if u.key else None
        b = DeviceBasis(u.id, u.tier, u.key, u.name or u.id, u.count, kind=rec.kind if rec else None,
                        stand_in=u.stand_in)
        bases.append(b)
        if rec is not None and rec.key in overrides:
            b.overridden = sorted(k for k in overrides[rec.key] if k != "source")
        if u.stand_in:
            b.warnings.append(f"{u.id}: device_db record {u.key} is a stand-in ({u.note or 'hardware unknown'})")
        T = u.phase_time_s
        # ---------------------------------------------------------------- unknown device
        if rec is None:
            _miss(missing, u.id, "device_db record", f"no device_db record {u.key!r}")
            b.warnings.append(f"{u.id}: no device_db record ({u.key!r}); its carbon is missing, not zero")
            excludes.append(f"{u.id} embodied")
            plausible_missing_g.append(None)
            if u.measured_j is not None:
                opj[i], opj_b[i] = u.measured_j[:, None], u.measured_j
                b.energy_basis, b.energy = "measured", u.energy_method
            else:
                excludes.append(f"{u.id} operational")
                plausible_missing_g.append(None)
                b.energy = "missing: no device record"
            b.occupancy = "missing: no device record"
            continue
        f = sampler.device(rec)
        kind = rec.kind
        held = K.held_units_s(kind, scope, u.count, u.share, T, u.occupied_units_s)
        b.held_units_s = None if held is None else float(np.sum(held))
        b.occupied_units_s = None if u.occupied_units_s is None else float(np.sum(u.occupied_units_s))
        b.idle_capacity_share = K.idle_capacity_share(b.occupied_units_s, b.held_units_s)
        if kind in K.CAPACITY_KINDS:
            b.occupancy = (f"whole devices: {u.count} x run time (scope dedicated)" if scope == "dedicated"
                           else f"{u.occupancy_basis} (scope shared)")
        else:
            b.occupancy = f"whole units: {u.count} x run time" if u.share == 1.0 else \
                f"{u.count} unit(s) x share {u.share:.4g} x run time"
        cap_b = u.capacity_b or rec.capacity_bytes
        # ---------------------------------------------------------------- operational energy
        if u.measured_j is not None:
            opj[i], opj_b[i] = u.measured_j[:, None], u.measured_j
            b.energy_basis, b.energy, b.power_source = "measured", u.energy_method, "measured"
        elif f.avg_w is not None:
            b.power_source = f.sources.get("avg_w", "")
            if held is None:
                _miss(missing, u.id, "occupancy", "shared scope charges occupied capacity; the trace has no occupancy reading")
                excludes.append(f"{u.id} operational")
                plausible_missing_g.append(None)
                b.energy = "missing: average power needs the occupied capacity (no reading)"
            else:
                opj[i] = K.average_energy_j(f.avg_w[None, :], held[:, None])
                opj_b[i] = K.average_energy_j(f.best["avg_w"], held)
                b.energy_basis = "modeled"
                b.energy = f"modeled: average {kind.upper()} power x capacity-time held (CCF per-capacity method)"
        else:
            parts_d, parts_b, said = [], [], []
            if f.idle_w is not None and held is not None:
                parts_d.append(K.idle_energy_j(f.idle_w[None, :], held[:, None]))
                parts_b.append(K.idle_energy_j(f.best["idle_w"], held))
                said.append("idle x time held")
            elif f.idle_w is not None:
                _miss(missing, u.id, "occupancy", "shared scope charges idle power by occupied capacity; no reading")
                excludes.append(f"{u.id} idle energy")
                idle_b = f.best["idle_w"]
                plausible_missing_g.append(None if idle_b is None else idle_b * u.count * float(T.sum()) * cif_best)
            elif f.dyn_w is not None:
                _miss(missing, u.id, "idle_w", f"no idle power in device_db ({rec.key})")
                excludes.append(f"{u.id} idle energy")
                plausible_missing_g.append(None)
            if f.dyn_w is not None and u.busy_s is not None:
                parts_d.append(K.dynamic_energy_j(f.dyn_w[None, :], u.busy_s[:, None], u.share))
                parts_b.append(K.dynamic_energy_j(f.best["dyn_w"], u.busy_s, u.share))
                said.append("(active - idle) x busy")
            elif f.dyn_w is not None:
                _miss(missing, u.id, "busy_s", "no busy-time channel in the trace")
                excludes.append(f"{u.id} dynamic energy")
                # plausible upper bound: busy the whole time
                dyn_b = f.best["dyn_w"]
                plausible_missing_g.append(None if dyn_b is None
                                           else dyn_b * u.count * u.share * float(T.sum()) * cif_best)
            elif f.idle_w is not None:
                _miss(missing, u.id, "active_w", f"no active power in device_db ({rec.key})")
                excludes.append(f"{u.id} dynamic energy")
                plausible_missing_g.append(None)
            if f.no_power:
                _miss(missing, u.id, "power", f"no idle/active power in device_db ({rec.key})")
                excludes.append(f"{u.id} operational")
                gen = db.resolve(GENERIC_PER_GB.get(kind, "")) if kind in GENERIC_PER_GB else None
                if gen is not None and gen.active_w is not None and cap_b:
                    plausible_missing_g.append(gen.active_w.central * cap_b / 1e9 * u.count * float(T.sum()) * cif_best)
                else:
                    plausible_missing_g.append(None)
                b.warnings.append(f"{u.id}: no power figures in device_db ({rec.key}); operational energy missing")
            if parts_d:
                opj[i] = sum(parts_d)
                opj_b[i] = sum(parts_b)
                b.energy_basis = "modeled"
                b.energy = "modeled: " + " + ".join(said) + ", device_db power" + (
                    f" ({u.energy_method})" if u.energy_method else "")
                b.power_source = "; ".join(s for s in (f.sources.get("idle_w"), f.sources.get("active_w")) if s)
            elif not f.no_power:
                b.energy = "missing: " + "; ".join(m["reason"] for m in missing if m["device"] == u.id)
        # ---------------------------------------------------------------- embodied
        life_fixed = _life(u, inputs.lifetime_overrides_years)
        b.lifetime = Triple.fixed(life_fixed, "scenario override") if life_fixed is not None else f.triples["lifetime_years"]
        if f.te_g is None:
            _miss(missing, u.id, "embodied_kgco2e", f"no embodied figure in device_db ({rec.key})")
            excludes.append(f"{u.id} embodied")
            gen = db.resolve(GENERIC_PER_GB[kind]) if kind in GENERIC_PER_GB else None
            if gen is not None and gen.embodied_kgco2e is not None and cap_b and held is not None:
                te_gen = gen.embodied_total_triple()[1] * cap_b / 1e9 * 1000.0
                plausible_missing_g.append(float(np.sum(K.time_share_g(held, te_gen, f.best["life_s"]))))
            else:
                plausible_missing_g.append(None)
            b.warnings.append(f"{u.id}: no embodied figure in device_db ({rec.key}); embodied carbon missing")
            continue
        b.embodied_unit_kg = f.triples["embodied_kg"]
        b.embodied_source = f.sources.get("embodied_kg", "")
        if held is None:
            _miss(missing, u.id, "occupancy", "shared scope charges occupied capacity; the trace has no occupancy reading")
            excludes.append(f"{u.id} embodied")
            plausible_missing_g.append(None)
            b.warnings.append(f"{u.id}: no occupancy (resident or reserved bytes); time-share embodied missing")
            continue
        life_d = f.life_s if life_fixed is None else np.full(n, life_fixed * K.SECONDS_PER_YEAR)
        life_b = f.best["life_s"] if life_fixed is None else life_fixed * K.SECONDS_PER_YEAR
        time_d = K.time_share_g(held[:, None], f.te_g[None, :], life_d[None, :])
        time_b = K.time_share_g(held, f.best["te_g"], life_b)
        rated = kind == "ssd" and f.tbw_b is not None
        written = u.written_b
        if rated and written is None:
            if policy in ("wear", "max"):
                _miss(missing, u.id, "bytes_written", "no write counter in the trace: wear cannot be computed")
                excludes.append(f"{u.id} wear")
                plausible_missing_g.append(None)
                b.warnings.append(f"{u.id}: no write counter; charged by time share (wear unknown)")
            rated = False
        if rated and written is not None and f.tbw_b is not None:  # rated implies both
            wd = K.wear_g(written[:, None], f.te_g[None, :], f.tbw_b[None, :])
            wb = K.wear_g(written, f.best["te_g"], f.best["tbw_b"])
            wear_d[i] = wd.sum(axis=0)
        else:
            wd, wb = time_d, time_b
            if kind == "ssd" and policy == "wear" and f.tbw_b is None:
                b.warnings.append(f"{u.id}: no endurance rating; charged by time share instead of wear")
        emb[i], won = K.allocate(time_d, wd, policy, rated, phase_axis=0)
        emb_b[i] = K.allocate(time_b[:, None], wb[:, None], policy, rated, phase_axis=0)[0][:, 0]
        won_share[i] = float(np.mean(won))
        # ---------------------------------------------------------------- flash wear
        if kind == "ssd" and cap_b and written is not None:
            T_run = float(T.sum())
            w_tot = float(written.sum())
            dwpd = K.drive_writes_per_day(w_tot, cap_b, u.count, T_run)
            row: dict[str, Any] = {"device": u.id, "drive_writes_per_day": dwpd, "rated_dwpd": None,
                                   "over_rating": None, "implied_lifetime_years": None, "bytes_written": w_tot}
            if f.best["tbw_b"] is not None:
                rd = K.rated_dwpd(f.best["tbw_b"], cap_b, ENDURANCE_RATING_YEARS)
                row["rated_dwpd"] = rd
                row["over_rating"] = bool(dwpd is not None and dwpd > rd)
                row["implied_lifetime_years"] = K.implied_lifetime_years(f.best["tbw_b"], w_tot, u.count, T_run)
                if row["over_rating"]:
                    b.warnings.append(f"{u.id}: the run writes {dwpd:.3g} drive writes per day, above the drive's "
                                      f"rating of {rd:.3g}; implied drive lifetime "
                                      f"{row['implied_lifetime_years']:.3g} years")
            else:
                _miss(missing, u.id, "endurance_tbw", f"no rated endurance in device_db ({rec.key}); wear not judged")
            wear_rows.append(row)

    grid = inputs.grid
    ci = sampler.grid(grid)
    pue = sampler.pue(inputs.pue)
    op_g = K.operational_g(opj, ci[None, None, :], pue[None, None, :])
    op_b = K.operational_g(opj_b, grid_best, inputs.pue.best)
    warnings: list[str] = [w for b in bases for w in b.warnings]
    covered = float(np.nansum(emb_b) + np.nansum(op_b))
    if not plausible_missing_g:
        coverage: float | None = 1.0
    elif any(p is None for p in plausible_missing_g):
        coverage = None
    else:
        tot = covered + float(sum(plausible_missing_g))  # type: ignore[arg-type]
        coverage = covered / tot if tot > 0 else None
    a = Attribution(devices=bases, phases=list(phases), embodied_g=emb, operational_g=op_g, energy_j=opj,
                    embodied_best_g=emb_b, operational_best_g=op_b, energy_best_j=opj_b, wear_g=wear_d,
                    wear_share_won=won_share, usage=None, inputs=inputs, ci=ci, pue=pue,
                    workload=dict(workload or {}), phase_time_s=uses[0].phase_time_s if uses else np.zeros(n_ph),
                    missing=missing, excludes=sorted(set(excludes)), coverage=coverage, wear=wear_rows,
                    overrides=dict(overrides), warnings=warnings)
    from .ledger import offload_ledger

    a.ledger = offload_ledger(a, uses, scenario or {}, db, sampler)
    return a


def carbon_inputs_for(scn_carbon: Any, db: Any, *, region: str | None = None, base_dir: Any = None,
                      draws: int | None = None, seed: int | None = None, scope: str | None = None) -> CarbonInputs:
    """Resolve a scenario's carbon section (or an override region / scope) into :class:`CarbonInputs`."""
    grid = grid_spec_for(scn_carbon, db, region, base_dir)
    return CarbonInputs(intensity_gco2e_per_kwh=grid, pue=pue_triple(db, scn_carbon.pue),
                        allocation=scn_carbon.allocation, lifetime_overrides_years=dict(scn_carbon.lifetime_years),
                        draws=draws or scn_carbon.draws, seed=scn_carbon.seed if seed is None else seed,
                        region=region or scn_carbon.region,
                        # checked upstream: the CLI's --scope check and the scenario model's Literal
                        scope=cast(Scope, scope or getattr(scn_carbon, "scope", "dedicated")))


def with_draws(inputs: CarbonInputs, draws: int, seed: int) -> CarbonInputs:
    return replace(inputs, draws=draws, seed=seed)


def pct(x: np.ndarray) -> dict[str, float]:
    """P5/P50/P95 of per-draw values (kept for callers of the old module)."""
    return band(x)
