"""Synthetic node traces with the channels a recorded GPU serving node has (for the fleet benchmark
and tests; ``source="replayed"``, never presented as a measurement).

One node: ``gpu0`` (H100 SXM, NVML energy counter, power and HBM use), ``host`` (process-tree CPU
time), ``dram`` (resident bytes of the serving tree), ``ssd0`` (an NVMe drive: diskstats bytes and
busy time, LMCache's app-level bytes and its KV files' size) and the engine's token/request
counters, sampled at ``hz``. Load follows a slow wave with bursts (seeded), so counters move at
realistic, varying rates: 300–700 W on the GPU, 2–6 busy cores, 50–400 MB/s of KV offload.
Written in chunks: memory stays flat in the trace's length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..trace import DeviceEntry, TraceHeader, TraceWriter, make_channels

DEVICES = [
    DeviceEntry("gpu0", "hbm", "h100-sxm5-80gb", "NVIDIA H100 80GB HBM3", 1, 80e9),
    DeviceEntry("host", "host", "amd-epyc-9654", "AMD EPYC 9654", 1, share=0.25),
    DeviceEntry("dram", "dram", "ddr4-rdimm-64gb", "DDR4 RDIMM 64 GB", 8, 64e9),
    DeviceEntry("ssd0", "ssd", "samsung-pm9a3-7.68tb", "SAMSUNG MZQL27T6HBLA-00A07", 1, 7.68e12),
]
CHANNELS = [
    ("gpu0", "energy_j", "nvml"), ("gpu0", "power_w", "nvml"), ("gpu0", "resident_bytes", "nvml"),
    ("gpu0", "utilization", "nvml"), ("host", "cpu_time_s", "procio"), ("dram", "resident_bytes", "memory"),
    ("ssd0", "bytes_read", "diskstats"), ("ssd0", "bytes_written", "diskstats"), ("ssd0", "busy_s", "diskstats"),
    ("ssd0", "app_bytes_read", "lmcache_tap"), ("ssd0", "app_bytes_written", "lmcache_tap"),
    ("ssd0", "resident_bytes", "lmcache_tap"),
    ("workload", "prompt_tokens", "vllm_metrics"), ("workload", "generated_tokens", "vllm_metrics"),
    ("workload", "requests_done", "vllm_metrics"),
]


def header(node: str, t0_unix: float) -> TraceHeader:
    return TraceHeader(source="replayed", devices=list(DEVICES), channels=make_channels(CHANNELS), t0_unix=t0_unix,
                       host={"hostname": node, "cpu_count": 96, "memory_bytes": 512e9},
                       scenario={"carbon": {"region": "world", "pue": "industry-average", "allocation": "max"}},
                       notes=["synthetic trace (storagecarbon.fleet.synthetic): benchmark and test data"])


def write_node_trace(path: str | Path, *, node: str, t0_unix: float, duration_s: float = 3600.0, hz: float = 10.0,
                     seed: int = 0, chunk_s: float = 60.0) -> int:
    """Write one node's trace; returns the number of sample rows."""
    rng = np.random.default_rng(seed)
    n_ch = len(CHANNELS)
    n_ticks = int(duration_s * hz) + 1
    per_chunk = max(1, int(chunk_s * hz))
    state = np.zeros(n_ch)
    kv_files = 0.0
    rows = 0
    phase = rng.uniform(0, 2 * np.pi)
    with TraceWriter(path, header(node, t0_unix), fsync=False) as w:
        for k0 in range(0, n_ticks, per_chunk):
            k = np.arange(k0, min(n_ticks, k0 + per_chunk))
            t = k / hz
            burst = rng.random(len(k)) < 0.05
            load = np.clip(0.55 + 0.35 * np.sin(2 * np.pi * t / 1800 + phase) + 0.1 * rng.standard_normal(len(k))
                           + 0.3 * burst, 0.05, 1.0)
            dt = 1.0 / hz
            power = 300 + 400 * load
            cols = np.zeros((len(k), n_ch))
            inc = np.zeros((len(k), n_ch))
            inc[:, 0] = power * dt
            cols[:, 1] = power
            cols[:, 2] = 60e9 + 15e9 * load
            cols[:, 3] = load
            inc[:, 4] = (2 + 4 * load) * dt
            cols[:, 5] = 150e9 + 50e9 * load
            offload = (50e6 + 350e6 * load) * dt
            inc[:, 6] = 0.6 * offload + rng.exponential(1e5, len(k))
            inc[:, 7] = offload + rng.exponential(2e5, len(k))
            inc[:, 8] = np.minimum(dt, (0.2 + 0.6 * load) * dt)
            inc[:, 9] = 0.55 * offload
            inc[:, 10] = 0.95 * offload
            kv = np.minimum(kv_files + np.cumsum(0.95 * offload) * 0.05, 2e12)
            kv_files = float(kv[-1])
            cols[:, 11] = kv
            inc[:, 12] = 2000 * load * dt
            inc[:, 13] = 900 * load * dt
            inc[:, 14] = 4 * load * dt
            cum = state + np.cumsum(inc, axis=0)
            state = cum[-1]
            for j, (_d, m, _s) in enumerate(CHANNELS):
                if m in ("energy_j", "cpu_time_s", "bytes_read", "bytes_written", "busy_s", "app_bytes_read",
                         "app_bytes_written", "prompt_tokens", "generated_tokens", "requests_done"):
                    cols[:, j] = cum[:, j]
            jitter = rng.uniform(0, 2e-3, (len(k), n_ch))  # sensors are read one after another
            ts = (t[:, None] + jitter).ravel()
            ch = np.tile(np.arange(n_ch), len(k))
            w.samples(ts, ch, cols.ravel())
            rows += len(ts)
    return rows
