"""Carbon of many configurations at once: the kernel over arrays of configurations, lifetimes and grids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..carbon import kernel as ck
from ..carbon.sampling import GridSpec, Triple
from ..devicedb import DeviceDB
from ..model.configs import HwConfigs
from ..model.steady_state import PerfResult
from .sweep import SLOTS, LifetimeVariant, Sweep
from .world import World


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
    from ..devicedb import DeviceOverride as DbOverride
    from ..devicedb import FigureOverride

    ov = {k: DbOverride(source=v.source, idle_w=FigureOverride(low=v.idle_w.low, best=v.idle_w.best, high=v.idle_w.high))
          for k, v in sw.device_overrides.items() if v.idle_w is not None}
    return db.with_overrides(ov)
