"""Build the report dictionary (the JSON every reporter renders) from an Attribution.

The contract (docs/methodology.md, "report.json"): bands are ``{p5, p50, p95}`` or ``null``; a
figure without data is ``null`` and appears in ``missing``; totals are sums of what is known and
``excludes`` names what they leave out; ``coverage`` is the share of the plausible total covered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..carbon.attribute import Attribution
from ..carbon.sampling import J_PER_KWH, band
from .model import Band, CarbonCells, DeviceRow, EnergyBasis, EnergyCells, Headline, Latency, LedgerRow, PhaseRow, \
    Report, TierRow, Timeline

REPORT_VERSION = 2
STORAGE_TIERS = ("dram", "ssd", "hdd")


def _band(x: np.ndarray | None, best: float | None = None) -> Band | None:
    if x is None:
        return None
    b = band(x, best)
    return Band(p5=b["p5"], p50=b["p50"], p95=b["p95"])


def _cells(a: np.ndarray, b: np.ndarray, dev: np.ndarray | list[int] | slice,
           ph: Any = slice(None)) -> tuple[np.ndarray | None, float | None]:
    """Per-draw sum over the selected (device, phase) cells and its central value; None if all missing."""
    sub = a[dev][:, ph]
    if sub.size == 0 or np.isnan(sub).all():
        return None, None
    axes = tuple(range(sub.ndim - 1))
    return np.nansum(sub, axis=axes), float(np.nansum(b[dev][:, ph]))


def _known_sum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Per-draw sum of the parts that are known; None when neither is (missing is missing)."""
    if a is None and b is None:
        return None
    return np.add(a if a is not None else 0.0, b if b is not None else 0.0)


def _carbon(attr: Attribution, dev: Any, ph: Any = slice(None)) -> CarbonCells:
    e, eb = _cells(attr.embodied_g, attr.embodied_best_g, dev, ph)
    o, ob = _cells(attr.operational_g, attr.operational_best_g, dev, ph)
    t = tb = None
    if e is not None or o is not None:
        t = _known_sum(e, o)
        tb = (eb or 0.0) + (ob or 0.0)
    return CarbonCells(embodied_gco2e=_band(e, eb), operational_gco2e=_band(o, ob), total_gco2e=_band(t, tb))


def _energy(attr: Attribution, dev: Any, ph: Any = slice(None)) -> EnergyCells:
    j, jb = _cells(attr.energy_j, attr.energy_best_j, dev, ph)
    idx = np.arange(len(attr.devices))[dev]
    kinds = {attr.devices[i].energy_basis for i in np.atleast_1d(idx)}
    basis: EnergyBasis = "missing" if j is None else ("measured" if kinds == {"measured"} else "modeled")
    return EnergyCells(energy_j=_band(j, jb), energy_kwh=_band(None if j is None else j / J_PER_KWH,
                                                                None if jb is None else jb / J_PER_KWH),
                       energy_basis=basis)


def _share(part: np.ndarray | None, whole: np.ndarray | None, pb: float | None, wb: float | None) -> Band | None:
    if part is None or whole is None or not np.all(whole > 0):
        return None
    return _band(part / whole, (pb or 0.0) / wb if wb else None)


