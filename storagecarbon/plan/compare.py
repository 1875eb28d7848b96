"""``compare``: side-by-side carbon of options with paired Monte Carlo draws."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from ..carbon.sampling import band
from ..devicedb import DeviceDB
from ..errors import StoragecarbonError
from .options import Option, option_draws
from .world import World

COMPARE_VERSION = 1

TIER_ORDER = ["hbm", "host", "dram", "ssd", "hdd", "remote"]


def compare(options: Sequence[Option], db: DeviceDB, *, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Side-by-side carbon of options with paired Monte Carlo draws (pure given the options).

    Every option is attributed by attribute() on one keyed sampler: draw ``d`` holds the same
    grid-intensity quantile, PUE and device-model figures for all of them (and for ``profile``
    with the same seed and draws), so ``P(A < B)`` is the share of draws in which A's gCO2e per
    1k generated tokens is below B's.
    """
    from ..report.build import build_report

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
                      "diff_per_1k_gco2e": band(d),
                      "rel_diff": band(d / np.maximum(np.abs(metric[j]), 1e-300)),
                      "diff_total_gco2e": band(res[i]["total"] - res[j]["total"])})
    stack = np.vstack(metric)
    best = np.argmin(stack, axis=0)
    p_best = {o.name: float(np.mean(best == k)) for k, o in enumerate(options)}
    base = 0
    diffs = []
    for k, o in enumerate(options):
        if k == base:
            continue
        d = metric[k] - metric[base]
        diffs.append({"option": o.name, "baseline": options[base].name, "diff_per_1k_gco2e": band(d),
                      "rel_diff": band(d / np.maximum(np.abs(metric[base]), 1e-300))})
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
    from ..report.units import millis

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
