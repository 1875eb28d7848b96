"""Iteration-level simulation of one configuration: a scenario in, a modeled Trace out.

A vLLM-style continuous-batching server with LMCache-style KV offload, step by step: arrived
requests are admitted while their KV fits in HBM and the token budget allows (one prefill step),
else the running batch decodes one token; KV chunks of every prompt are stored to the enabled
LMCache tiers (write-through, LRU per tier) and hits are loaded instead of recomputed. Every
step's time and energy come from :mod:`.physics` (the same formulas the planner's steady state
evaluates over many configurations).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..devicedb import Device, DeviceDB
from ..errors import ValidationError
from ..scenario import Scenario
from ..trace import DeviceEntry, TraceHeader, TraceWriter, host_inventory, make_channels, tool_versions
from . import physics as ph
from .configs import configs_from_scenarios
from .constants import ModelConstants, constants_for
from .workload import workload_stats


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

    def clear(self) -> None:
        self.d.clear()


def _require(dev: Device | None, attr: str, what: str) -> None:
    if dev is None or getattr(dev, attr, None) is None:
        raise ValidationError("<device_db>", None, f"{dev.key if dev else '?'}.{attr}",
                              f"missing; the performance model needs the {what}")


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
    k = constants or constants_for(scn)
    hw = scn.hardware.tiers()
    gpu_hw = hw["gpu"]
    gpu = db.get(gpu_hw.device)
    n_gpu = gpu_hw.count
    _require(gpu, "read_gb_per_s", "HBM bandwidth")
    _require(gpu, "tensor_tflops", "dense tensor TFLOP/s (bf16, or fp16 on GPUs without bf16)")
    for tier in ("ssd", "hdd"):
        if tier in hw:
            _require(db.get(hw[tier].device), "read_gb_per_s", f"{tier} read bandwidth")
    dims = scn.model.dims()
    params = dims.param_count()
    wbytes = scn.model.weight_bytes()
    kvb = scn.model.kv_bytes_per_token()
    place = scn.placement
    r = ph.rates_for(scn, configs_from_scenarios([scn], db), db, k).at(0)
    w_hbm, w_dram, w_ssd, w_hdd = r.w_hbm, r.w_dram, r.w_ssd, r.w_hdd
    assert isinstance(w_hbm, float)

    kv_hbm = ph.kv_space_bytes(place.kv.hbm_gb, gpu.capacity_bytes * n_gpu, place.gpu_memory_utilization, w_hbm)  # type: ignore[operator]
    if kv_hbm <= 0:
        raise ValidationError(scn.name or "<scenario>", None, "placement.weights.hbm",
                              f"weights in HBM ({w_hbm / 1e9:.1f} GB) leave no room for KV cache in "
                              f"{n_gpu} x {gpu.capacity_gb:g} GB (offload more weights or add GPUs)")
    kv_hbm_tokens = int(ph.kv_tokens(kv_hbm, kvb))

    # ---- LMCache tiers and vLLM's prefix cache
    chunk = ph.offload_unit_tokens(scn)
    chunk_bytes = chunk * kvb
    cpu_cfg = place.kv.local_cpu if place.kv.local_cpu and place.kv.local_cpu.enabled else None
    disk_cfg = place.kv.local_disk if place.kv.local_disk and place.kv.local_disk.enabled else None
    disk_tier = ("ssd" if "ssd" in hw else "hdd") if disk_cfg else None
    cpu_lru = _LRU(int(ph.lmcache_chunks(cpu_cfg.size_gb, chunk_bytes))) if cpu_cfg else None
    disk_lru = _LRU(int(ph.lmcache_chunks(disk_cfg.size_gb, chunk_bytes))) if disk_cfg else None
    hbm_prefix = _LRU(int(ph.hbm_prefix_chunks(kv_hbm_tokens, chunk)))
    block = scn.engine.block_size
    disk_r = r.ssd_r if disk_tier == "ssd" else r.hdd_r
    disk_w = r.ssd_w if disk_tier == "ssd" else r.hdd_w
    n_disk = hw[disk_tier].count if disk_tier else 0
    # per-chunk costs (physics)
    cpu_hit_s = ph.kv_load_s(r, chunk_bytes, 1, 0, disk_r)
    cpu_store_s = ph.kv_store_s(r, chunk_bytes, 1, place.kv.backend == "lmcache")
    disk_hit_s = ph.kv_load_s(r, chunk_bytes, 0, 1, disk_r)
    dram_chunk_s = ph.dram_chunk_busy_s(r, chunk_bytes)
    disk_read_chunk_s = ph.disk_chunk_busy_s(chunk_bytes, disk_r, n_disk)
    disk_write_chunk_s = ph.disk_chunk_busy_s(chunk_bytes, disk_w, n_disk)
    n_ssd = hw["ssd"].count if "ssd" in hw else 0
    n_hdd = hw["hdd"].count if "hdd" in hw else 0
    stream_busy = ph.weight_stream_busy_s(r, n_ssd, n_hdd)

    # ---- workload
    ws = workload_stats(scn)
    p_len, o_len, pre_tok = ws.p, ws.o, ws.pre
    if scn.workload.shared_prefix.warm and len(pre_tok) and int(pre_tok.max()) > 0:
        # a hot system prompt: its chunks (and its block-aligned tail) sit in HBM before t = 0
        n_warm = int(pre_tok.max()) // chunk
        for c in range(n_warm):
            hbm_prefix.put(("p", c))
        if ph.prefix_tail_tokens(int(pre_tok.max()), chunk, block):
            hbm_prefix.put(("pt", n_warm))
    reqs = [(float(a), int(i), int(j // len(p_len))) for j, (a, i) in enumerate(zip(ws.arrivals, ws.req))]

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

    # rows stream to the trace in batches: a long modeled run never holds its whole trace in memory
    out = Path(out_path)
    writer = TraceWriter(out, header, fsync=False)
    rows_t: list[float] = []
    rows_c: list[int] = []
    rows_v: list[float] = []

    def spill() -> None:
        writer.samples(np.asarray(rows_t), np.asarray(rows_c), np.asarray(rows_v))
        rows_t.clear()
        rows_c.clear()
        rows_v.clear()
        for mt, ev, name in markers:
            writer.marker(mt, ev, name)
        markers.clear()

    def emit(t: float) -> None:
        disk_used = (len(disk_lru) * chunk_bytes) if disk_lru else 0.0
        gauges: dict[tuple[str, str], Any] = {("gpu", "resident_bytes"): w_hbm + running_tokens * kvb, ("dram", "resident_bytes"): dram_res,
                  ("ssd", "resident_bytes"): w_ssd + (disk_used if disk_tier == "ssd" else 0.0),
                  ("hdd", "resident_bytes"): w_hdd + (disk_used if disk_tier == "hdd" else 0.0)}
        for key, ch in cid.items():
            v = gauges.get(key, acc.get(key, 0.0)) if key[1] == "resident_bytes" else acc[key]
            rows_t.append(t)
            rows_c.append(ch)
            rows_v.append(v)
        if len(rows_t) >= SPILL_ROWS:
            spill()

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

    host_tiers = [(tier, hw[tier].count) for tier in ("host", "cpu") if tier in hw]
    streamed = [(tier, w, busy) for tier, w, busy in (("dram", w_dram, stream_busy[0]), ("ssd", w_ssd, stream_busy[1]),
                                                      ("hdd", w_hdd, stream_busy[2])) if w]

    def add_host_busy(step: float) -> None:
        for tier, count in host_tiers:
            add(tier, "busy_s", ph.host_busy_s(k, count, step))  # type: ignore[arg-type]

    def account_weight_stream() -> None:
        for tier, w, busy in streamed:
            add(tier, "bytes_read", w)  # type: ignore[arg-type]
            add(tier, "busy_s", busy)  # type: ignore[arg-type]

    def cached_prefix(ri: int) -> int:
        """Prefix tokens of request ``ri`` already in HBM (looked up without touching the LRU order)."""
        n_pre = int(pre_tok[ri] // chunk)
        for c in range(n_pre):
            if ("p", c) not in hbm_prefix.d:
                return c * chunk
        tail = int(ph.prefix_tail_tokens(int(pre_tok[ri]), chunk, block))
        return n_pre * chunk + (tail if tail and ("pt", n_pre) in hbm_prefix.d else 0)

    t = 0.0
    waiting = sorted(reqs, key=lambda x: x[0])
    wi = 0
    running: list[dict[str, Any]] = []
    running_tokens = 0
    ttft = np.zeros(len(reqs))
    tpot = np.zeros(len(reqs))
    done = 0
    idx_of = {id(x): i for i, x in enumerate(reqs)}
    # passes one after another with the HBM prefix cache emptied between them (workload option)
    sequential = bool(scn.workload.reset_prefix_cache_between_passes) and ws.passes > 1
    left_in_pass = np.bincount([ps for _, _, ps in reqs], minlength=ws.passes)
    cur_pass = 0
    emit(0.0)
    max_iters = 5_000_000
    it = 0
    while done < len(reqs) and it < max_iters:
        it += 1
        # admit arrived requests (KV for prompt + output must fit in HBM)
        admitted: list[dict[str, Any]] = []
        budget = scn.engine.max_num_batched_tokens
        while wi < len(waiting) and waiting[wi][0] <= t + 1e-12 and len(running) + len(admitted) < scn.engine.max_num_seqs:
            arr, ri, ps = waiting[wi]
            if sequential and ps > cur_pass:
                if left_in_pass[cur_pass] > 0:
                    break          # the pass before is still running
                cur_pass = ps
                hbm_prefix.clear()  # reset_prefix_cache()
            need = int(p_len[ri] + o_len[ri])
            if running_tokens + need > kv_hbm_tokens and (running or admitted):
                break
            new_tok = int(p_len[ri]) - cached_prefix(ri)   # vLLM's budget counts tokens to compute
            if admitted and budget - new_tok < 0:
                break
            budget -= new_tok
            admitted.append({"i": idx_of[id(waiting[wi])], "r": ri, "ps": ps, "arr": arr, "gen": 0, "ctx": int(p_len[ri])})
            running_tokens += need
            wi += 1
        if admitted:
            set_phase(t, "prefill")
            comp_tokens = 0
            attn = 0.0
            load_s: float = 0.0
            for q in admitted:
                ri = q["r"]
                n_chunks = int(p_len[ri] // chunk)
                n_pre = int(pre_tok[ri] // chunk)
                hit_tokens = 0
                for c in range(n_chunks):
                    key = ("p", c) if c < n_pre else ("u", ri, c)
                    if hbm_prefix.hit(key):
                        hit_tokens += chunk
                        continue
                    if cpu_lru is not None and cpu_lru.hit(key):
                        hit_tokens += chunk
                        load_s += cpu_hit_s  # type: ignore[assignment]
                        add("dram", "bytes_read", chunk_bytes)
                        add("dram", "app_bytes_read", chunk_bytes)
                        add("dram", "busy_s", dram_chunk_s)  # type: ignore[arg-type]
                        hbm_prefix.put(key)
                        continue
                    if disk_lru is not None and disk_lru.hit(key):
                        assert disk_tier is not None
                        hit_tokens += chunk
                        load_s += disk_hit_s  # type: ignore[assignment]
                        add(disk_tier, "bytes_read", chunk_bytes)
                        add(disk_tier, "app_bytes_read", chunk_bytes)
                        add(disk_tier, "busy_s", disk_read_chunk_s)  # type: ignore[arg-type]
                        if cpu_lru is not None:
                            cpu_lru.put(key)
                            add("dram", "bytes_written", chunk_bytes)
                        hbm_prefix.put(key)
                        continue
                    # miss: computed now, stored write-through to the enabled tiers
                    hbm_prefix.put(key)
                    if cpu_lru is not None and cpu_lru.put(key):
                        add("dram", "bytes_written", chunk_bytes)
                        add("dram", "busy_s", dram_chunk_s)  # type: ignore[arg-type]
                        load_s += cpu_store_s  # type: ignore[assignment]
                    if disk_lru is not None and disk_lru.put(key):
                        assert disk_tier is not None
                        add(disk_tier, "bytes_written", chunk_bytes)
                        add(disk_tier, "busy_s", disk_write_chunk_s)  # type: ignore[arg-type]
                tail = int(ph.prefix_tail_tokens(int(pre_tok[ri]), chunk, block))
                if tail and hit_tokens == n_pre * chunk:
                    # the prefix's last partial chunk: vLLM's prefix cache holds its full blocks (HBM only)
                    if hbm_prefix.hit(("pt", n_pre)):
                        hit_tokens += tail
                    else:
                        hbm_prefix.put(("pt", n_pre))
                computed = int(p_len[ri]) - hit_tokens
                comp_tokens += computed
                attn += ph.attention_flops(dims, computed, hit_tokens)  # type: ignore[assignment]
                add("gpu", "bytes_written", p_len[ri] * kvb)
                add("workload", "prompt_tokens", float(p_len[ri]))
            t_gpu = ph.prefill_gpu_s(r, ph.prefill_flops(params, comp_tokens, attn))
            step, io_wait = ph.step_time(r, ph.prefill_step_gpu_s(r, t_gpu, load_s), tokens=comp_tokens)
            account_weight_stream()
            add("gpu", "bytes_read", w_hbm)
            add("gpu", "busy_s", ph.gpu_busy_s(r, t_gpu, io_wait, "prefill"))  # type: ignore[arg-type]
            add_host_busy(step)  # type: ignore[arg-type]
            t += step  # type: ignore[assignment]
            for q in admitted:
                q["gen"] = 1
                q["ctx"] += 1
                ttft[q["i"]] = t - q["arr"] + k.request_overhead_s
                q["t_first"] = t
                add("workload", "generated_tokens", 1.0)
            running.extend(admitted)
        elif running:
            set_phase(t, "decode")
            B = len(running)
            ctx = sum(q["ctx"] for q in running)
            t_gpu = ph.decode_gpu_s(r, params, B, ctx * kvb)
            step, io_wait = ph.step_time(r, t_gpu, ctx * kvb, tokens=B)
            account_weight_stream()
            add("gpu", "bytes_read", w_hbm + ctx * kvb)
            add("gpu", "bytes_written", B * kvb)
            add("gpu", "busy_s", ph.gpu_busy_s(r, t_gpu, io_wait, "decode"))  # type: ignore[arg-type]
            add_host_busy(step)  # type: ignore[arg-type]
            t += step  # type: ignore[assignment]
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
                    left_in_pass[q["ps"]] -= 1
                    add("workload", "requests_done", 1.0)
                else:
                    still.append(q)
            running = still
        else:
            # idle until the next arrival
            set_phase(t, None)
            t_next = waiting[wi][0] if wi < len(waiting) else t
            t = max(t, t_next)
        # requests whose output is a single token are done at prefill
        fin = [q for q in running if q["gen"] >= o_len[q["r"]]]
        for q in fin:
            tpot[q["i"]] = 0.0
            running_tokens -= int(p_len[q["r"]] + o_len[q["r"]])
            done += 1
            left_in_pass[q["ps"]] -= 1
            add("workload", "requests_done", 1.0)
        if fin:
            running = [q for q in running if q["gen"] < o_len[q["r"]]]
        emit(t)
    set_phase(t, None)

    multi = o_len[[ri for _, ri, _ in reqs]] > 1
    tp_ms = tpot[multi] * 1e3 if multi.any() else np.zeros(0)
    summary: dict[str, Any] = {
        "requests": len(reqs),
        "prompt_tokens": int(sum(p_len[ri] for _, ri, _ in reqs)),
        "generated_tokens": int(sum(o_len[ri] for _, ri, _ in reqs)),
        "duration_s": t,
        "latency": {
            "ttft_ms": _stats(ttft * 1e3),
            "tpot_ms": _stats(tp_ms),
        },
        "model": {"kv_bytes_per_token": kvb, "weight_bytes": wbytes, "kv_hbm_tokens": kv_hbm_tokens,
                  "params": params, "constants": asdict(k)},
    }
    if it >= max_iters and done < len(reqs):
        summary["stopped"] = (f"the simulation stopped after {max_iters:,} steps with {done:,} of {len(reqs):,} "
                              "requests done; figures cover the simulated part")
    spill()
    writer.close(summary)
    return ModelResult(out, len(reqs), summary["prompt_tokens"], summary["generated_tokens"], t, ttft, tpot, summary)


SPILL_ROWS = 200_000   # trace rows held before they are written (about 5 MB)


def _stats(x: np.ndarray) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    return {"mean": float(np.mean(x)), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99))}