def headline(attr: Attribution, generated: int) -> Headline:
    """Total, per 1k generated tokens, kWh and the storage (DRAM + SSD + HDD) share, each with its band."""
    alld = slice(None)
    e, eb = _cells(attr.embodied_g, attr.embodied_best_g, alld)
    o, ob = _cells(attr.operational_g, attr.operational_best_g, alld)
    j, jb = _cells(attr.energy_j, attr.energy_best_j, alld)
    total = _known_sum(e, o)
    tb = (eb or 0.0) + (ob or 0.0)
    st = np.array([d.tier in STORAGE_TIERS for d in attr.devices], dtype=bool)
    se, seb = _cells(attr.embodied_g, attr.embodied_best_g, st) if st.any() else (None, None)
    so, sob = _cells(attr.operational_g, attr.operational_best_g, st) if st.any() else (None, None)
    stot = _known_sum(se, so)
    return {
        "total_g": _band(total, tb),
        "per_1k_tokens_g": _band(None if total is None or not generated else total / generated * 1000,
                                 tb / generated * 1000 if generated else None),
        "energy_kwh": _band(None if j is None else j / J_PER_KWH, None if jb is None else jb / J_PER_KWH),
        "storage_share": {
            "embodied": _share(se, e, seb, eb) if st.any() else None,
            "operational": _share(so, o, sob, ob) if st.any() else None,
            "total": _share(stot, total, (seb or 0) + (sob or 0), tb) if st.any() else None,
        },
    }


def ledger_rows(attr: Attribution) -> list[LedgerRow]:
    out: list[LedgerRow] = []
    for r in attr.ledger:
        net = None if r.cost_g is None or r.saving_g is None else r.cost_g - r.saving_g
        netb = None if r.cost_best_g is None or r.saving_best_g is None else r.cost_best_g - r.saving_best_g
        out.append({"tier": r.tier, "kind": r.kind, "devices": r.devices,
                    "cost_g": _band(r.cost_g, r.cost_best_g), "wear_g": _band(r.wear_g),
                    "saving_g": _band(r.saving_g, r.saving_best_g), "net_g": _band(net, netb),
                    "p_pays_for_itself": None if net is None else float(np.mean(net < 0)),
                    "hit_tokens": r.hit_tokens, "basis": r.basis})
    return out


