"""attribute(): usage x device data x grid -> embodied and operational gCO2e with uncertainty.

Pure: no IO, no globals; every input is an argument. Formulas (docs/methodology.md):

* operational: E_j / 3.6e6 x I (gCO2e/kWh) x PUE, with E_j measured (energy counter or
  integrated power) or modeled as idle_w x count x T + (active_w - idle_w) x busy_s;
* embodied, SCI: M = TE x (TiR / EL) x (RR / ToR): unit devices (GPU, host) count whole units
  for the time they are held; capacity devices (DRAM, SSD, HDD) hold resident_bytes / capacity;
  flash also wears: TE x bytes_written / (TBW x 1e12); the policy picks time, wear or the larger;
* every input with a range is sampled (seeded Monte Carlo, log-triangular on low/best/high) and
  totals are sums of per-draw device x phase cells, so tiers, devices and phases are conserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .devicedb import Device, DeviceDB, Figure
from .usage import Usage

SECONDS_PER_YEAR = 365.25 * 24 * 3600
J_PER_KWH = 3.6e6
UNIT_KINDS = ("gpu", "host", "cpu")


@dataclass(frozen=True)
class Triple:
    low: float
    best: float
    high: float
    source: str = ""

    @classmethod
    def of(cls, fig: Figure | None, *, scale: float = 1.0) -> "Triple | None":
        if fig is None:
            return None
        lo, c, hi = fig.triple
        return cls(lo * scale, c * scale, hi * scale, fig.source)

    @classmethod
    def fixed(cls, v: float, source: str) -> "Triple":
        return cls(v, v, v, source)


@dataclass(frozen=True)
class CarbonInputs:
    """Grid intensity, PUE, lifetime overrides and policy for one attribution."""

    intensity_gco2e_per_kwh: Triple
    pue: Triple
    allocation: Literal["time", "wear", "max"] = "max"
    lifetime_overrides_years: dict[str, float] = field(default_factory=dict)  # device key, device id or tier
    draws: int = 2000
    seed: int = 0
    region: str | None = None


def sample(t: Triple, n: int, rng: np.random.Generator) -> np.ndarray:
    """Log-triangular draws on (low, best, high); a point value when the range is empty."""
    lo, c, hi = t.low, t.best, t.high
    if hi <= lo or n == 0:
        return np.full(n, c, dtype=np.float64)
    if lo > 0:
        a, m, b = np.log(lo), np.log(c), np.log(hi)
        return np.exp(rng.triangular(a, min(max(m, a), b), b, size=n))
    return rng.triangular(lo, min(max(c, lo), hi), hi, size=n)


@dataclass
class DeviceBasis:
    """How each figure of one device was obtained (for the report's provenance column)."""

    id: str
    tier: str
    db_key: str | None
    name: str
    count: int
    energy: str            # measured: ... | modeled: ... | missing: ...
    occupancy: str
    embodied_source: str
    power_source: str
    lifetime: Triple | None
    embodied_unit_kg: Triple | None
    stand_in: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class Attribution:
    """Per-draw carbon of every (device, phase) cell, plus provenance and workload."""

    devices: list[DeviceBasis]
    phases: list[str]
    embodied_g: np.ndarray        # [device, phase, draw]
    operational_g: np.ndarray     # [device, phase, draw]
    embodied_best_g: np.ndarray   # [device, phase] at central values
    operational_best_g: np.ndarray
    energy_best_j: np.ndarray     # [device, phase]
    wear_share_won: np.ndarray    # [device] share of draws in which wear beat time (flash)
    usage: Usage
    inputs: CarbonInputs
    warnings: list[str] = field(default_factory=list)

    @property
    def total_g(self) -> np.ndarray:
        return (self.embodied_g + self.operational_g).sum(axis=(0, 1))

    def tiers(self) -> list[str]:
        order = ["hbm", "host", "dram", "ssd", "hdd", "remote"]
        seen = {d.tier for d in self.devices}
        return [t for t in order if t in seen] + sorted(seen - set(order))

    def tier_mask(self, tier: str) -> np.ndarray:
        return np.array([d.tier == tier for d in self.devices], dtype=bool)


def _lifetime(dev: DeviceBasis, rec: Device | None, inputs: CarbonInputs) -> Triple | None:
    for k in (dev.id, dev.db_key, dev.tier):
        if k is not None and k in inputs.lifetime_overrides_years:
            return Triple.fixed(inputs.lifetime_overrides_years[k], "scenario override")
    return Triple.of(rec.lifetime_years) if rec is not None else None


def _occupancy_units_s(e: Any, rec: Device, usage: Usage, i: int) -> tuple[np.ndarray, str]:
    """Unit-seconds a capacity device (DRAM, SSD, HDD) is held, per phase, and how we know."""
    T = usage.phase_time_s
    cap = e.capacity_bytes or rec.capacity_bytes
    if usage.has.get((e.id, "resident_byte_s")) and cap:
        units_s = usage.by_phase["resident_byte_s"][i] / cap
        basis = "resident bytes / capacity (measured or modeled occupancy)"
    elif e.reserved_bytes is not None and cap:
        units_s = e.reserved_bytes / cap * T
        basis = f"reserved {e.reserved_bytes / 1e9:.3g} GB / capacity"
    else:
        return np.full(len(T), np.nan), "missing: no occupancy reading"
    return np.minimum(units_s, e.count * T), basis


def attribute(usage: Usage, db: DeviceDB, inputs: CarbonInputs) -> Attribution:
    """Attribute usage to gCO2e (pure function of its arguments)."""
    rng = np.random.default_rng(inputs.seed)
    n = inputs.draws
    phases = usage.phases
    n_ph = len(phases)
    entries = usage.header.devices
    n_dev = len(entries)
    emb = np.zeros((n_dev, n_ph, n))
    op_j = np.zeros((n_dev, n_ph, n))
    emb_best = np.zeros((n_dev, n_ph))
    op_best_j = np.zeros((n_dev, n_ph))
    wear_won = np.zeros(n_dev)
    bases: list[DeviceBasis] = []
    warnings: list[str] = []
    T = usage.phase_time_s  # [phase]

    for i, e in enumerate(entries):
        rec = db.resolve(e.db_key) if e.db_key else None
        b = DeviceBasis(id=e.id, tier=e.tier, db_key=e.db_key, name=e.name or (rec.name if rec else e.id),
                        count=e.count, energy="", occupancy="", embodied_source="", power_source="",
                        lifetime=None, embodied_unit_kg=None, stand_in=e.stand_in)
        if e.stand_in:
            b.warnings.append(f"{e.id}: device_db record {e.db_key} is a stand-in ({e.note or 'hardware unknown'})")
        if rec is None:
            b.warnings.append(f"{e.id}: no device_db record ({e.db_key!r}); its carbon is missing, not zero")
            b.energy = b.occupancy = "missing: no device record"
            bases.append(b)
            continue
        # ------------------------------------------------------------------ operational energy
        q = usage.by_phase
        if usage.has.get((e.id, "energy_j")):
            op_best_j[i] = q["energy_j"][i]
            op_j[i] = q["energy_j"][i][:, None]
            b.energy = "measured: energy counter"
            b.power_source = "measured"
        elif usage.has.get((e.id, "power_j")):
            op_best_j[i] = q["power_j"][i]
            op_j[i] = q["power_j"][i][:, None]
            b.energy = "measured: integrated power"
            b.power_source = "measured"
        elif rec.kind in ("dram", "ssd", "hdd") and rec.idle_w is None and rec.active_w is not None:
            # One power figure and no idle/active split (DRAM W per GB, CCF's SSD/HDD W per TB):
            # an average draw, charged over the capacity-seconds the run holds (CCF's method)
            held, _basis = _occupancy_units_s(e, rec, usage, i)
            p_avg = Triple.of(rec.active_w)
            assert p_avg is not None
            held = np.nan_to_num(held)
            op_j[i] = sample(p_avg, n, rng)[None, :] * held[:, None]
            op_best_j[i] = p_avg.best * held
            b.energy = f"modeled: average {rec.kind.upper()} power x capacity-time held (CCF per-capacity method)"
            b.power_source = p_avg.source
        else:
            share = float(getattr(e, "share", 1.0) or 1.0)
            idle = Triple.of(rec.idle_w, scale=e.count * share)
            active = Triple.of(rec.active_w, scale=e.count * share)
            busy = q["busy_s"][i]  # unit-seconds of activity, summed over the units
            if rec.kind in UNIT_KINDS and not usage.has.get((e.id, "busy_s")) and usage.has.get((e.id, "cpu_time_s")):
                # host: CPU time of the served process tree over the CPUs this run holds
                cpus = float((usage.header.host or {}).get("cpu_count") or 1)
                busy = np.minimum(q["cpu_time_s"][i] / cpus, T) * e.count
            if idle is None and active is None:
                b.energy = "missing: no idle/active power in device_db"
                b.warnings.append(f"{e.id}: no power figures in device_db ({rec.key}); operational energy missing")
            else:
                idle_d = sample(idle, n, rng) if idle else np.zeros(n)
                act_d = sample(active, n, rng) if active else idle_d
                act_d = np.maximum(act_d, idle_d)
                per_unit_busy = busy / max(e.count, 1)  # s of busy time per unit, on average
                op_j[i] = idle_d[None, :] * T[:, None] + (act_d - idle_d)[None, :] * per_unit_busy[:, None]
                ib = idle.best if idle else 0.0
                ab = max(active.best if active else ib, ib)
                op_best_j[i] = ib * T + (ab - ib) * per_unit_busy
                b.energy = ("modeled: idle + (active - idle) x busy share, device_db power"
                            + (" (busy = process-tree CPU time)" if rec.kind in UNIT_KINDS and usage.has.get((e.id, "cpu_time_s"))
                               and not usage.has.get((e.id, "busy_s")) else ""))
                b.power_source = "; ".join(s for s in ((idle.source if idle else ""), (active.source if active else "")) if s)
                if idle is None:
                    b.warnings.append(f"{e.id}: idle power missing in device_db; idle energy not counted")
        # ------------------------------------------------------------------ embodied
        te = rec.embodied_total_triple()
        life = _lifetime(b, rec, inputs)
        b.lifetime = life
        if te is None or life is None:
            b.occupancy = "missing: no embodied figure"
            b.warnings.append(f"{e.id}: no embodied figure in device_db ({rec.key}); embodied carbon missing")
            bases.append(b)
            continue
        te_t = Triple(te[0], te[1], te[2], rec.embodied_kgco2e.source if rec.embodied_kgco2e else "")
        b.embodied_unit_kg = te_t
        b.embodied_source = te_t.source
        te_d = sample(te_t, n, rng) * 1000.0  # g per unit
        life_d = sample(life, n, rng) * SECONDS_PER_YEAR
        if rec.kind in UNIT_KINDS:
            share = float(getattr(e, "share", 1.0) or 1.0)
            units_s = e.count * share * T  # unit-seconds held
            b.occupancy = f"whole units: {e.count} x run time" if share == 1.0 else \
                f"{e.count} unit(s) x share {share:.4g} x run time"
        else:
            units_s, b.occupancy = _occupancy_units_s(e, rec, usage, i)
            if b.occupancy.startswith("missing"):
                b.warnings.append(f"{e.id}: no occupancy (resident or reserved bytes); time-share embodied missing")
        time_share = np.nan_to_num(units_s)[:, None] / life_d[None, :] * te_d[None, :]  # [phase, draw]
        time_best = np.nan_to_num(units_s) / (life.best * SECONDS_PER_YEAR) * te_t.best * 1000
        wear = np.zeros_like(time_share)
        wear_best = np.zeros(n_ph)
        if rec.kind == "ssd" and rec.endurance_tbw is not None and inputs.allocation in ("wear", "max"):
            written = np.maximum(q["bytes_written"][i], q["app_bytes_written"][i])  # bytes that will reach flash
            tbw = Triple.of(rec.endurance_tbw)
            assert tbw is not None
            tbw_d = sample(tbw, n, rng) * 1e12
            per_unit_te = te_d  # one drive's TE over one drive's TBW (count cancels)
            wear = written[:, None] / tbw_d[None, :] * per_unit_te[None, :]
            wear_best = written / (tbw.best * 1e12) * te_t.best * 1000
        elif rec.kind == "ssd" and inputs.allocation == "wear":
            b.warnings.append(f"{e.id}: no endurance rating; charged by time share instead of wear")
        if inputs.allocation == "time":
            emb[i], emb_best[i] = time_share, time_best
        elif inputs.allocation == "wear":
            # wear applies to rated flash; every other device is still charged by time share
            if rec.kind == "ssd" and rec.endurance_tbw is not None:
                emb[i], emb_best[i] = wear, wear_best
            else:
                emb[i], emb_best[i] = time_share, time_best
        else:
            won = wear.sum(axis=0) > time_share.sum(axis=0)  # per draw, device-level choice
            emb[i] = np.where(won[None, :], wear, time_share)
            emb_best[i] = wear_best if wear_best.sum() > time_best.sum() else time_best
            wear_won[i] = float(won.mean())
        bases.append(b)

    ci = sample(inputs.intensity_gco2e_per_kwh, n, rng)
    pue = sample(inputs.pue, n, rng)
    op_g = op_j / J_PER_KWH * (ci * pue)[None, None, :]
    op_best_g = op_best_j / J_PER_KWH * inputs.intensity_gco2e_per_kwh.best * inputs.pue.best
    for b in bases:
        warnings.extend(b.warnings)
    if usage.truncated:
        warnings.append("trace was cut short (no footer): figures cover the recorded part only")
    warnings.extend(usage.notes)  # faults while recording: failed command, sensor gaps, counter resets
    return Attribution(devices=bases, phases=phases, embodied_g=emb, operational_g=op_g,
                       embodied_best_g=emb_best, operational_best_g=op_best_g, energy_best_j=op_best_j,
                       wear_share_won=wear_won, usage=usage, inputs=inputs, warnings=warnings)


def pct(x: np.ndarray) -> dict[str, float]:
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95)}


