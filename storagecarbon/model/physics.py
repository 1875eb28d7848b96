"""Per-step physics of LLM serving with offload: the one place its formulas live.

Every function takes either Python floats (the simulation: one configuration, thousands of
steps) or numpy arrays with one entry per configuration (the steady state: thousands of
configurations at once) and returns the same kind. Numbers in the two calling conventions are
the same formulas, so a constant one model honours the other honours.

* prefill is compute-bound: (2 x params x computed tokens + attention FLOPs) over the GPUs' dense
  bf16 peak x ``compute_efficiency`` x TP factor, plus one read of the HBM-resident weights;
* decode is memory-bound: (HBM weights + the batch's KV bytes) over HBM bandwidth x
  ``hbm_efficiency``, or compute when larger;
* a step takes at least ``layers x layer_overhead_s`` of host time; an offloaded KV cache
  (transformers ``OffloadedCache``) moves the batch's KV to the GPU and back every decode step,
  ``kv_offload_overlap`` of it hidden; weights in DRAM stream over PCIe and weights on SSD/HDD
  from the drives every step, ``overlap`` of it hidden; each step adds ``step_overhead_s``;
* GPU busy-seconds are power-weighted: compute time x the phase's power fraction + IO wait x
  ``power_frac_io_wait`` (fractions between idle and active power); host CPUs are busy a
  ``host_busy_frac`` share of every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from .configs import HwConfigs, figure_array

if TYPE_CHECKING:
    from ..devicedb import DeviceDB
    from ..scenario import ModelDims, Scenario
    from .constants import ModelConstants

Num = Union[float, np.ndarray]
PREFIX_CACHE_SHARE = 4  # vLLM's own prefix cache: 1/4 of the KV blocks in HBM hold finished prompts' chunks


# ----------------------------------------------------------------------- float-or-array helpers
def _arr(a: Any, b: Any) -> bool:
    return type(a) is np.ndarray or type(b) is np.ndarray


def _max(a: Num, b: Num) -> Num:
    return np.maximum(a, b) if _arr(a, b) else max(a, b)  # type: ignore[call-overload]


def _min(a: Num, b: Num) -> Num:
    return np.minimum(a, b) if _arr(a, b) else min(a, b)  # type: ignore[call-overload]


def _positive(x: np.ndarray) -> np.ndarray:
    """A rate to divide by: 1 where it is absent or 0 (the planner flags those configurations)."""
    return np.where(x > 0, x, 1.0)


def _ratio(a: Num, b: Num) -> Num:
    """a / b where both are positive, else 0 (no bytes, or no rate: no time)."""
    if _arr(a, b):
        a_, b_ = np.asarray(a, float), np.asarray(b, float)
        return np.where((a_ > 0) & (b_ > 0), a_ / np.where(b_ > 0, b_, 1.0), 0.0)
    return a / b if a and b else 0.0  # type: ignore[operator]


# ----------------------------------------------------------------------- effective rates
@dataclass(frozen=True)
class Rates:
    """Effective rates of one or many configurations (floats, or arrays of one entry per configuration)."""

    n_gpu: Num
    hbm_bw: Num            # B/s over all GPUs x hbm_efficiency (rates divided by are kept > 0)
    flops: Num             # FLOP/s over all GPUs x compute_efficiency x TP factor
    pcie: Num              # B/s host <-> GPUs
    kv_offload: Num        # B/s of an offloaded KV cache's copies
    dram_bw: Num           # B/s of the DRAM modules (PCIe x 4 where device_db has no figure)
    ssd_r: Num             # B/s read / write of the SSDs x disk_efficiency (0: none)
    ssd_w: Num
    hdd_r: Num
    hdd_w: Num
    w_hbm: Num             # weight bytes per tier
    w_dram: Num
    w_ssd: Num
    w_hdd: Num
    weight_stream_s: Num   # offloaded weights streamed to the GPUs, per step
    dram_weight_s: Num     # the host-memory part of it (re-read per tile of tokens under UVA)
    host_floor_s: float    # layers x layer_overhead_s
    tp_comm_s: Num         # layers x tp_layer_s on tensor-parallel configurations (0 on one GPU)
    kv_round_trip: bool    # the KV cache lives in host memory and travels every decode step
    k: ModelConstants

    def take(self, idx: np.ndarray) -> Rates:
        """The configurations ``idx`` (arrays indexed)."""
        some: dict[str, Any] = {f.name: np.asarray(getattr(self, f.name))[idx] for f in fields(self)
                                if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **some)

    def at(self, i: int) -> Rates:
        """Configuration ``i`` as floats (for the simulation)."""
        one: dict[str, Any] = {f.name: float(np.asarray(getattr(self, f.name))[i]) for f in fields(self)
                               if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **one)


def rates(k: ModelConstants, *, n_gpu: np.ndarray, gpu_read_gb_per_s: np.ndarray, gpu_bf16_tflops: np.ndarray,
          weight_bytes: float, w_frac: np.ndarray, dram_read_gb_per_s: np.ndarray, n_dram: np.ndarray,
          ssd_read_gb_per_s: np.ndarray, ssd_write_gb_per_s: np.ndarray, n_ssd: np.ndarray,
          hdd_read_gb_per_s: np.ndarray, hdd_write_gb_per_s: np.ndarray, n_hdd: np.ndarray,
          layers: int, kv_round_trip: bool) -> Rates:
    """Effective rates from device figures (GB/s, TFLOP/s; NaN = no figure / no device) and counts."""
    hbm_bw = np.nan_to_num(gpu_read_gb_per_s) * 1e9 * n_gpu * k.hbm_efficiency
    tp = np.where(n_gpu > 1, k.tp_efficiency, 1.0)
    flops = np.nan_to_num(gpu_bf16_tflops) * 1e12 * n_gpu * k.compute_efficiency * tp
    pcie = k.pcie_gb_per_s * 1e9 * n_gpu

    def drive(r_gb_per_s: np.ndarray, w_gb_per_s: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w_gb_per_s = np.where(np.isnan(w_gb_per_s), r_gb_per_s, w_gb_per_s)  # no write figure: the read figure
        return (np.nan_to_num(r_gb_per_s) * 1e9 * count * k.disk_efficiency,
                np.nan_to_num(w_gb_per_s) * 1e9 * count * k.disk_efficiency)

    ssd_r, ssd_w = drive(ssd_read_gb_per_s, ssd_write_gb_per_s, n_ssd)
    hdd_r, hdd_w = drive(hdd_read_gb_per_s, hdd_write_gb_per_s, n_hdd)
    dram_bw = np.where(np.isnan(dram_read_gb_per_s), pcie * 4, np.nan_to_num(dram_read_gb_per_s) * 1e9 * n_dram)
    w_hbm, w_dram, w_ssd, w_hdd = (weight_bytes * w_frac[:, j] for j in range(4))
    w_rate = k.weight_stream_gb_per_s * 1e9 * n_gpu if k.weight_stream_gb_per_s > 0 else pcie
    stream = _ratio(w_dram, w_rate) + _ratio(w_ssd, ssd_r) + _ratio(w_hdd, hdd_r)
    return Rates(n_gpu=n_gpu, hbm_bw=_positive(hbm_bw), flops=_positive(flops), pcie=_positive(pcie),
                 kv_offload=_positive(k.kv_offload_gb_per_s * 1e9 * n_gpu),
                 dram_bw=dram_bw, ssd_r=ssd_r, ssd_w=ssd_w, hdd_r=hdd_r, hdd_w=hdd_w,
                 w_hbm=w_hbm, w_dram=w_dram, w_ssd=w_ssd, w_hdd=w_hdd, weight_stream_s=stream,
                 dram_weight_s=_ratio(w_dram, w_rate),
                 host_floor_s=layers * k.layer_overhead_s,
                 tp_comm_s=np.where(n_gpu > 1, layers * k.tp_layer_s, 0.0), kv_round_trip=kv_round_trip, k=k)


def kv_round_trip(scn: Scenario) -> bool:
    """Does the engine keep the KV cache in host memory (transformers' offloaded cache)?"""
    return bool(scn.engine.transformers and scn.engine.transformers.offload == "kv-cpu")


def rates_for(scn: Scenario, cfg: HwConfigs, db: DeviceDB, k: ModelConstants,
              overrides: Mapping[str, Any] | None = None) -> Rates:
    """Effective rates of every configuration of ``cfg`` for the scenario's model and engine."""
    def fig(keys: list[str | None], attr: str) -> np.ndarray:
        return figure_array(keys, db, attr, overrides)

    return rates(k, n_gpu=cfg.n_gpu, gpu_read_gb_per_s=fig(cfg.gpu, "read_gb_per_s"),  # type: ignore[arg-type]
                 gpu_bf16_tflops=fig(cfg.gpu, "tensor_tflops"), weight_bytes=scn.model.weight_bytes(), w_frac=cfg.w_frac,  # type: ignore[arg-type]
                 dram_read_gb_per_s=fig(cfg.dram, "read_gb_per_s"), n_dram=cfg.n_dram,
                 ssd_read_gb_per_s=fig(cfg.ssd, "read_gb_per_s"), ssd_write_gb_per_s=fig(cfg.ssd, "write_gb_per_s"), n_ssd=cfg.n_ssd,
                 hdd_read_gb_per_s=fig(cfg.hdd, "read_gb_per_s"), hdd_write_gb_per_s=fig(cfg.hdd, "write_gb_per_s"), n_hdd=cfg.n_hdd,
                 layers=scn.model.dims().layers, kv_round_trip=kv_round_trip(scn))


# ----------------------------------------------------------------------- KV space and caches
def kv_space_bytes(hbm_gb: float | None, hbm_capacity_b: Num, util: Num, w_hbm: Num) -> Num:
    """HBM left for the KV cache: ``placement.kv.hbm_gb`` when given, else capacity x utilisation - weights."""
    if hbm_gb:
        return np.full(np.shape(w_hbm), hbm_gb * 1e9) if _arr(w_hbm, None) else hbm_gb * 1e9
    return hbm_capacity_b * util - w_hbm


def kv_tokens(kv_bytes: Num, kv_bytes_per_token: float) -> Num:
    """Tokens of KV cache that fit in ``kv_bytes``."""
    return _max(kv_bytes, 0.0) // kv_bytes_per_token


def hbm_prefix_chunks(kv_tokens_: Num, chunk: int) -> Num:
    """Chunks vLLM's own prefix cache keeps in spare HBM blocks."""
    return _max(kv_tokens_ // (PREFIX_CACHE_SHARE * chunk), 0)


def offload_unit_tokens(scn: Scenario) -> int:
    """Tokens per unit of KV the offload tiers store and look up: LMCache's ``chunk_size``; vLLM's
    native OffloadingConnector works on the engine's KV blocks (``engine.block_size``)."""
    return scn.engine.block_size if scn.placement.kv.backend == "native" else scn.placement.kv.chunk_size


def prefix_tail_tokens(pre_tok: Num, chunk: int, block: int) -> Num:
    """Shared-prefix tokens past its last full LMCache chunk that vLLM's own prefix cache still serves:
    it caches whole blocks of ``block`` tokens (``engine.block_size``), LMCache only whole chunks."""
    return ((pre_tok % chunk) // block) * block


def lmcache_chunks(size_gb: Num, chunk_bytes: float) -> Num:
    """Chunks an LMCache tier of ``size_gb`` holds."""
    return size_gb * 1e9 // chunk_bytes


# ----------------------------------------------------------------------- GPU work
def attention_flops(dims: ModelDims, computed: Num, hit: Num) -> Num:
    """Attention FLOPs of prefilling ``computed`` tokens after ``hit`` cached ones (QK^T and AV)."""
    return 4.0 * dims.layers * dims.num_heads * dims.head_dim * computed * (hit + computed / 2)


def prefill_flops(params: float, computed_tokens: Num, attention: Num) -> Num:
    return 2.0 * params * computed_tokens + attention


def prefill_gpu_s(r: Rates, flops: Num) -> Num:
    """GPU time of a prefill step: its FLOPs at the effective rate + one read of the HBM weights."""
    return flops / r.flops + r.w_hbm / r.hbm_bw + r.tp_comm_s


def decode_gpu_s(r: Rates, params: float, batch: Num, kv_bytes: Num) -> Num:
    """GPU time of a decode step of ``batch`` sequences whose KV cache holds ``kv_bytes``."""
    return _max((r.w_hbm + kv_bytes) / r.hbm_bw, 2.0 * params * batch / r.flops) + r.tp_comm_s


# ----------------------------------------------------------------------- a step
def step_time(r: Rates, t_gpu: Num, kv_bytes: Num = 0.0, tokens: Num = 0.0) -> tuple[Num, Num]:
    """A step's wall time and the GPUs' IO wait in it, from the GPU time ``t_gpu`` (decode steps pass
    the batch's KV bytes for an offloaded KV cache's round trip; ``tokens``: tokens the step processes,
    which re-read host-resident weights under ``weight_reread_tokens``)."""
    k = r.k
    t_off = r.weight_stream_s
    if k.weight_reread_tokens > 0:
        t_off = t_off + r.dram_weight_s * tokens / k.weight_reread_tokens
    mx, mn = (np.maximum, np.minimum) if _arr(t_gpu, t_off) or _arr(kv_bytes, r.kv_offload) else (max, min)
    t_dev = mx(t_gpu, r.host_floor_s) if r.host_floor_s else t_gpu
    if r.kv_round_trip:
        t_kv = 2.0 * kv_bytes / r.kv_offload  # every layer's KV to the GPU and back
        t_dev = mx(t_dev, t_kv) + (1 - k.kv_offload_overlap) * mn(t_dev, t_kv)
    step = mx(t_dev, t_off) + (1 - k.overlap) * mn(t_dev, t_off) + k.step_overhead_s
    return step, mx(0.0, step - t_gpu - k.step_overhead_s)


def kv_load_s(r: Rates, chunk_bytes: float, cpu_chunks: Num, disk_chunks: Num, disk_read: Num) -> Num:
    """Time to load KV chunks hit in LMCache's CPU tier (over PCIe) and disk tier (drive, then PCIe)."""
    return cpu_chunks * (chunk_bytes / r.pcie) + disk_chunks * (_ratio(chunk_bytes, disk_read) + chunk_bytes / r.pcie)


def kv_store_s(r: Rates, chunk_bytes: float, cpu_chunks: Num, sync: bool) -> Num:
    """Time a prefill step spends storing newly computed KV chunks to the CPU tier: LMCache (0.5,
    non-layerwise) copies them out of the paged cache before the step ends (``sync``); vLLM's native
    OffloadingConnector copies them asynchronously (0)."""
    return cpu_chunks * (chunk_bytes / r.pcie) if sync else 0.0 * cpu_chunks


def prefill_step_gpu_s(r: Rates, t_gpu: Num, load_s: Num) -> Num:
    """A prefill step's GPU time as the step sees it: KV loads overlapped like weight streaming."""
    return t_gpu + load_s * (1 - r.k.overlap)


# ----------------------------------------------------------------------- accounting
def gpu_busy_s(r: Rates, t_gpu: Num, io_wait: Num, phase: Literal["prefill", "decode"]) -> Num:
    """Power-weighted GPU busy-seconds of a step (summed over the GPUs)."""
    frac = r.k.power_frac_prefill if phase == "prefill" else r.k.power_frac_decode
    return r.n_gpu * (t_gpu * frac + io_wait * r.k.power_frac_io_wait)


def host_busy_s(k: ModelConstants, count: Num, wall_s: Num) -> Num:
    """Host CPU busy-seconds while serving for ``wall_s``."""
    return count * wall_s * k.host_busy_frac


def weight_stream_busy_s(r: Rates, n_ssd: Num, n_hdd: Num) -> tuple[Num, Num, Num]:
    """Busy unit-seconds of DRAM, SSDs and HDDs for one step's weight streaming."""
    return _ratio(r.w_dram, r.dram_bw), _ratio(r.w_ssd, r.ssd_r) * n_ssd, _ratio(r.w_hdd, r.hdd_r) * n_hdd


def dram_chunk_busy_s(r: Rates, chunk_bytes: float) -> Num:
    """DRAM busy-seconds of one KV chunk read or written."""
    return _ratio(chunk_bytes, r.dram_bw)


def disk_chunk_busy_s(chunk_bytes: float, bandwidth: Num, n_units: Num) -> Num:
    """Drive busy unit-seconds of one KV chunk read or written at ``bandwidth`` over ``n_units`` drives."""
    return _ratio(chunk_bytes, bandwidth) * n_units