def build_report(attr: Attribution, *, scenario: str, slo: dict[str, float | None] | None = None,
                 trace_path: str | None = None) -> Report:
    u = attr.usage
    summ = (u.summary if u is not None else None) or {}
    mode = u.header.source if u is not None else "modeled"
    w = attr.workload
    requests = int(w.get("requests") or 0)
    prompt = int(w.get("prompt_tokens") or 0)
    generated = int(w.get("generated_tokens") or 0)
    alld = slice(None)
    tot = _carbon(attr, alld)
    en = _energy(attr, alld)
    total, tb = _cells(attr.embodied_g, attr.embodied_best_g, alld)
    op, ob = _cells(attr.operational_g, attr.operational_best_g, alld)
    run = _known_sum(total, op)
    runb = (tb or 0.0) + (ob or 0.0)
    # per-request and per-1k-token figures: the serving window when the run marks one (start-up apart)
    unit, unitb, unit_basis = run, runb, "whole run"
    unit_phase = summ.get("per_unit_phase")
    if unit_phase in attr.phases:
        j = attr.phases.index(unit_phase)
        ue, ueb = _cells(attr.embodied_g, attr.embodied_best_g, alld, [j])
        uo, uob = _cells(attr.operational_g, attr.operational_best_g, alld, [j])
        unit = _known_sum(ue, uo)
        unitb = (ueb or 0.0) + (uob or 0.0)
        tj = float(attr.phase_time_s[j]) if attr.phase_time_s is not None else 0.0
        unit_basis = f"phase {unit_phase} ({tj:.3g} s)"
    per_request = _band(unit / requests, unitb / requests) if requests and unit is not None else None
    per_1k = _band(unit / generated * 1000, unitb / generated * 1000) if generated and unit is not None else None
    hd = headline(attr, generated)
    if unit_basis != "whole run":
        hd["per_1k_tokens_g"] = per_1k

    def _excl(ids: set[str]) -> list[str]:
        return [x for x in attr.excludes if x.split(" ", 1)[0] in ids]

    tiers: list[TierRow] = []
    for tier in attr.tiers():
        idx = np.flatnonzero(attr.tier_mask(tier))
        row: TierRow = {"tier": tier, "devices": [
            f"{attr.devices[i].count} x {attr.devices[i].db_key or attr.devices[i].id + ' (no device record)'}"
            for i in idx], **_energy(attr, idx), **_carbon(attr, idx),
            "energy_methods": sorted({attr.devices[i].energy for i in idx}),
            "occupancy_basis": sorted({attr.devices[i].occupancy for i in idx}),
            "excludes": _excl({attr.devices[i].id for i in idx})}
        if u is not None:
            q = u.by_phase
            row.update({
                "bytes_read": float(sum(q["bytes_read"][i].sum() for i in idx)),
                "bytes_written": float(sum(q["bytes_written"][i].sum() for i in idx)),
                "app_bytes_read": float(sum(q["app_bytes_read"][i].sum() for i in idx)),
                "app_bytes_written": float(sum(q["app_bytes_written"][i].sum() for i in idx)),
                "busy_s": float(sum(q["busy_s"][i].sum() for i in idx)),
                "mean_resident_bytes": float(sum(q["resident_byte_s"][i].sum() for i in idx) / u.duration_s)
                if u.duration_s > 0 else None,
            })
            row["block_vs_app_gap_bytes"] = row["app_bytes_written"] - row["bytes_written"]
        tiers.append(row)

    devices: list[DeviceRow] = []
    for i, d in enumerate(attr.devices):
        devices.append({
            "id": d.id, "tier": d.tier, "db_key": d.db_key, "name": d.name, "count": d.count,
            "stand_in": d.stand_in, **_energy(attr, [i]), "energy_method": d.energy,
            "occupancy_basis": d.occupancy, "idle_capacity_share": d.idle_capacity_share,
            "held_unit_s": d.held_units_s, "occupied_unit_s": d.occupied_units_s,
            "embodied_unit_kgco2e": None if d.embodied_unit_kg is None else
            {"low": d.embodied_unit_kg.low, "best": d.embodied_unit_kg.best, "high": d.embodied_unit_kg.high},
            "lifetime_years": None if d.lifetime is None else
            {"low": d.lifetime.low, "best": d.lifetime.best, "high": d.lifetime.high, "source": d.lifetime.source},
            "wear_beat_time_share_of_draws": float(attr.wear_share_won[i]),
            "overridden": d.overridden,
            **_carbon(attr, [i]),
        })

    phases: dict[str, PhaseRow] = {}
    T = attr.phase_time_s if attr.phase_time_s is not None else np.zeros(len(attr.phases))
    for j, p in enumerate(attr.phases):
        c = _carbon(attr, alld, [j])
        if T[j] <= 0 and all(v is None or v["p95"] == 0 for v in (c["embodied_gco2e"], c["operational_gco2e"],
                                                                   c["total_gco2e"])):
            continue
        phases[p] = {"time_s": float(T[j]), **c, **_energy(attr, alld, [j])}

    lat = summ.get("latency") or {}
    slo = slo or {}
    latency = Latency(ttft_ms=lat.get("ttft_ms"), tpot_ms=lat.get("tpot_ms"), slo={})
    for key in ("ttft_ms", "tpot_ms"):
        target = slo.get(key)
        got = (lat.get(key) or {}).get("p90") if lat.get(key) else None
        if target is not None:
            latency["slo"][key] = {"target": target, "p90": got, "met": None if got is None else bool(got <= target)}
            share = ((lat.get("slo") or {}).get(key) or {}).get("share_within")
            if share is not None:
                latency["slo"][key]["share_within"] = share

    sources = {}
    for d in attr.devices:
        if d.db_key:
            sources[d.db_key] = {"embodied": d.embodied_source or None, "power": d.power_source or None,
                                 "lifetime": d.lifetime.source if d.lifetime else None}
    inp = attr.inputs
    g = inp.grid
    if g.triple is not None:
        grid_fig = {"low": g.triple.low, "best": g.triple.best, "high": g.triple.high, "source": g.source}
    else:
        lo, mid, hi = (float(v) for v in np.percentile(g.series.values, [5, 50, 95]))
        grid_fig = {"low": lo, "best": mid, "high": hi, "source": g.source}
    scope_txt = ("dedicated: every device in the scenario's hardware, whole, for the run's time" if inp.scope == "dedicated"
                 else "shared: DRAM/SSD/HDD charged by occupancy (resident bytes / capacity); GPUs and hosts whole")
    return {
        "report_version": REPORT_VERSION,
        "scenario": scenario,
        "mode": mode,
        "trace": trace_path,
        "truncated": bool(u.truncated) if u is not None else False,
        "scope": inp.scope,
        "scope_description": scope_txt,
        "requests": requests,
        "tokens": {"prompt": prompt, "generated": generated},
        "duration_s": float(u.duration_s) if u is not None else float(np.sum(T)),
        "headline": hd,
        "totals": {**tot, **en, "excludes": list(attr.excludes)},
        "per_request_gco2e": per_request,
        "per_1k_tokens_gco2e": per_1k,
        "per_unit_basis": unit_basis,
        "missing_devices": sorted(d.id for i, d in enumerate(attr.devices)
                                  if _carbon(attr, [i])["total_gco2e"] is None),
        "command": {"argv": summ.get("argv"), "exit_code": summ.get("exit_code"),
                    "failed": bool(summ.get("exit_code")) or bool(summ.get("error"))}
        if ("exit_code" in summ or "argv" in summ) else None,
        "serving": summ.get("serving"),
        "missing": list(attr.missing),
        "excludes": list(attr.excludes),
        "coverage": attr.coverage,
        "tiers": tiers,
        "devices": devices,
        "phases": phases,
        "ledger": ledger_rows(attr),
        "wear": list(attr.wear),
        "latency": latency,
        "sources": sources,
        "device_overrides": attr.overrides,
        "assumptions": {
            "grid_gco2e_per_kwh": grid_fig,
            "region": inp.region,
            "pue": {"low": inp.pue.low, "best": inp.pue.best, "high": inp.pue.high, "source": inp.pue.source},
            "allocation": inp.allocation,
            "scope": inp.scope,
            "draws": int(attr.ci.shape[0]),
            "seed": inp.seed,
            "sampling": "one keyed sampler: log-triangular on (low, best, high) per input (scipy.stats.triang), "
                        "uniform streams keyed by device_db key, grid and PUE; P5/P50/P95 over draws, widened to "
                        "contain the best-value estimate",
        },
        "provenance": {
            "mode": mode,
            "sensors": u.header.sensors if u is not None else {},
            "notes": u.header.notes if u is not None else [],
            "measured_figures": sorted({f"{d.id}: {d.energy}" for d in attr.devices if d.energy_basis == "measured"}),
            "modeled_figures": sorted({f"{d.id}: {d.energy}" for d in attr.devices if d.energy_basis == "modeled"}),
            "missing_figures": sorted({f"{m['device']}: {m['field']} ({m['reason']})" for m in attr.missing}),
        },
        "warnings": attr.warnings,
        "tool_versions": u.header.tool_versions if u is not None else {},
        "timeline": timeline(attr),
    }


