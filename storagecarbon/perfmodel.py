"""Offload-aware performance model: a scenario in, a modeled Trace out.

An iteration-level simulation of a vLLM-style continuous-batching server with LMCache-style KV
offload. Prefill is compute-bound (2 x params x tokens + attention FLOPs over the GPUs' dense
bf16 peak x efficiency); decode is memory-bound (weights in HBM + the batch's KV bytes per step
over HBM bandwidth x efficiency); weights placed in DRAM stream over PCIe every step and
weights on SSD/HDD stream from the drives; KV chunks of every prompt are stored to the
enabled LMCache tiers (write-through, LRU per tier) and hits are loaded instead of recomputed.
All tunable constants live in :class:`ModelConstants` with their basis; a calibration file
(``storagecarbon calibrate``) replaces them with values fitted to measured runs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .devicedb import Device, DeviceDB
from .errors import ValidationError
from .scenario import DTYPE_BYTES, LengthDist, Scenario
from .trace import DeviceEntry, TraceHeader, TraceWriter, host_inventory, make_channels, tool_versions


@dataclass(frozen=True)
class ModelConstants:
    """Constants a measured run can calibrate. Defaults and their basis in ``BASIS``."""

    hbm_efficiency: float = 0.70
    compute_efficiency: float = 0.50
    pcie_gbps: float = 25.0
    disk_efficiency: float = 0.80
    overlap: float = 0.5
    tp_efficiency: float = 0.85
    step_overhead_s: float = 0.004
    power_frac_prefill: float = 0.80
    power_frac_decode: float = 0.55
    power_frac_io_wait: float = 0.20
    host_busy_frac: float = 0.25
    layer_overhead_s: float = 0.0
    kv_offload_overlap: float = 0.0
    kv_offload_gbps: float = 50.0
    source: str = "defaults"


BASIS = {
    "hbm_efficiency": "achieved / peak HBM bandwidth in memory-bound decode; 0.6-0.8 typical of vLLM decode kernels",
    "compute_efficiency": "achieved / peak dense bf16 FLOP/s in prefill (MFU); 0.4-0.6 typical for large-batch prefill",
    "pcie_gbps": "effective host<->GPU copy bandwidth per GPU; PCIe 4.0 x16 ~25 GB/s; 52-55 GB/s measured on the lent H100 (PCIe 5.0)",
    "disk_efficiency": "achieved / datasheet sequential read of the drives for large reads",
    "overlap": "fraction of offload transfer time hidden behind GPU work (0 = serial, 1 = perfect overlap; FlexGen overlaps IO and compute)",
    "tp_efficiency": "throughput factor for tensor parallelism over more than one GPU (communication)",
    "step_overhead_s": "fixed per-iteration scheduling/launch overhead",
    "power_frac_prefill": "GPU power in prefill as a fraction between idle and active (TDP) power",
    "power_frac_decode": "GPU power in decode as a fraction between idle and active power",
    "power_frac_io_wait": "GPU power while waiting for offloaded weights/KV",
    "host_busy_frac": "host CPU busy share while serving (drives host power between idle and active)",
    "layer_overhead_s": "host time per decoder layer per step (Python + kernel launches of eager execution); "
                        "0 for CUDA-graph engines such as vLLM; a step takes at least layers x this",
    "kv_offload_gbps": "effective host<->GPU rate of an offloaded KV cache's copies (transformers OffloadedCache: non-blocking copies through pinned memory, unlike accelerate's per-tensor weight streaming)",
    "kv_offload_overlap": "fraction of the per-step KV round trip of an offloaded KV cache (transformers "
                          "OffloadedCache: every layer's KV to the GPU and back each step) hidden behind compute",
}


def load_constants(path: str | Path | None) -> ModelConstants:
    if path is None:
        return ModelConstants()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ValidationError(str(p), None, "calibration", "file does not exist") from None
    consts = (data or {}).get("constants", {})
    allowed = {f.name for f in fields(ModelConstants)}
    for k, v in consts.items():
        if k not in allowed:
            raise ValidationError(str(p), None, f"constants.{k}", f"unknown constant (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(v, (int, float)) or v < 0:
            raise ValidationError(str(p), None, f"constants.{k}", "must be a number >= 0")
    return ModelConstants(**{**consts, "source": f"calibration {p}"})


def _lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    if d.dist == "fixed":
        x = np.full(n, d.mean)
    elif d.dist == "uniform":
        lo = d.min if d.min is not None else d.mean * 0.5
        hi = d.max if d.max is not None else 2 * d.mean - lo
        x = rng.uniform(lo, hi, n)
    else:
        mu = math.log(d.mean) - d.sigma ** 2 / 2
        x = rng.lognormal(mu, d.sigma, n)
    if d.min is not None:
        x = np.maximum(x, d.min)
    if d.max is not None:
        x = np.minimum(x, d.max)
    return np.maximum(1, np.round(x)).astype(np.int64)


def sample_workload(wl: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scenario's requests, seeded: prompt lengths, output lengths, shared-prefix tokens and
    arrival times of one pass (Poisson at ``arrival_rate_rps``, else all at t = 0). The planner's
    analytic model draws the same requests."""
    rng = np.random.default_rng(wl.seed)
    n_req = wl.num_requests()
    p_len = _lengths(wl.prompt_tokens, n_req, rng)
    o_len = _lengths(wl.output_tokens, n_req, rng)
    has_prefix = rng.random(n_req) < wl.shared_prefix.fraction
    pre_tok = np.where(has_prefix, np.minimum(wl.shared_prefix.tokens, p_len - 1), 0)
    if wl.arrival_rate_rps:
        arrivals = np.cumsum(rng.exponential(1.0 / wl.arrival_rate_rps, n_req))
        arrivals -= arrivals[0]
    else:
        arrivals = np.zeros(n_req)
    return p_len, o_len, pre_tok, arrivals


