"""The planner's performance model: a vectorised steady state of many configurations at once.

It evaluates the per-step physics of :mod:`.physics` (the formulas the simulation steps through)
over arrays of configurations and replaces the step-by-step simulation by a queueing
approximation: shared-prefix chunks hit the HBM prefix cache / LMCache CPU / disk tiers by an
LRU reuse-distance model; the decode batch solves Little's law B = lambda x (outputs - 1) x cycle
time, capped by max_num_seqs and by the KV space in HBM, beyond which the configuration is
saturated and queues (admissions into the B slots are simulated FIFO per request, vectorised over
configurations). Energy and occupancy follow from the step counts with the simulation's
accounting. docs/planning.md gives the measured agreement with the simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..devicedb import DeviceDB
from ..scenario import Scenario
from . import physics as ph
from .configs import HwConfigs, capacity_array, figure_array
from .constants import ModelConstants, constants_for
from .workload import WorkloadStats, workload_stats


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


def analytic_model(scn: Scenario, cfg: HwConfigs, db: DeviceDB, *, constants: ModelConstants | None = None,
                   overrides: Mapping[str, Any] | None = None, ws: WorkloadStats | None = None) -> PerfResult:
    """Steady state of the scenario's workload on every configuration of ``cfg`` (see the module docstring)."""
    k = constants or constants_for(scn)
    ov = overrides or {}
    ws = ws or workload_stats(scn)
    H = len(cfg)
    dims = scn.model.dims()
    params = dims.param_count()
    kvb = scn.model.kv_bytes_per_token()
    chunk = ph.offload_unit_tokens(scn)
    cb = chunk * kvb
    reasons = [""] * H
    codes = [""] * H

    def flag(mask: np.ndarray, why: Callable[[int], str], code: str = "") -> None:
        for i in np.flatnonzero(mask):
            if not reasons[i]:
                reasons[i] = why(int(i))
                codes[i] = code or reasons[i]

    n = cfg.n_gpu
    r = ph.rates_for(scn, cfg, db, k, ov)
    gpu_cap = capacity_array(cfg.gpu, db)
    flag(np.isnan(figure_array(cfg.gpu, db, "tensor_tflops", ov)),
         lambda i: f"{cfg.gpu[i]}: no dense bf16 (or fp16) TFLOP/s in device_db (give device_overrides with a sourced figure)",
         "GPU has no compute figure in device_db")
    flag(np.isnan(figure_array(cfg.gpu, db, "read_gb_per_s", ov)), lambda i: f"{cfg.gpu[i]}: no HBM bandwidth in device_db",
         "GPU has no HBM bandwidth in device_db")
    w_hbm, w_dram, w_ssd, w_hdd = (np.asarray(x) for x in (r.w_hbm, r.w_dram, r.w_ssd, r.w_hdd))
    kv_hbm = np.asarray(ph.kv_space_bytes(scn.placement.kv.hbm_gb, gpu_cap * n, cfg.util, w_hbm))
    flag(kv_hbm <= 0, lambda i: f"weights in HBM ({w_hbm[i] / 1e9:.0f} GB) leave no room for KV cache in "
                                f"{int(n[i])} x {gpu_cap[i] / 1e9:g} GB at utilisation {cfg.util[i]:g}",
         "weights in HBM leave no room for KV cache")
    kv_tokens = np.asarray(ph.kv_tokens(kv_hbm, kvb))
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
    dram_cap = capacity_array(cfg.dram, db) * cfg.n_dram
    ssd_cap = capacity_array(cfg.ssd, db) * cfg.n_ssd
    hdd_cap = capacity_array(cfg.hdd, db) * cfg.n_hdd
    disk_on_ssd = has_ssd
    disk_kv_b = cfg.disk_gb * 1e9
    flag(has_dram & (w_dram + cfg.cpu_gb * 1e9 > dram_cap),
         lambda i: f"DRAM holds {dram_cap[i] / 1e9:.0f} GB < weights {w_dram[i] / 1e9:.0f} GB + KV CPU tier {cfg.cpu_gb[i]:g} GB",
         "DRAM too small for offloaded weights + KV CPU tier")
    flag(has_ssd & (w_ssd + np.where(disk_on_ssd, disk_kv_b, 0) > ssd_cap),
         lambda i: f"SSD holds {ssd_cap[i] / 1e9:.0f} GB < weights + KV disk tier", "SSD too small")
    flag(has_hdd & (w_hdd + np.where(~disk_on_ssd, disk_kv_b, 0) > hdd_cap),
         lambda i: f"HDD holds {hdd_cap[i] / 1e9:.0f} GB < weights + KV disk tier", "HDD too small")
    ssd_used = (w_ssd > 0) | ((cfg.disk_gb > 0) & has_ssd)
    hdd_used = (w_hdd > 0) | ((cfg.disk_gb > 0) & ~has_ssd & has_hdd)
    def no_read(keys: list[str | None], tier: str) -> Callable[[int], str]:
        return lambda i: f"{keys[i]}: no read bandwidth in device_db ({tier} is used for weights or KV)"

    for keys, used, tier in ((cfg.ssd, ssd_used, "ssd"), (cfg.hdd, hdd_used, "hdd")):
        flag(used & np.isnan(figure_array(keys, db, "read_gb_per_s", ov)), no_read(keys, tier),
             f"{tier} has no read bandwidth in device_db")
    feasible = np.array([not x for x in reasons])

    # ---------------------------------------------------------------- KV cache hits (per request)
    nch = ws.p // chunk
    npre = ws.pre // chunk
    m = npre > 0
    f_pre = float(m.mean())
    u_pre = float((nch - npre)[m].mean()) if m.any() else 0.0
    u_non = float(nch[~m].mean()) if (~m).any() else 0.0
    n_pre = float(npre[m].mean()) if m.any() else 0.0
    U_pass = float((nch - npre).sum() + (npre.max() if m.any() else 0))
    K_h = np.asarray(ph.hbm_prefix_chunks(kv_tokens, chunk))
    cpu_on = (cfg.cpu_gb > 0) & has_dram
    disk_on = (cfg.disk_gb > 0) & (has_ssd | has_hdd)
    K_c = np.where(cpu_on, ph.lmcache_chunks(cfg.cpu_gb, cb), 0)
    K_d = np.where(disk_on, ph.lmcache_chunks(cfg.disk_gb, cb), 0)

    def p_gap(K: np.ndarray) -> np.ndarray:
        """P(prefix chunks survive in an LRU of K chunks between consecutive prefix requests)."""
        room = K - n_pre - u_pre
        if f_pre <= 0:
            return np.zeros_like(K, dtype=float)
        if u_non <= 0 or f_pre >= 1:
            return np.where(room >= 0, 1.0, 0.0)
        mm = np.floor(np.maximum(room, 0) / u_non)
        return np.where(room >= 0, 1.0 - (1.0 - f_pre) ** (mm + 1), 0.0)

    p_h = p_gap(K_h)
    pc_cum = np.where(cpu_on, np.maximum(p_gap(K_c), p_h), p_h)
    pd_cum = np.where(disk_on, np.maximum(p_gap(K_d), pc_cum), pc_cum)
    pre_h, pre_c, pre_d = p_h, pc_cum - p_h, pd_cum - pc_cum
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
    first_pre = float(npre.max()) if m.any() and not scn.workload.shared_prefix.warm else 0.0
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
    hit_pre_tok = (npre * chunk + ph.prefix_tail_tokens(ws.pre, chunk, scn.engine.block_size)).astype(float)
    hit_all_tok = (nch * chunk).astype(float)
    p = ws.p.astype(float)

    def tokens_and_attention(hit: np.ndarray) -> tuple[float, float]:
        c = p - hit
        return float(c.sum()), float(np.sum(ph.attention_flops(dims, c, hit)))

    L0, A0 = tokens_and_attention(np.zeros_like(p))
    Lp, Ap = tokens_and_attention(np.where(m, hit_pre_tok, 0.0))
    La, Aa = tokens_and_attention(hit_all_tok)
    lin_pass1 = q_pre * Lp + (1 - q_pre) * L0
    att_pass1 = q_pre * Ap + (1 - q_pre) * A0
    lin_later = np.where(fit_any, La, lin_pass1)
    att_later = np.where(fit_any, Aa, att_pass1)
    lin_tot = lin_pass1 + later * lin_later
    att_tot = att_pass1 + later * att_later
    fl_pf = np.asarray(ph.prefill_flops(params, lin_tot, att_tot)) / N   # prefill FLOPs per request
    # p90 request: computed tokens at the 90th percentile of the mixture
    c_miss90 = float(np.percentile(p, 90))
    c_hit90 = float(np.percentile(p - np.where(m, hit_pre_tok, 0.0), 90))
    c90 = q_pre * c_hit90 + (1 - q_pre) * c_miss90
    c_mean = lin_tot / N
    fl_pf90 = fl_pf * np.where(c_mean > 0, c90 / np.where(c_mean > 0, c_mean, 1.0), 1.0)
    rbw_disk = np.where(disk_on_ssd, r.ssd_r, r.hdd_r)
    wbw_disk = np.where(disk_on_ssd, r.ssd_w, r.hdd_w)
    n_disk_units = np.where(disk_on_ssd, cfg.n_ssd, cfg.n_hdd)
    ld = (np.asarray(ph.kv_load_s(r, cb, c_cpu, c_disk, rbw_disk))        # KV loads (and synchronous
          + np.where(cpu_on, ph.kv_store_s(r, cb, c_miss, scn.placement.kv.backend == "lmcache"), 0.0)) / N  # stores) per request
    # spread of one request's prefill over the requests (for the tails of unsaturated runs): its FLOPs
    # and KV loads per request class (pass 1 with / without a prefix hit, later passes), mixed as above
    def fl_sq(hit: np.ndarray) -> float:
        c_ = p - hit
        return float(np.mean(np.asarray(ph.prefill_flops(params, c_, ph.attention_flops(dims, c_, hit))) ** 2))

    fl2_pass1 = q_pre * fl_sq(np.where(m, hit_pre_tok, 0.0)) + (1 - q_pre) * fl_sq(np.zeros_like(p))
    fl2 = (fl2_pass1 + later * np.where(fit_any, fl_sq(hit_all_tok), fl2_pass1)) / P
    t_cpu, t_disk = ph.kv_load_s(r, cb, 1, 0, rbw_disk), ph.kv_load_s(r, cb, 0, 1, rbw_disk)
    npre2, nch2 = float(np.mean(np.where(m, npre, 0) ** 2)), float(np.mean(nch ** 2))
    ld2_pass1 = (pre_c * t_cpu ** 2 + pre_d * t_disk ** 2) * npre2
    ld2 = (ld2_pass1 + later * np.where(fit_c, t_cpu ** 2 * nch2, np.where(fit_d, t_disk ** 2 * nch2,
                                                                            np.where(fit_h, 0.0, ld2_pass1)))) / P
    sig_pf = np.sqrt(np.maximum(fl2 - fl_pf ** 2, 0.0) / np.asarray(r.flops) ** 2
                     + np.maximum(ld2 - ld ** 2, 0.0) * (1 - k.overlap) ** 2)

    # ---------------------------------------------------------------- step times
    o_all = ws.o_all.astype(float)
    dec_tok = float(np.maximum(o_all - 1, 0).sum())
    O_dec = dec_tok / N
    po = np.maximum(ws.o.astype(float) - 1, 0)
    c_dec = float((po * (ws.p + ws.o / 2.0)).sum() / max(po.sum(), 1e-9))

    def t_dec(B: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        rr = r if rows is None else r.take(rows)
        return np.asarray(ph.decode_gpu_s(rr, params, B, B * c_dec * kvb))

    def s_dec(B: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        rr = r if rows is None else r.take(rows)
        return np.asarray(ph.step_time(rr, t_dec(B, rows), B * c_dec * kvb, tokens=B)[0])

    def tg_pf(kk: np.ndarray, extra_flops: Any = 0.0, rows: np.ndarray | None = None) -> np.ndarray:
        rr, f = (r, fl_pf) if rows is None else (r.take(rows), fl_pf[rows])
        return np.asarray(ph.prefill_gpu_s(rr, kk * f + extra_flops))

    def t_pf_in(kk: np.ndarray, extra_flops: Any = 0.0, rows: np.ndarray | None = None) -> np.ndarray:
        rr, l_ = (r, ld) if rows is None else (r.take(rows), ld[rows])
        return np.asarray(ph.prefill_step_gpu_s(rr, tg_pf(kk, extra_flops, rows), kk * l_))

    # a prefill step's GPU time is affine in its request count: t_pf_in(kk) = pf_0 + kk x pf_1
    pf_0 = t_pf_in(np.zeros(H))
    pf_1 = t_pf_in(np.ones(H)) - pf_0

    def s_pref(kk: np.ndarray, extra_flops: Any = 0.0, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None and not np.any(extra_flops):
            return np.asarray(ph.step_time(r, pf_0 + kk * pf_1, tokens=kk * c_mean)[0])
        rr = r if rows is None else r.take(rows)
        cm = c_mean if rows is None or np.ndim(c_mean) == 0 else np.asarray(c_mean)[rows]
        return np.asarray(ph.step_time(rr, t_pf_in(kk, extra_flops, rows), tokens=kk * cm)[0])

    budget = float(scn.engine.max_num_batched_tokens)
    # vLLM's token budget counts the tokens a request computes (cached prefix blocks are free)
    # (one figure for the sweep: the median configuration's computed tokens per request)
    k_max = max(1.0, float(np.floor(budget / max(float(np.median(c_mean)), 1.0))))
    B_cap = np.maximum(1.0, np.minimum(cfg.max_seqs, np.floor(kv_tokens / max(need_one, 1.0))))

    def cycle(B: np.ndarray, X: np.ndarray, tau0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode-to-decode cycle time with the prefill steps that admissions X (req/s) add."""
        s_d = s_dec(B)
        tau = tau0
        for _ in range(12):
            lam_tau = X * tau
            q = -np.expm1(-lam_tau)
            kbar = np.clip(lam_tau / np.maximum(q, 1e-12), 1.0, k_max)
            n_pf = lam_tau / kbar
            tau = s_d + n_pf * s_pref(kbar)
        lam_tau = X * tau
        q = -np.expm1(-lam_tau)
        kbar = np.clip(lam_tau / np.maximum(q, 1e-12), 1.0, k_max)
        return tau, kbar, lam_tau / kbar

    lam = float(ws.rate) if ws.rate else 0.0
    offline = ws.rate is None
    if offline:
        sat = np.ones(H, dtype=bool)
    else:
        tau_cap, _, _ = cycle(B_cap, np.full(H, lam), s_dec(B_cap))
        sat = lam * O_dec * tau_cap >= B_cap
    # ---- not saturated (Poisson arrivals): bisection on the time-average decode population L
    lo: np.ndarray = np.zeros(H)
    hi: np.ndarray = B_cap.copy()
    tau = s_dec(np.ones(H))
    for _ in range(40 if not offline else 0):
        mid = 0.5 * (lo + hi)
        Bm = np.clip(mid / np.maximum(-np.expm1(-mid), 1e-12), 1.0, B_cap)
        tau, _, _ = cycle(Bm, np.full(H, lam), tau)
        g = lam * O_dec * tau - mid
        lo = np.where(g > 0, mid, lo)
        hi = np.where(g > 0, hi, mid)
    L = 0.5 * (lo + hi)
    B = np.clip(L / np.maximum(-np.expm1(-L), 1e-12), 1.0, B_cap)
    tau, kbar, n_pf_cyc = cycle(B, np.full(H, lam), tau)
    n_pf = N / kbar

    # ---- saturated (and every offline run): requests queue for B_cap slots; simulated per request
    arr = ws.arrivals
    order = np.argsort(arr, kind="stable")
    arr_s, o_s = arr[order], o_all[order]
    ttft_sat_p90, ttft_sat_mean, tpot_sat_p90, tpot_sat_mean, end_sat = (np.zeros(H) for _ in range(5))
    si = np.flatnonzero(sat & feasible)
    if len(si):
        fifo = _fifo_slots(arr_s, o_s, B_cap[si], int(k_max), lambda g, rows: s_pref(g, rows=si[rows]),
                           lambda b, rows: s_dec(b, rows=si[rows]), offline)
        ttft_sat_p90[si], ttft_sat_mean[si] = fifo.ttft_p90, fifo.ttft_mean
        tpot_sat_p90[si], tpot_sat_mean[si] = fifo.tpot_p90, fifo.tpot_mean
        end_sat[si] = fifo.end
        B[si] = fifo.batch
        n_pf[si] = fifo.prefill_steps
        kbar[si] = N / fifo.prefill_steps
    s_d = s_dec(B)
    s_pf = s_pref(kbar)
    n_dec = dec_tok / B
    busy_time = n_dec * s_d + n_pf * s_pf

    # ---------------------------------------------------------------- latency
    o_med = float(np.median(ws.o))
    s_pf90 = s_pref(kbar, fl_pf90 - fl_pf)
    tpot_mean = np.where(sat, tpot_sat_mean, tau)
    s_pf_rms = np.sqrt(s_pf ** 2 + kbar * sig_pf ** 2)   # prefill interruptions: Poisson count, spread sizes
    tpot_p90 = np.where(sat, tpot_sat_p90, tau + 1.2816 * s_pf_rms * np.sqrt(n_pf_cyc / max(o_med - 1, 1.0)))
    ttft_p90: np.ndarray
    ttft_mean: np.ndarray
    duration: np.ndarray
    if offline:
        ttft_p90 = ttft_sat_p90 + (s_pf90 - s_pf)
        ttft_mean = ttft_sat_mean
    else:
        # decode running fraction of time (for the residual wait of a new arrival)
        span = float(arr.max() - arr.min()) if len(arr) else 0.0
        rho = np.clip(n_dec * s_d / np.maximum(span + tau * O_dec, 1e-9), 0, 1)
        own90 = np.maximum(s_pf90, s_pf + 1.2816 * np.sqrt(kbar) * sig_pf)   # P90 of the own prefill step
        ttft_p90 = np.where(sat, ttft_sat_p90 + (s_pf90 - s_pf), 0.9 * rho * s_d + own90)
        ttft_mean = np.where(sat, ttft_sat_mean, 0.5 * rho * s_d + s_pf)
    # ---------------------------------------------------------------- duration
    if offline:
        duration = end_sat.copy()
    else:
        # the run ends when the last of the late, long requests finishes
        late = np.argsort(arr)[-max(64, int(0.1 * len(arr))):]
        ends = arr[late][None, :] + (o_all[late][None, :] - 1) * tau[:, None]
        end_ns = ends.max(axis=1) + ttft_mean
        # not saturated: decode steps fill the time that is neither prefill nor empty (P(empty) = e^-L)
        t_dec_ns = np.maximum(end_ns - n_pf * s_pf, 0.0) * -np.expm1(-L)
        n_dec_ns = n_dec.copy()
        for _ in range(4):
            n_dec_ns = np.maximum(t_dec_ns / s_dec(np.clip(dec_tok / np.maximum(n_dec_ns, 1e-9), 1.0, B_cap)), 1e-9)
        B = np.where(sat, B, np.clip(dec_tok / n_dec_ns, 1.0, B_cap))
        s_d = s_dec(B)
        n_dec = dec_tok / B
        busy_time = n_dec * s_d + n_pf * s_pf
        duration = np.where(sat, end_sat - float(arr.min()), end_ns)
        duration = np.maximum(duration, busy_time)

    # ---------------------------------------------------------------- busy and occupancy
    steps = n_dec + n_pf
    tg_d = t_dec(B)
    iow_d = np.asarray(ph.step_time(r, tg_d, B * c_dec * kvb, tokens=B)[1])
    iow_pf = np.asarray(ph.step_time(r, t_pf_in(kbar), tokens=kbar * c_mean)[1])
    gpu_busy = n_dec * ph.gpu_busy_s(r, tg_d, iow_d, "decode") + n_pf * ph.gpu_busy_s(r, tg_pf(kbar), iow_pf, "prefill")
    host_busy = ph.host_busy_s(k, cfg.n_host, busy_time)
    cpu_busy = ph.host_busy_s(k, cfg.n_cpu, busy_time)
    st_dram, st_ssd, st_hdd = ph.weight_stream_busy_s(r, cfg.n_ssd, cfg.n_hdd)
    dram_busy = steps * st_dram + np.where(cpu_on, (c_cpu + c_miss) * ph.dram_chunk_busy_s(r, cb), 0)
    ssd_busy = steps * st_ssd
    hdd_busy = steps * st_hdd
    disk_io_busy = np.where(disk_on, c_disk * ph.disk_chunk_busy_s(cb, rbw_disk, n_disk_units)
                            + c_miss * ph.disk_chunk_busy_s(cb, wbw_disk, n_disk_units), 0)
    ssd_busy = ssd_busy + np.where(disk_on_ssd, disk_io_busy, 0)
    hdd_busy = hdd_busy + np.where(~disk_on_ssd, disk_io_busy, 0)
    written_disk = np.where(disk_on, c_miss * cb, 0.0)
    puts = np.where(disk_on, c_miss, 0.0)
    fill_mean = np.where(puts <= K_d, puts / 2.0, K_d * (1 - K_d / (2 * np.maximum(puts, 1e-9)))) * cb
    D = duration

    def occ(resident: np.ndarray, keys: list[str | None], count: np.ndarray) -> np.ndarray:
        cap = capacity_array(keys, db)
        return np.minimum(resident / np.where(cap > 0, cap, 1.0) * D, count * D) * (cap > 0)

    units = {
        "gpu": n * D,
        "host": np.full(H, float(cfg.n_host) * cfg.host_share) * D,
        "cpu": np.full(H, float(cfg.n_cpu) * cfg.cpu_share) * D,
        "dram": occ(w_dram + np.where(cpu_on, cfg.cpu_gb * 1e9, 0), cfg.dram, cfg.n_dram),
        "ssd": occ(w_ssd + np.where(disk_on_ssd, fill_mean, 0), cfg.ssd, cfg.n_ssd),
        "hdd": occ(w_hdd + np.where(~disk_on_ssd, fill_mean, 0), cfg.hdd, cfg.n_hdd),
    }
    busy = {"gpu": gpu_busy, "host": host_busy, "cpu": cpu_busy, "dram": dram_busy, "ssd": ssd_busy, "hdd": hdd_busy}
    busy = {s: np.broadcast_to(np.asarray(v, float), (H,)).copy() for s, v in busy.items()}
    written = {"ssd": np.where(disk_on_ssd, written_disk, 0.0), "hdd": np.where(~disk_on_ssd, written_disk, 0.0)}
    bad = ~feasible
    for arr_ in (duration, ttft_p90, tpot_p90):
        arr_[bad] = np.nan
    return PerfResult(feasible=feasible, reason=reasons, reason_code=codes, duration_s=duration, ttft_p90_ms=(ttft_p90 + k.request_overhead_s) * 1e3,
                      ttft_mean_ms=(ttft_mean + k.request_overhead_s) * 1e3, tpot_p90_ms=tpot_p90 * 1e3, tpot_mean_ms=tpot_mean * 1e3,
                      saturated=sat, batch=B, busy=busy, units_s=units, flash_written_b=written,
                      kv_hit_share=hit_share, generated_tokens=float(o_all.sum()), requests=int(N))


@dataclass
class _Fifo:
    ttft_p90: np.ndarray
    ttft_mean: np.ndarray
    tpot_p90: np.ndarray
    tpot_mean: np.ndarray
    end: np.ndarray               # wall time the last request finishes
    batch: np.ndarray             # time-average decode batch (decode tokens / decode steps)
    prefill_steps: np.ndarray


def _fifo_slots(arr: np.ndarray, o: np.ndarray, slots: np.ndarray, k_max: int,
                s_pref: Callable[[np.ndarray, np.ndarray], np.ndarray],
                s_dec: Callable[[np.ndarray, np.ndarray], np.ndarray], offline: bool, block: int = 1024) -> _Fifo:
    """Requests (sorted by arrival) admitted first come first served into ``slots`` decode slots, as
    the simulation admits them, for S configurations at once.

    Work is tracked in *decode time* (wall time less the prefill steps so far, in units of one
    decode step of a full batch): a running request needs (outputs - 1) decode steps and prefill
    steps stop every running request. The requests that find a slot at the same decode instant form
    one admission, prefilled in steps of at most ``k_max`` requests (``s_pref(g)`` for g requests).
    Decode time maps back to wall time with the decode step of the batch running at each instant
    (``s_dec(b)``; offline, every arrival at 0, with that of the time-average batch, which then is
    exact). Configurations with the same slots and step times are simulated once."""
    S, n = len(slots), len(arr)
    idx = np.arange(S)
    c = np.minimum(slots, n).astype(np.int64)
    cmax = int(c.max())
    kk = max(1, min(k_max, cmax))
    tab = np.stack([s_pref(np.full(S, float(g)), idx) for g in range(1, kk + 1)], axis=1)
    dtab = np.diff(tab, axis=1, prepend=0.0)          # added prefill time of the g-th request of a step

    def run(sd: np.ndarray, dt: np.ndarray, dec_tab: np.ndarray | None) -> _Fifo:
        key = np.column_stack([c, sd, dt] + ([dec_tab] if dec_tab is not None else []))
        _, first_of, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        parts = [_fifo_block(arr, o, c[u], sd[u], dt[u], None if dec_tab is None else dec_tab[u])
                 for u in np.array_split(first_of, max(1, -(-len(first_of) // block)))]
        inv = inverse.reshape(-1)
        return _Fifo(*(np.concatenate([getattr(x, f) for x in parts])[inv] for f in _Fifo.__dataclass_fields__))

    if offline:
        # decode steps do not depend on the step times when every request arrives at 0: count
        # them once per slot count, then simulate at the decode step of the average batch
        steps = run(np.ones(S), np.zeros_like(dtab), None)
        return run(s_dec(steps.batch, idx), dtab, None)
    dec_tab = np.stack([s_dec(np.full(S, float(b)), idx) for b in range(1, cmax + 1)], axis=1)
    dec_tab = np.minimum(dec_tab, dec_tab[idx, c - 1][:, None])   # [S, b - 1]; no batch beyond the slots
    return run(dec_tab[idx, c - 1], dtab, dec_tab)


def _fifo_block(arr: np.ndarray, o: np.ndarray, c: np.ndarray, sd: np.ndarray, dtab: np.ndarray,
                dec_tab: np.ndarray | None) -> _Fifo:
    S, n = len(c), len(arr)
    online = dec_tab is not None
    rows = np.arange(S)
    cmax = int(c.max())
    kk = dtab.shape[1]
    free = np.zeros((S, cmax))                         # decode time each slot frees up
    free[np.arange(cmax)[None, :] >= c[:, None]] = np.inf
    occ = np.full((S, cmax), -1, np.int64)             # request in each slot
    pf = np.zeros(S)                                   # prefill time so far
    pf_ev0: np.ndarray = np.zeros(S)                   # ... before the current admission
    ev_v = np.full(S, -np.inf)                         # decode time of the current admission
    g_n: np.ndarray = np.zeros(S, np.int64)            # requests in the current prefill step
    n_grp = np.zeros(S, np.int64)
    last_fin = np.zeros(S)
    idle = np.zeros(S)
    grp_pf = np.zeros((S, n))                          # prefill time at the end of each prefill step
    gid = np.zeros((n, S), np.int64)
    st_all = np.zeros((n, S))
    pf_fin: np.ndarray = np.zeros((n + 1, S))          # prefill time before each request ends (row n: none)
    om1 = o - 1.0
    for i in range(n):
        j = np.argmin(free, axis=1)
        fj = free[rows, j]
        st = np.maximum(np.maximum(arr[i] - pf, fj), ev_v)
        new_ev = st > ev_v
        if online:
            idle += np.maximum(st - last_fin, 0.0) * new_ev
        pf_ev0 = np.where(new_ev, pf, pf_ev0)
        pf_fin[occ[rows, j], rows] = pf_ev0            # the slot's previous request ended before this admission
        new_grp = new_ev | (g_n >= kk)
        g_n = np.where(new_grp, 1, g_n + 1)
        n_grp += new_grp
        pf += dtab[rows, g_n - 1]
        ev_v = st
        grp_pf[rows, n_grp - 1] = pf
        gid[i] = n_grp - 1
        st_all[i] = st
        f = st + om1[i] * sd
        free[rows, j] = f
        occ[rows, j] = i
        if online:
            last_fin = np.maximum(last_fin, f)
    pf_fin[occ, rows[:, None]] = pf[:, None]
    pf_fin = pf_fin[:n]
    fin_v = st_all + om1[:, None] * sd
    if not online:
        last_fin = fin_v.max(axis=0)
        w_st, w_fin = st_all, fin_v
    else:  # decode time -> wall time at the decode step of the batch running at each instant
        t = np.concatenate([st_all, fin_v])
        d = np.concatenate([np.ones((n, S)), -np.ones((n, S))])
        order = np.argsort(t, axis=0, kind="stable")
        ts = np.take_along_axis(t, order, axis=0)
        b = np.cumsum(np.take_along_axis(d, order, axis=0), axis=0).astype(np.int64)
        step = np.take_along_axis(dec_tab, np.clip(b - 1, 0, cmax - 1).T, axis=1).T
        rate = np.where(b > 0, step / sd, 1.0)
        w_sorted = ts[:1] + np.concatenate([np.zeros((1, S)), np.cumsum(rate[:-1] * np.diff(ts, axis=0), axis=0)])
        w = np.empty_like(t)
        np.put_along_axis(w, order, w_sorted, axis=0)
        w_st, w_fin = w[:n], w[n:]
    first = w_st + grp_pf[rows[None, :], gid]
    fin = np.maximum(w_fin + pf_fin, first)
    ttft = first - arr[:, None]
    multi = o > 1
    tpot = (fin[multi] - first[multi]) / om1[multi][:, None] if multi.any() else np.zeros((1, S))
    n_dec = np.maximum((last_fin - idle) / np.where(sd > 0, sd, 1.0), 1e-9)
    dec_tok = float(om1[multi].sum())
    return _Fifo(ttft_p90=np.percentile(ttft, 90, axis=0), ttft_mean=ttft.mean(axis=0),
                 tpot_p90=np.percentile(tpot, 90, axis=0), tpot_mean=tpot.mean(axis=0), end=fin.max(axis=0),
                 batch=np.clip(dec_tok / n_dec, 1.0, np.maximum(c, 1)), prefill_steps=n_grp.astype(float))