def _interval_weights(attr: Attribution, i: int) -> tuple[np.ndarray, np.ndarray]:
    """How device ``i``'s embodied and operational charge spread over the usage intervals (weights summing to
    1): embodied by time (or resident bytes in shared scope), operational by its measured energy, else its
    power-weighted busy time, else time."""
    u = attr.usage
    assert u is not None
    d = attr.devices[i]
    n_int = u.by_interval["busy_s"].shape[1]
    span = np.full(n_int, u.interval_s)
    drv_emb = u.by_interval["resident_byte_s"][i] if (attr.inputs.scope == "shared" and
                                                     u.has.get((d.id, "resident_byte_s"))) else span
    if u.has.get((d.id, "energy_j")):
        drv_op = u.by_interval["energy_j"][i]
    elif u.has.get((d.id, "power_j")):
        drv_op = u.by_interval["power_j"][i]
    else:
        drv_op = span + u.by_interval["busy_s"][i]
    we = drv_emb / drv_emb.sum() if drv_emb.sum() > 0 else np.full(n_int, 1.0 / n_int)
    wo = drv_op / drv_op.sum() if drv_op.sum() > 0 else np.full(n_int, 1.0 / n_int)
    return we, wo


def interval_table(attr: Attribution) -> dict[str, np.ndarray]:
    """Per-interval, per-device attribution at central values (for Parquet); NaN (null) where missing."""
    u = attr.usage
    assert u is not None
    n_int = u.by_interval["busy_s"].shape[1]
    rows: dict[str, list] = {k: [] for k in ("interval", "t_start_s", "device", "tier", "bytes_read", "bytes_written",
                                              "app_bytes_read", "app_bytes_written", "busy_s", "resident_byte_s",
                                              "energy_j", "embodied_gco2e", "operational_gco2e")}
    for i, d in enumerate(attr.devices):
        emb_total = float(np.sum(attr.embodied_best_g[i]))      # NaN stays NaN: missing is missing
        op_total = float(np.sum(attr.operational_best_g[i]))
        e_total = float(np.sum(attr.energy_best_j[i]))
        we, wo = _interval_weights(attr, i)
        for j in range(n_int):
            rows["interval"].append(j)
            rows["t_start_s"].append(u.t_start + j * u.interval_s)
            rows["device"].append(d.id)
            rows["tier"].append(d.tier)
            for q in ("bytes_read", "bytes_written", "app_bytes_read", "app_bytes_written", "busy_s", "resident_byte_s"):
                rows[q].append(float(u.by_interval[q][i, j]))
            rows["energy_j"].append(e_total * float(wo[j]))
            rows["embodied_gco2e"].append(emb_total * float(we[j]))
            rows["operational_gco2e"].append(op_total * float(wo[j]))
    return {k: np.asarray(v) for k, v in rows.items()}


