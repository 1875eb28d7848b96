"""The recorder's cost from trace footers: per tick (sampling work, and the whole thread) and per source.

    python benchmarks/gpu/recorder_cost_table.py TRACE [TRACE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storagecarbon.trace import read_trace  # noqa: E402


def main(paths: list[str]) -> int:
    print("| trace | ticks | overruns | CPU per sample (sample_now) µs | the thread's CPU per tick µs | max ms |")
    print("|---|---|---|---|---|---|")
    profiles = []
    for p in paths:
        r = read_trace(p).summary.get("recorder", {})
        th = r.get("thread_cpu_s_per_tick")
        print(f"| {p} | {r.get('ticks')} | {r.get('overruns')} | {r.get('sample_cpu_s_mean', 0) * 1e6:.0f} | "
              f"{'' if th is None else f'{th * 1e6:.0f}'} | {r.get('sample_cpu_s_max', 0) * 1e3:.1f} |")
        if r.get("profile"):
            profiles.append((p, r))
    for p, r in profiles:
        print(f"\n{p}: per source (µs per tick; calls; µs per call)")
        rest = r["sample_cpu_s_mean"]
        for k, v in r["profile"].items():
            rest -= v["cpu_s_per_tick"]
            print(f"  {k:16s} {v['cpu_s_per_tick'] * 1e6:6.1f}  {v['calls']:6d}  {v['cpu_s'] / max(v['calls'], 1) * 1e6:8.1f}")
        print(f"  {'the rest':16s} {rest * 1e6:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
