"""The recorder's cost from trace footers: per tick (sampling work, and the whole thread), in the serving window
alone (``sample_cpu_us_per_s`` over the whole seconds between the ``serving`` phase's markers; with the native
sampler also both threads' whole CPU, ``thread_cpu_us_per_s``), and per source.

    python benchmarks/gpu/recorder_cost_table.py TRACE [TRACE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storagecarbon.trace import read_trace  # noqa: E402


def main(paths: list[str]) -> int:
    print("| trace | ticks | overruns | CPU per sample (sample_now) µs | the thread's CPU per tick µs | max ms "
          "| serving window s | CPU per sample in it µs | whole threads in it µs | sampler, Python wakes/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    profiles = []
    for p in paths:
        t = read_trace(p)
        r = t.summary.get("recorder", {})
        th = r.get("thread_cpu_s_per_tick")
        starts = [m[0] for m in t.markers if m[1] == "phase_start" and m[2] == "serving"]
        ends = [m[0] for m in t.markers if m[1] == "phase_end" and m[2] == "serving"]
        per_s, win = r.get("sample_cpu_us_per_s") or [], "| | | |"
        thr = r.get("thread_cpu_us_per_s") or []
        if starts and ends and per_s:
            a, b = int(starts[0]) + 1, min(int(ends[-1]), len(per_s))   # whole seconds inside the window
            if b > a:
                whole = f"{sum(thr[a:b]) / ((b - a) * r['hz']):.0f}" if len(thr) >= b else ""
                win = f"| {ends[-1] - starts[0]:.1f} | {sum(per_s[a:b]) / ((b - a) * r['hz']):.0f} | {whole} |"
        nat = r.get("native") or {}
        dur = (r.get("ticks") or 0) / r.get("hz", 10) or 1
        smp = f"{r.get('sampler', 'python')}" + (f", {nat['python_wakes'] / dur:.1f}" if nat else "")
        print(f"| {p} | {r.get('ticks')} | {r.get('overruns')} | {r.get('sample_cpu_s_mean', 0) * 1e6:.0f} | "
              f"{'' if th is None else f'{th * 1e6:.0f}'} | {r.get('sample_cpu_s_max', 0) * 1e3:.1f} {win} {smp} |")
        if r.get("profile"):
            profiles.append((p, r))
    for p, r in profiles:
        print(f"\n{p}: per source (µs per tick; calls; µs per call)")
        rest = r["sample_cpu_s_mean"]
        for k, v in r["profile"].items():
            rest -= v["cpu_s_per_tick"]
            print(f"  {k:16s} {v['cpu_s_per_tick'] * 1e6:6.1f}  {v['calls']:6d}  {v['cpu_s'] / max(v['calls'], 1) * 1e6:8.1f}")
        print(f"  {'the rest':16s} {rest * 1e6:6.1f}")
        for seg, tab in (r.get("profile_by_part") or {}).items():
            print(f"  {seg} ({tab['ticks']} ticks), µs per tick: " + ", ".join(
                f"{k} {v * 1e6:.0f}" for k, v in tab.items() if k != "ticks"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
