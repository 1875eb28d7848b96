"""The offload ledger: what each offload tier cost and what it saved, per Monte Carlo draw.

For every tier that holds offloaded KV cache (LMCache ``local_cpu`` -> DRAM, ``local_disk`` -> SSD
or HDD) or offloaded weights (``placement.weights``):

* cost: the tier's attributed embodied (time share or wear, as the allocation policy says) and
  operational carbon; a tier serving both KV and weights is split between them by the bytes each
  reserves (KV tier size, weight bytes placed there);
* saving, KV: the prefill recompute that KV hits served from the tier avoided = hit tokens x the
  run's prefill energy per computed prompt token (measured where the run was measured) x grid x
  PUE. Hit tokens = KV bytes loaded from the tier / KV bytes per token. Computed prompt tokens =
  prompt tokens - tokens served by the offload tiers (HBM prefix-cache hits are not known, so the
  energy per computed token is understated and so is the saving: a conservative figure);
* saving, weights: the GPU capacity not bought = offloaded weight bytes / HBM per GPU, charged at
  the GPU's embodied time share and idle power for the run's time;
* net = cost - saving (negative: the tier saved more than it cost); the probability that it pays
  for itself is the share of draws with saving > cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import kernel as K


def _scenario_model(scn: dict[str, Any]) -> tuple[float | None, float | None]:
    """(KV bytes per token, weight bytes) of the scenario echo's model, None when unknown."""
    m = (scn or {}).get("model")
    if not m:
        return None, None
    try:
        from ..scenario import ModelSpec

        spec = ModelSpec.model_validate(m)
        return spec.kv_bytes_per_token(), spec.weight_bytes()
    except Exception:  # noqa: BLE001 - an old or partial echo: the ledger says it cannot tell
        return None, None


def offload_purposes(scn: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(tier, kind, reserved bytes) of every offload in a scenario (echo) dict."""
    out: list[tuple[str, str, float]] = []
    pl = (scn or {}).get("placement") or {}
    hw = (scn or {}).get("hardware") or {}
    _, wbytes = _scenario_model(scn)
    for tier in ("dram", "ssd", "hdd"):
        frac = float(((pl.get("weights") or {}).get(tier)) or 0.0)
        if frac > 0:
            out.append((tier, "weights", frac * (wbytes or 0.0)))
    kv = pl.get("kv") or {}
    cpu = kv.get("local_cpu")
    if cpu and cpu.get("enabled", True):
        out.append(("dram", "kv", float(cpu.get("size_gb") or 0) * 1e9))
    disk = kv.get("local_disk")
    if disk and disk.get("enabled", True):
        out.append(("ssd" if hw.get("ssd") else "hdd", "kv", float(disk.get("size_gb") or 0) * 1e9))
    return out


def offload_ledger(attr: Any, uses: Sequence[Any], scn: dict[str, Any], db: Any, sampler: Any) -> list[Any]:
    from .attribute import LedgerRow

    purposes = offload_purposes(scn)
    if not purposes:
        return []
    kvb, _ = _scenario_model(scn)
    cells = np.nan_to_num(attr.embodied_g) + np.nan_to_num(attr.operational_g)
    known = ~(np.isnan(attr.embodied_g) & np.isnan(attr.operational_g)).all(axis=(1, 2))
    cells_b = np.nan_to_num(attr.embodied_best_g) + np.nan_to_num(attr.operational_best_g)
    T_run = float(np.sum(attr.phase_time_s)) if attr.phase_time_s is not None else 0.0
    cif = attr.ci * attr.pue / K.J_PER_KWH
    cif_b = K.operational_g(1.0, attr.inputs.grid.best, attr.inputs.pue.best)
    # KV hits per tier and the run's prefill energy per computed token
    hits: dict[str, float | None] = {}
    for tier in ("dram", "ssd", "hdd"):
        reads = [u.kv_read_b for u in uses if u.tier == tier and u.kv_read_b is not None]
        hits[tier] = float(sum(r.sum() for r in reads)) / kvb if reads and kvb else None
    prompt = float(attr.workload.get("prompt_tokens") or 0.0)
    served = sum(hits[t] or 0.0 for t in hits if any(p[0] == t and p[1] == "kv" for p in purposes))
    computed = prompt - served
    pidx = attr.phases.index("prefill") if "prefill" in attr.phases else None
    pre_j = pre_jb = None
    if pidx is not None and computed > 0:
        e = attr.energy_j[:, pidx, :]
        if not np.isnan(e).all():
            pre_j = np.nansum(e, axis=0)
            pre_jb = float(np.nansum(attr.energy_best_j[:, pidx]))
    measured = all(d.energy_basis == "measured" for d in attr.devices if d.tier == "hbm") and \
        any(d.tier == "hbm" for d in attr.devices)
    rows = []
    by_tier: dict[str, float] = {}
    for tier, _, reserved in purposes:
        by_tier[tier] = by_tier.get(tier, 0.0) + reserved
    for tier, kind, reserved in purposes:
        idx = [i for i, u in enumerate(uses) if u.tier == tier]
        share = reserved / by_tier[tier] if by_tier[tier] > 0 else 1.0 / sum(1 for p in purposes if p[0] == tier)
        cost = cost_b = wear = None
        if idx and known[idx].any():
            cost = share * cells[idx].sum(axis=(0, 1))
            cost_b = share * float(cells_b[idx].sum())
            w = attr.wear_g[idx]
            wear = share * np.nansum(w, axis=0) if not np.isnan(w).all() else None
        saving = saving_b = None
        hit = None
        if kind == "kv":
            hit = hits[tier]
            if hit is None:
                basis = "missing: no KV hit reading for this tier"
            elif pre_j is None:
                basis = "missing: no prefill phase energy in the run"
            else:
                sj = K.recompute_saved_j(hit, pre_j, computed)
                saving = K.operational_g(sj, attr.ci, attr.pue)
                saving_b = K.recompute_saved_j(hit, pre_jb, computed) * cif_b
                basis = ("measured" if measured else "modeled") + \
                    ": hit tokens x the run's prefill energy per computed prompt token"
        else:
            basis = "modeled: GPU capacity not bought (offloaded weight bytes / HBM per GPU)"
            gpus = [u for u in uses if u.tier == "hbm" and u.key]
            rec = db.resolve(gpus[0].key) if gpus else None
            if rec is None or not rec.capacity_bytes or reserved <= 0:
                basis = "missing: no GPU record or weight size to price the GPU capacity not bought"
            else:
                f = sampler.device(rec)
                if f.te_g is None or f.idle_w is None:
                    basis = "missing: the GPU record lacks an embodied or idle power figure"
                else:
                    units = reserved / rec.capacity_bytes * T_run
                    life = f.life_s
                    saving = K.time_share_g(units, f.te_g, life) + K.idle_energy_j(f.idle_w, units) * cif
                    saving_b = float(K.time_share_g(units, f.best["te_g"], f.best["life_s"])
                                     + K.idle_energy_j(f.best["idle_w"], units) * cif_b)
        rows.append(LedgerRow(tier, kind, [uses[i].id for i in idx], cost, wear, saving, hit, basis, cost_b, saving_b))
    return rows
