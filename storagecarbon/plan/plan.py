"""``plan``: evaluate a sweep with the analytic steady state and paired draws, pick, and say what to buy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..carbon.grid import (
    grid_for_region,
    pue_triple,
)
from ..carbon.sampling import GridSpec, Triple, band
from ..devicedb import DeviceDB
from ..errors import StoragecarbonError
from ..model.configs import HwConfigs, configs_from_scenarios
from ..model.constants import ModelConstants, constants_for
from ..model.steady_state import PerfResult, analytic_model
from ..scenario import Scenario
from .footprint import carbon_db, plan_carbon
from .options import grid_of_carbon
from .pareto import pareto_front
from .sweep import LifetimeVariant, LoadedSweep, Sweep, SweepSlo, expand_sweep
from .world import World

PLAN_VERSION = 1


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
        grids = [grid_of_carbon(c, db, None, Path(loaded.file).parent)]
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
    from ..report.units import TIGHT_HEADROOM

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
        vs.update({"base_slo_met": bool(ok), "base_per_1k_tokens_gco2e": band(b), "pick_per_1k_tokens_gco2e": band(a),
                   "saving_per_1k_gco2e": band(b - a), "saving_share": band((b - a) / np.maximum(b, 1e-300)),
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
