"""Attribution throughput on a long synthetic trace (issue target: >= 5 M samples/s, memory flat).

Writes synthetic traces of increasing length (8 devices x 6 channels, 10 Hz-like timestamps,
phase markers), then times aggregate() + attribute() and records peak RSS growth for each
length. Run: .venv/bin/python benchmarks/attribution_bench.py [--out benchmarks/results/attribution.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from storagecarbon.carbon.attribute import CarbonInputs, attribute

from storagecarbon.carbon.sampling import Triple
from storagecarbon.devicedb import DeviceDB
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels
from storagecarbon.carbon.usage import aggregate

DEVICES = [("gpu0", "hbm", "h100-sxm5-80gb"), ("gpu1", "hbm", "h100-sxm5-80gb"), ("gpu2", "hbm", "h100-sxm5-80gb"),
           ("gpu3", "hbm", "h100-sxm5-80gb"), ("dram", "dram", "ddr5-rdimm-64gb"), ("ssd0", "ssd", "samsung-pm9a3-7.68tb"),
           ("ssd1", "ssd", "samsung-pm9a3-7.68tb"), ("hdd0", "hdd", "seagate-exos-x20-20tb")]
METRICS = ["energy_j", "bytes_read", "bytes_written", "busy_s", "resident_bytes", "app_bytes_written"]


def make_trace(path: Path, n_samples: int, chunk_rows: int = 1_000_000) -> None:
    specs = [(d, m, "synthetic") for d, _, _ in DEVICES for m in METRICS]
    ch = make_channels(specs)
    n_ch = len(ch)
    hdr = TraceHeader(source="replayed", devices=[DeviceEntry(d, t, k, capacity_bytes=None) for d, t, k in DEVICES],
                      channels=ch)
    ticks = n_samples // n_ch
    rng = np.random.default_rng(0)
    with TraceWriter(path, hdr, fsync=False) as w:
        w.marker(0.0, "phase_start", "prefill")
        w.marker(ticks * 0.1 * 0.2, "phase_end", "prefill")
        w.marker(ticks * 0.1 * 0.2, "phase_start", "decode")
        tick_chunk = max(1, chunk_rows // n_ch)
        level = np.zeros(n_ch)
        for start in range(0, ticks, tick_chunk):
            k = min(tick_chunk, ticks - start)
            t = np.repeat((start + np.arange(k)) * 0.1, n_ch)
            c = np.tile(np.arange(n_ch, dtype=np.int32), k)
            inc = rng.uniform(0, 1e6, (k, n_ch))
            v = (level + np.cumsum(inc, axis=0)).ravel()
            level = v[-n_ch:]
            w.samples(t, c, v)
        w.marker(ticks * 0.1, "phase_end", "decode")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[5_000_000, 20_000_000, 40_000_000])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attribution.json"))
    args = ap.parse_args()
    db = DeviceDB.load()
    inputs = CarbonInputs(Triple(300, 400, 500, "bench"), Triple(1.1, 1.2, 1.4, "bench"), draws=2000, seed=0)
    results = []
    with tempfile.TemporaryDirectory() as td:
        for n in args.sizes:
            p = Path(td) / f"t{n}.arrows"
            t0 = time.perf_counter()
            make_trace(p, n)
            t_write = time.perf_counter() - t0
            before = rss_mb()
            t0 = time.perf_counter()
            u = aggregate(p)
            t_agg = time.perf_counter() - t0
            t0 = time.perf_counter()
            attribute(u, db, inputs)
            t_attr = time.perf_counter() - t0
            results.append({"samples": u.samples, "file_mb": p.stat().st_size / 1e6, "write_s": t_write,
                            "aggregate_s": t_agg, "attribute_s": t_attr,
                            "samples_per_s": u.samples / (t_agg + t_attr),
                            "peak_rss_mb_after": rss_mb(), "peak_rss_mb_before": before})
            print(json.dumps(results[-1]), flush=True)
            p.unlink()
    out = {"benchmark": "attribution throughput (aggregate + attribute, 2000 Monte Carlo draws)",
           "target": ">= 5e6 samples/s; memory flat in trace length",
           "machine": {"cpu_count": __import__("os").cpu_count(), "machine": platform.machine(),
                       "python": platform.python_version()},
           "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