def carbon_inputs_for(scn_carbon: Any, db: DeviceDB, *, region: str | None = None,
                      intensity_series: np.ndarray | None = None, draws: int | None = None,
                      seed: int | None = None) -> CarbonInputs:
    """Resolve a scenario's carbon section (or an override region) into :class:`CarbonInputs`."""
    reg = region or scn_carbon.region
    if region is None and scn_carbon.gco2e_per_kwh is not None:
        g = scn_carbon.gco2e_per_kwh
        ci = Triple(g.low if g.low is not None else g.best, g.best, g.high if g.high is not None else g.best, g.source)
    elif intensity_series is not None and region is None:
        lo, c, hi = np.percentile(intensity_series, [5, 50, 95])
        ci = Triple(float(lo), float(c), float(hi), f"hourly series {scn_carbon.intensity_file} (P5/P50/P95 over hours)")
    else:
        r = db.region(reg)
        t = Triple.of(r.gco2e_per_kwh)
        assert t is not None
        ci = Triple(t.low, t.best, t.high, f"{r.name} {r.year}: {t.source}")
    if isinstance(scn_carbon.pue, (int, float)):
        pue = Triple.fixed(float(scn_carbon.pue), "given in the scenario")
    else:
        p = db.pue_of(scn_carbon.pue)
        t = Triple.of(p.value)
        assert t is not None
        pue = Triple(t.low, t.best, t.high, f"{p.name}: {t.source}")
    return CarbonInputs(intensity_gco2e_per_kwh=ci, pue=pue, allocation=scn_carbon.allocation,
                        lifetime_overrides_years=dict(scn_carbon.lifetime_years),
                        draws=draws or scn_carbon.draws, seed=scn_carbon.seed if seed is None else seed,
                        region=reg)