class _LRU:
    def __init__(self, capacity_chunks: int):
        self.cap = capacity_chunks
        self.d: OrderedDict[Any, None] = OrderedDict()

    def hit(self, k: Any) -> bool:
        if k in self.d:
            self.d.move_to_end(k)
            return True
        return False

    def put(self, k: Any) -> bool:
        if self.cap <= 0:
            return False
        if k in self.d:
            self.d.move_to_end(k)
            return False
        self.d[k] = None
        if len(self.d) > self.cap:
            self.d.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self.d)


def _fig(dev: Device | None, attr: str, what: str) -> float:
    f = getattr(dev, attr, None) if dev is not None else None
    if f is None:
        raise ValidationError("<device_db>", None, f"{dev.key if dev else '?'}.{attr}",
                              f"missing; the performance model needs the {what}")
    return f.central


@dataclass
class ModelResult:
    path: Path
    requests: int
    prompt_tokens: int
    generated_tokens: int
    duration_s: float
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    summary: dict[str, Any]


def run_model(scn: Scenario, db: DeviceDB, out_path: str | Path, *, constants: ModelConstants | None = None) -> ModelResult:
    """Simulate the scenario and write a modeled trace to ``out_path``."""
    k = constants or load_constants(scn.calibration)
    hw = scn.hardware.tiers()
    gpu_hw = hw["gpu"]
    gpu = db.get(gpu_hw.device)
    n_gpu = gpu_hw.count
    dims = scn.model.dims()
    params = dims.param_count()
    wbytes = scn.model.weight_bytes()
    kvb = scn.model.kv_bytes_per_token()
    place = scn.placement
    w_hbm, w_dram = wbytes * place.weights.hbm, wbytes * place.weights.dram
    w_ssd, w_hdd = wbytes * place.weights.ssd, wbytes * place.weights.hdd

    hbm_bw = _fig(gpu, "read_gbps", "HBM bandwidth") * 1e9 * n_gpu * k.hbm_efficiency
    flops = _fig(gpu, "tensor_tflops", "dense tensor TFLOP/s (bf16, or fp16 on GPUs without bf16)") * 1e12 * n_gpu \
        * k.compute_efficiency
    tp = k.tp_efficiency if n_gpu > 1 else 1.0
    pcie = k.pcie_gbps * 1e9 * n_gpu
    hbm_cap = gpu.capacity_bytes * n_gpu  # type: ignore[operator]
    kv_hbm = place.kv.hbm_gb * 1e9 if place.kv.hbm_gb else hbm_cap * place.gpu_memory_utilization - w_hbm
    if kv_hbm <= 0:
        raise ValidationError(scn.name or "<scenario>", None, "placement.weights.hbm",
                              f"weights in HBM ({w_hbm / 1e9:.1f} GB) leave no room for KV cache in "
                              f"{n_gpu} x {gpu.capacity_gb:g} GB (offload more weights or add GPUs)")
    kv_hbm_tokens = int(kv_hbm // kvb)

    def drive_bw(tier: str) -> tuple[float, float]:
        if tier not in hw:
            return (0.0, 0.0)
        d = db.get(hw[tier].device)
        r = _fig(d, "read_gbps", f"{tier} read bandwidth") * 1e9 * hw[tier].count * k.disk_efficiency
        wf = d.write_gbps.central if d.write_gbps is not None else d.read_gbps.central  # type: ignore[union-attr]
        return r, wf * 1e9 * hw[tier].count * k.disk_efficiency

    ssd_r, ssd_w = drive_bw("ssd")
    hdd_r, hdd_w = drive_bw("hdd")
    dram_bw = 0.0
    if "dram" in hw:
        d = db.get(hw["dram"].device)
        dram_bw = (d.read_gbps.central * 1e9 * hw["dram"].count) if d.read_gbps else pcie * 4

    # ---- LMCache tiers
    chunk = place.kv.chunk_size
    chunk_bytes = chunk * kvb
    cpu_cfg = place.kv.local_cpu if place.kv.local_cpu and place.kv.local_cpu.enabled else None
    disk_cfg = place.kv.local_disk if place.kv.local_disk and place.kv.local_disk.enabled else None
    disk_tier = ("ssd" if "ssd" in hw else "hdd") if disk_cfg else None
    cpu_lru = _LRU(int(cpu_cfg.size_gb * 1e9 // chunk_bytes)) if cpu_cfg else None
    disk_lru = _LRU(int(disk_cfg.size_gb * 1e9 // chunk_bytes)) if disk_cfg else None
    hbm_prefix = _LRU(max(0, kv_hbm_tokens // (4 * chunk)))  # vLLM's own prefix cache: spare HBM blocks

    # ---- workload
    wl = scn.workload
    n_req = wl.num_requests()
    p_len, o_len, pre_tok, arrivals = sample_workload(wl)
    reqs = []
    for ps in range(wl.passes):
        offset = ps * (float(arrivals[-1]) + 1.0) if wl.arrival_rate_rps else 0.0
        for r in range(n_req):
            reqs.append((float(arrivals[r] + offset), r, ps))
    if wl.arrival_rate_rps is None and wl.passes > 1:
        # offline passes run one after the other
        reqs = [(0.0, r, ps) for ps in range(wl.passes) for r in range(n_req)]

    # ---- trace set-up
    devices = [DeviceEntry("gpu", "hbm", gpu.key, gpu.name, n_gpu, gpu.capacity_bytes)]
    specs = [("gpu", m, "model") for m in ("busy_s", "bytes_read", "bytes_written", "resident_bytes")]
    for tier in ("host", "cpu", "dram", "ssd", "hdd"):
        if tier in hw:
            d = db.get(hw[tier].device)
            devices.append(DeviceEntry(tier, d.tier, d.key, d.name, hw[tier].count, d.capacity_bytes,
                                       share=hw[tier].share))
            ms = ["busy_s"] if tier in ("host", "cpu") else ["busy_s", "bytes_read", "bytes_written", "resident_bytes",
                                                              "app_bytes_read"]  # app_bytes_read: KV loaded (hits)
            specs += [(tier, m, "model") for m in ms]
    specs += [("workload", m, "model") for m in ("prompt_tokens", "generated_tokens", "requests_done")]
    channels = make_channels(specs)
    cid = {(c.device, c.metric): c.id for c in channels}
    header = TraceHeader(source="modeled", devices=devices, channels=channels,
                         sensors={"model": {"available": True, "reason": f"performance model, constants: {k.source}"}},
                         scenario=scn.model_dump(mode="json"), host=host_inventory(), tool_versions=tool_versions(),
                         notes=[f"performance model constants: {k.source}", f"constants: {asdict(k)}"])
    acc = {key: 0.0 for key in cid}
    # static occupancy
    dram_res = w_dram + (cpu_cfg.size_gb * 1e9 if cpu_cfg else 0.0)  # LMCache allocates its CPU buffer up front

    rows_t: list[float] = []
    rows_c: list[int] = []
    rows_v: list[float] = []

    def emit(t: float) -> None:
        disk_used = (len(disk_lru) * chunk_bytes) if disk_lru else 0.0
        gauges = {("gpu", "resident_bytes"): w_hbm + running_tokens * kvb, ("dram", "resident_bytes"): dram_res,
                  ("ssd", "resident_bytes"): w_ssd + (disk_used if disk_tier == "ssd" else 0.0),
                  ("hdd", "resident_bytes"): w_hdd + (disk_used if disk_tier == "hdd" else 0.0)}
        for key, ch in cid.items():
            v = gauges.get(key, acc.get(key, 0.0)) if key[1] == "resident_bytes" else acc[key]
            rows_t.append(t)
            rows_c.append(ch)
            rows_v.append(v)

    def add(dev: str, metric: str, v: float) -> None:
        if (dev, metric) in acc:
            acc[(dev, metric)] += v

    markers: list[tuple[float, str, str]] = []
    phase = None

    def set_phase(t: float, p: str | None) -> None:
        nonlocal phase
        if p == phase:
            return
        if phase is not None:
            markers.append((t, "phase_end", phase))
        if p is not None:
            markers.append((t, "phase_start", p))
        phase = p

    weight_stream_s = (w_dram / pcie if w_dram else 0.0) + (w_ssd / ssd_r if w_ssd else 0.0) + \
                      (w_hdd / hdd_r if w_hdd else 0.0)

    host_floor_s = dims.layers * k.layer_overhead_s
    kv_round_trip = bool(scn.engine.transformers and scn.engine.transformers.offload == "kv-cpu")

    def offload_step(t_gpu: float, kv_bytes: float = 0.0) -> tuple[float, float]:
        """Step time with weight streaming overlapped; returns (step_s, io_wait_s)."""
        t_dev = max(t_gpu, host_floor_s)
        if kv_round_trip and kv_bytes:
            t_kv = 2.0 * kv_bytes / (k.kv_offload_gbps * 1e9 * n_gpu)  # every layer's KV to the GPU and back
            t_dev = max(t_dev, t_kv) + (1 - k.kv_offload_overlap) * min(t_dev, t_kv)
        t_off = weight_stream_s
        step = max(t_dev, t_off) + (1 - k.overlap) * min(t_dev, t_off) + k.step_overhead_s
        return step, max(0.0, step - t_gpu - k.step_overhead_s)

    def add_host_busy(step: float) -> None:
        for tier in ("host", "cpu"):
            if tier in hw:
                add(tier, "busy_s", hw[tier].count * step * k.host_busy_frac)

    def account_weight_stream() -> None:
        if w_dram:
            add("dram", "bytes_read", w_dram)
            add("dram", "busy_s", w_dram / dram_bw if dram_bw else 0.0)
        if w_ssd:
            add("ssd", "bytes_read", w_ssd)
            add("ssd", "busy_s", w_ssd / ssd_r * hw["ssd"].count)
        if w_hdd:
            add("hdd", "bytes_read", w_hdd)
            add("hdd", "busy_s", w_hdd / hdd_r * hw["hdd"].count)

    t = 0.0
    waiting = list(reqs)
    waiting.sort(key=lambda x: x[0])
    wi = 0
    running: list[dict[str, Any]] = []
    running_tokens = 0
    ttft = np.zeros(len(reqs))
    tpot = np.zeros(len(reqs))
    done = 0
    idx_of = {id(x): i for i, x in enumerate(reqs)}
    emit(0.0)
    max_iters = 5_000_000
    it = 0
    while done < len(reqs) and it < max_iters:
        it += 1
        # admit arrived requests (KV for prompt + output must fit in HBM)
        admitted = []
        budget = scn.engine.max_num_batched_tokens
        while wi < len(waiting) and waiting[wi][0] <= t + 1e-12 and len(running) + len(admitted) < scn.engine.max_num_seqs:
            arr, r, ps = waiting[wi]
            need = int(p_len[r] + o_len[r])
            if running_tokens + need > kv_hbm_tokens and (running or admitted):
                break
            if admitted and budget - int(p_len[r]) < 0:
                break
            budget -= int(p_len[r])
            admitted.append({"i": idx_of[id(waiting[wi])], "r": r, "ps": ps, "arr": arr, "gen": 0, "ctx": int(p_len[r])})
            running_tokens += need
            wi += 1
        if admitted:
            set_phase(t, "prefill")
            comp_tokens = 0
            attn = 0.0
            load_s = 0.0
            for q in admitted:
                r, ps = q["r"], q["ps"]
                n_chunks = int(p_len[r] // chunk)
                n_pre = int(pre_tok[r] // chunk)
                hit_tokens = 0
                for c in range(n_chunks):
                    key = ("p", c) if c < n_pre else ("u", r, c)
                    if hbm_prefix.hit(key):
                        hit_tokens += chunk
                        continue
                    if cpu_lru is not None and cpu_lru.hit(key):
                        hit_tokens += chunk
                        load_s += chunk_bytes / pcie
                        add("dram", "bytes_read", chunk_bytes)
                        add("dram", "app_bytes_read", chunk_bytes)
                        add("dram", "busy_s", chunk_bytes / dram_bw if dram_bw else 0.0)
                        hbm_prefix.put(key)
                        continue
                    if disk_lru is not None and disk_lru.hit(key):
                        hit_tokens += chunk
                        rbw = ssd_r if disk_tier == "ssd" else hdd_r
                        load_s += chunk_bytes / rbw + chunk_bytes / pcie
                        add(disk_tier, "bytes_read", chunk_bytes)
                        add(disk_tier, "app_bytes_read", chunk_bytes)
                        add(disk_tier, "busy_s", chunk_bytes / rbw * hw[disk_tier].count)
                        if cpu_lru is not None:
                            cpu_lru.put(key)
                            add("dram", "bytes_written", chunk_bytes)
                        hbm_prefix.put(key)
                        continue
                    # miss: computed now, stored write-through to the enabled tiers
                    hbm_prefix.put(key)
                    if cpu_lru is not None and cpu_lru.put(key):
                        add("dram", "bytes_written", chunk_bytes)
                        add("dram", "busy_s", chunk_bytes / dram_bw if dram_bw else 0.0)
                    if disk_lru is not None and disk_lru.put(key):
                        wbw = ssd_w if disk_tier == "ssd" else hdd_w
                        add(disk_tier, "bytes_written", chunk_bytes)
                        add(disk_tier, "busy_s", chunk_bytes / wbw * hw[disk_tier].count)
                computed = int(p_len[r]) - hit_tokens
                comp_tokens += computed
                attn += 4.0 * dims.layers * dims.num_heads * dims.head_dim * computed * (hit_tokens + computed / 2)
                add("gpu", "bytes_written", p_len[r] * kvb)
                add("workload", "prompt_tokens", float(p_len[r]))
            fl = 2.0 * params * comp_tokens + attn
            t_gpu = fl / (flops * tp) + w_hbm / hbm_bw
            step, io_wait = offload_step(t_gpu + load_s * (1 - k.overlap))
            account_weight_stream()
            add("gpu", "bytes_read", w_hbm)
            add("gpu", "busy_s", n_gpu * (t_gpu * k.power_frac_prefill + io_wait * k.power_frac_io_wait))
            add_host_busy(step)
            t += step
            for q in admitted:
                q["gen"] = 1
                q["ctx"] += 1
                ttft[q["i"]] = t - q["arr"]
                q["t_first"] = t
                add("workload", "generated_tokens", 1.0)
            running.extend(admitted)
        elif running:
            set_phase(t, "decode")
            B = len(running)
            ctx = sum(q["ctx"] for q in running)
            t_mem = (w_hbm + ctx * kvb) / hbm_bw
            t_comp = 2.0 * params * B / (flops * tp)
            t_gpu = max(t_mem, t_comp)
            step, io_wait = offload_step(t_gpu, ctx * kvb)
            account_weight_stream()
            add("gpu", "bytes_read", w_hbm + ctx * kvb)
            add("gpu", "bytes_written", B * kvb)
            add("gpu", "busy_s", n_gpu * (t_gpu * k.power_frac_decode + io_wait * k.power_frac_io_wait))
            add_host_busy(step)
            t += step
            add("workload", "generated_tokens", float(B))
            still = []
            for q in running:
                q["gen"] += 1
                q["ctx"] += 1
                if q["gen"] >= o_len[q["r"]]:
                    n_out = q["gen"]
                    tpot[q["i"]] = (t - q["t_first"]) / max(n_out - 1, 1)
                    running_tokens -= int(p_len[q["r"]] + o_len[q["r"]])
                    done += 1
                    add("workload", "requests_done", 1.0)
                else:
                    still.append(q)
            # requests with one output token finish after prefill
            running = still
        else:
            # idle until the next arrival
            set_phase(t, None)
            t_next = waiting[wi][0] if wi < len(waiting) else t
            add("host", "busy_s", 0.0)
            t = max(t, t_next)
        # requests whose output is a single token are done at prefill
        fin = [q for q in running if q["gen"] >= o_len[q["r"]]]
        for q in fin:
            tpot[q["i"]] = 0.0
            running_tokens -= int(p_len[q["r"]] + o_len[q["r"]])
            done += 1
            add("workload", "requests_done", 1.0)
        if fin:
            running = [q for q in running if q["gen"] < o_len[q["r"]]]
        emit(t)
    set_phase(t, None)

    out = Path(out_path)
    multi = o_len[[r for _, r, _ in reqs]] > 1
    tp_ms = tpot[multi] * 1e3 if multi.any() else np.zeros(0)
    summary = {
        "requests": len(reqs),
        "prompt_tokens": int(sum(p_len[r] for _, r, _ in reqs)),
        "generated_tokens": int(sum(o_len[r] for _, r, _ in reqs)),
        "duration_s": t,
        "latency": {
            "ttft_ms": _stats(ttft * 1e3),
            "tpot_ms": _stats(tp_ms),
        },
        "model": {"kv_bytes_per_token": kvb, "weight_bytes": wbytes, "kv_hbm_tokens": kv_hbm_tokens,
                  "params": params, "constants": asdict(k)},
    }
    with TraceWriter(out, header, fsync=False) as w:
        w.samples(np.asarray(rows_t), np.asarray(rows_c), np.asarray(rows_v))
        for mt, ev, name in markers:
            w.marker(mt, ev, name)
        w.close(summary)
    return ModelResult(out, len(reqs), summary["prompt_tokens"], summary["generated_tokens"], t, ttft, tpot, summary)


def _stats(x: np.ndarray) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    return {"mean": float(np.mean(x)), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99))}
