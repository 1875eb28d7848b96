"""Build the report dictionary (the JSON schema every reporter renders) from an Attribution."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..attribution import Attribution, pct

REPORT_VERSION = 1


def _carbon(emb: np.ndarray, op: np.ndarray) -> dict[str, Any]:
    """emb/op: per-draw arrays (already summed over cells)."""
    return {"embodied_gco2e": pct(emb), "operational_gco2e": pct(op), "total_gco2e": pct(emb + op)}


def build_report(attr: Attribution, *, scenario: str, slo: dict[str, float | None] | None = None,
                 trace_path: str | None = None) -> dict[str, Any]:
    u = attr.usage
    summ = u.summary or {}
    mode = u.header.source
    requests = int(summ.get("requests") or u.workload.get("requests_done") or u.requests_from_markers or 0)
    prompt = int(summ.get("prompt_tokens") or u.workload.get("prompt_tokens") or 0)
    generated = int(summ.get("generated_tokens") or u.workload.get("generated_tokens") or 0)
    E, O = attr.embodied_g, attr.operational_g
    emb_tot, op_tot = E.sum(axis=(0, 1)), O.sum(axis=(0, 1))
    total = emb_tot + op_tot
    # per-request and per-1k-token figures: the serving window when the run marks one (start-up apart)
    unit_phase = summ.get("per_unit_phase")
    if unit_phase in attr.phases:
        j = attr.phases.index(unit_phase)
        unit_total = E[:, j].sum(axis=0) + O[:, j].sum(axis=0)
        unit_basis = f"phase {unit_phase} ({u.phase_time_s[j]:.3g} s)"
    else:
        unit_total, unit_basis = total, "whole run"

    tiers = []
    for tier in attr.tiers():
        m = attr.tier_mask(tier)
        idx = np.flatnonzero(m)
        q = u.by_phase
        row = {
            "tier": tier,
            "devices": [f"{attr.devices[i].count} x {attr.devices[i].db_key or attr.devices[i].id + ' (no device record)'}"
                        for i in idx],
            "bytes_read": float(sum(q["bytes_read"][i].sum() for i in idx)),
            "bytes_written": float(sum(q["bytes_written"][i].sum() for i in idx)),
            "app_bytes_read": float(sum(q["app_bytes_read"][i].sum() for i in idx)),
            "app_bytes_written": float(sum(q["app_bytes_written"][i].sum() for i in idx)),
            "busy_s": float(sum(q["busy_s"][i].sum() for i in idx)),
            "mean_resident_bytes": float(sum(q["resident_byte_s"][i].sum() for i in idx) / u.duration_s)
            if u.duration_s > 0 else 0.0,
            "energy_j_best": float(attr.energy_best_j[idx].sum()),
            "energy_basis": sorted({attr.devices[i].energy for i in idx}),
            "occupancy_basis": sorted({attr.devices[i].occupancy for i in idx}),
            **_carbon(E[idx].sum(axis=(0, 1)), O[idx].sum(axis=(0, 1))),
        }
        # missing is missing: a tier none of whose devices has a figure reports None, not 0 g
        if all(attr.devices[i].energy.startswith("missing") for i in idx):
            row["operational_gco2e"] = None
        if all(attr.devices[i].occupancy.startswith("missing") for i in idx):
            row["embodied_gco2e"] = None
        if row["operational_gco2e"] is None or row["embodied_gco2e"] is None:
            row["total_gco2e"] = None
        row["block_vs_app_gap_bytes"] = row["app_bytes_written"] - row["bytes_written"]
        tiers.append(row)

    devices = []
    for i, d in enumerate(attr.devices):
        devices.append({
            "id": d.id, "tier": d.tier, "db_key": d.db_key, "name": d.name, "count": d.count,
            "stand_in": d.stand_in, "energy_basis": d.energy, "occupancy_basis": d.occupancy,
            "embodied_unit_kgco2e": None if d.embodied_unit_kg is None else
            {"low": d.embodied_unit_kg.low, "best": d.embodied_unit_kg.best, "high": d.embodied_unit_kg.high},
            "lifetime_years": None if d.lifetime is None else
            {"low": d.lifetime.low, "best": d.lifetime.best, "high": d.lifetime.high, "source": d.lifetime.source},
            "wear_beat_time_share_of_draws": float(attr.wear_share_won[i]),
            **_carbon(E[i].sum(axis=0), O[i].sum(axis=0)),
        })

    phases = {}
    for j, p in enumerate(attr.phases):
        if u.phase_time_s[j] <= 0 and E[:, j].sum() == 0 and O[:, j].sum() == 0:
            continue
        phases[p] = {"time_s": float(u.phase_time_s[j]), **_carbon(E[:, j].sum(axis=0), O[:, j].sum(axis=0))}
    # missing is missing: with no device figure at all, no sum is reported as 0 g
    missing = sorted(d.id for d in attr.devices if d.energy.startswith("missing") and d.occupancy.startswith("missing"))
    nothing_known = bool(attr.devices) and len(missing) == len(attr.devices)
    if nothing_known:
        for ph in phases.values():
            ph.update({"embodied_gco2e": None, "operational_gco2e": None, "total_gco2e": None})

    lat = summ.get("latency") or {}
    slo = slo or {}
    latency: dict[str, Any] = {"ttft_ms": lat.get("ttft_ms"), "tpot_ms": lat.get("tpot_ms"), "slo": {}}
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
    return {
        "report_version": REPORT_VERSION,
        "scenario": scenario,
        "mode": mode,
        "trace": trace_path,
        "truncated": u.truncated,
        "requests": requests,
        "tokens": {"prompt": prompt, "generated": generated},
        "duration_s": u.duration_s,
        "totals": {"embodied_gco2e": None, "operational_gco2e": None, "total_gco2e": None} if nothing_known else
        {"embodied_gco2e": pct(emb_tot), "operational_gco2e": pct(op_tot), "total_gco2e": pct(total)},
        "per_request_gco2e": pct(unit_total / requests) if requests and not nothing_known else None,
        "per_1k_tokens_gco2e": pct(unit_total / generated * 1000) if generated and not nothing_known else None,
        "per_unit_basis": unit_basis,
        "missing_devices": missing,
        "command": {"argv": summ.get("argv"), "exit_code": summ.get("exit_code"),
                    "failed": bool(summ.get("exit_code")) or bool(summ.get("error"))}
        if ("exit_code" in summ or "argv" in summ) else None,
        "serving": summ.get("serving"),
        "tiers": tiers,
        "devices": devices,
        "phases": phases,
        "latency": latency,
        "sources": sources,
        "assumptions": {
            "grid_gco2e_per_kwh": {"low": inp.intensity_gco2e_per_kwh.low, "best": inp.intensity_gco2e_per_kwh.best,
                                   "high": inp.intensity_gco2e_per_kwh.high, "source": inp.intensity_gco2e_per_kwh.source},
            "region": inp.region,
            "pue": {"low": inp.pue.low, "best": inp.pue.best, "high": inp.pue.high, "source": inp.pue.source},
            "allocation": inp.allocation,
            "draws": inp.draws,
            "seed": inp.seed,
            "sampling": "log-triangular on (low, best, high) per input; P5/P50/P95 over draws",
        },
        "provenance": {
            "mode": mode,
            "sensors": u.header.sensors,
            "notes": u.header.notes,
            "measured_figures": sorted({f"{d.id}: {d.energy}" for d in attr.devices if d.energy.startswith("measured")}),
            "modeled_figures": sorted({f"{d.id}: {d.energy}" for d in attr.devices if not d.energy.startswith("measured")}),
        },
        "warnings": attr.warnings,
        "tool_versions": u.header.tool_versions,
    }


def interval_table(attr: Attribution) -> dict[str, np.ndarray]:
    """Per-interval, per-device attribution at central values (for Parquet)."""
    u = attr.usage
    n_dev, n_int = u.by_interval["busy_s"].shape
    rows: dict[str, list] = {k: [] for k in ("interval", "t_start_s", "device", "tier", "bytes_read", "bytes_written",
                                              "app_bytes_read", "app_bytes_written", "busy_s", "resident_byte_s",
                                              "energy_j", "embodied_gco2e", "operational_gco2e")}
    # distribute each device's central embodied/operational over intervals by its usage driver
    for i, d in enumerate(attr.devices):
        emb_total = float(attr.embodied_best_g[i].sum())
        op_total = float(attr.operational_best_g[i].sum())
        span = np.full(n_int, u.interval_s)
        drv_emb = u.by_interval["resident_byte_s"][i] if u.has.get((d.id, "resident_byte_s")) else span
        if u.has.get((d.id, "energy_j")):
            drv_op = u.by_interval["energy_j"][i]
        elif u.has.get((d.id, "power_j")):
            drv_op = u.by_interval["power_j"][i]
        else:
            drv_op = span + u.by_interval["busy_s"][i]
        we = drv_emb / drv_emb.sum() if drv_emb.sum() > 0 else np.full(n_int, 1.0 / n_int)
        wo = drv_op / drv_op.sum() if drv_op.sum() > 0 else np.full(n_int, 1.0 / n_int)
        e_j = float(attr.energy_best_j[i].sum()) * wo
        for j in range(n_int):
            rows["interval"].append(j)
            rows["t_start_s"].append(u.t_start + j * u.interval_s)
            rows["device"].append(d.id)
            rows["tier"].append(d.tier)
            for q in ("bytes_read", "bytes_written", "app_bytes_read", "app_bytes_written", "busy_s", "resident_byte_s"):
                rows[q].append(float(u.by_interval[q][i, j]))
            rows["energy_j"].append(float(e_j[j]))
            rows["embodied_gco2e"].append(emb_total * float(we[j]))
            rows["operational_gco2e"].append(op_total * float(wo[j]))
    return {k: np.asarray(v) for k, v in rows.items()}