def timeline(attr: Attribution, bins: int = 240) -> Timeline | None:
    """Power and IO rates per device over the run, at most ``bins`` points, from the attribution itself (each
    device's central energy spread over the intervals as attribute() charges it; no second energy model)."""
    u = attr.usage
    if u is None:
        return None
    n_int = u.by_interval["busy_s"].shape[1]
    g = max(1, -(-n_int // bins))
    n_b = -(-n_int // g)
    dt = g * u.interval_s

    def binned(x: np.ndarray) -> np.ndarray:
        pad = np.zeros(n_b * g)
        pad[:n_int] = x
        return pad.reshape(n_b, g).sum(axis=1)

    power: dict[str, list[float]] = {}
    basis: dict[str, str] = {}
    rd: dict[str, list[float]] = {}
    wr: dict[str, list[float]] = {}
    for i, d in enumerate(attr.devices):
        e_total = float(np.sum(attr.energy_best_j[i]))
        if np.isfinite(e_total) and e_total > 0:
            power[d.id] = (binned(e_total * _interval_weights(attr, i)[1]) / dt).tolist()
            basis[d.id] = d.energy if d.energy.startswith(d.energy_basis) else f"{d.energy_basis}: {d.energy}"
        r, w = u.by_interval["bytes_read"][i], u.by_interval["bytes_written"][i]
        if r.any() or w.any():
            rd[d.id] = (binned(r) / dt).tolist()
            wr[d.id] = (binned(w) / dt).tolist()
    return {"t_s": [float(j * dt + dt / 2) for j in range(n_b)], "bin_s": float(dt), "power_w": power,
            "power_basis": basis, "read_bytes_per_s": rd, "write_bytes_per_s": wr, "source": u.header.source}
