"""The flagship's model against measured serving on 2 x H200 (issue: TP=2 Llama-3-70B with KV offload).

    python benchmarks/gpu/flagship_check.py > benchmarks/gpu/results/2026-11-30-vllm-serve/flagship_check.md

1. Each measured `vllm serve` run of ``benchmarks/gpu/results/2026-11-30-vllm-serve/`` is modeled from its own
   scenario with the load generator's concurrency as the engine's batch cap (96 requests at t = 0, at most 16 in
   flight): TTFT and TPOT P50 (vLLM's histograms, measured) and GPU J per generated token over the serving window
   (NVML), modeled with the shipped vLLM defaults (``storagecarbon/model/vllm-h200.yaml``).
2. The flagship (``scenarios/llama70b_offload.yaml``, 2 x H100) and its H200 twin
   (``scenarios/gpu/llama70b_offload_h200.yaml``) modeled: TTFT/TPOT P50 and GPU J per generated token, next to
   the measured TP=2 serving runs above.
"""
from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SERVE = ROOT / "benchmarks/gpu/results/2026-11-30-vllm-serve"
CONCURRENCY = 16


def gpu_joules(trace, a: float | None = None, b: float | None = None) -> float:
    tot = 0.0
    for d in trace.header.devices:
        if d.tier != "hbm":
            continue
        s = trace.series(d.id, "energy_j")
        if s is None or not len(s[0]):
            continue
        ts, vs = s
        lo = ts[0] if a is None else a
        hi = ts[-1] if b is None else b
        tot += float(np.interp(hi, ts, vs) - np.interp(lo, ts, vs))
    return tot


def modeled(scn_dict: dict, db) -> dict:
    """TTFT/TPOT P50 of the simulation and GPU J per generated token as calibrate computes it (the carbon
    kernel's energy model at device_db central values)."""
    from storagecarbon.calibrate import gpu_energy_j, model_once
    from storagecarbon.model.constants import constants_for
    from storagecarbon.model.simulate import run_model
    from storagecarbon.scenario import Scenario

    scn = Scenario.model_validate(scn_dict)
    k = constants_for(scn)
    with tempfile.TemporaryDirectory() as d:
        lat = run_model(scn, db, Path(d) / "m.arrows", constants=k).summary["latency"]
        r = model_once(scn, db, k, Path(d))
    return {"ttft_p50_ms": lat["ttft_ms"]["p50"], "tpot_p50_ms": (lat.get("tpot_ms") or {}).get("p50"),
            "tpot_mean_ms": (lat.get("tpot_ms") or {}).get("mean"),
            "gpu_j_per_token": gpu_energy_j(scn, db, r) / max(r.generated_tokens, 1)}


def main() -> None:
    from storagecarbon.devicedb import DeviceDB
    from storagecarbon.trace import read_trace

    db = DeviceDB.load()
    print("### Measured `vllm serve` runs on H200 against the model (shipped vLLM defaults)\n")
    print("Each run modeled from its own scenario, 96 requests with at most 16 in flight (the load generator's "
          "concurrency, as the engine's batch cap); measured TPOT is the mean of vLLM's per-request "
          "`request_time_per_output_token` histogram (its buckets are too coarse for a P50), GPU energy NVML's "
          "counter over the serving window. TTFT is not compared: the load generator is a closed loop (a request is "
          "sent when one finishes), while the model's requests all arrive at t = 0 and queue.\n")
    print("| run | TPOT mean measured / modeled ms | GPU J per generated token measured / modeled |\n|---|---|---|")
    for run in sorted(p for p in SERVE.iterdir() if (p / "trace.arrows.gz").is_file()):
        rep = json.loads((run / "report/report.json").read_text())
        t = read_trace(run / "trace.arrows.gz")
        w = rep["serving"]["window"]
        e = gpu_joules(t, w["start_s"], w["end_s"]) / rep["tokens"]["generated"]
        sd = copy.deepcopy(t.header.scenario)
        sd["engine"] = dict(sd["engine"], max_num_seqs=CONCURRENCY)
        sd["calibration"] = None
        m = modeled(sd, db)
        tp = rep["latency"]["tpot_ms"]["mean"]

        def pct(mv, me):
            return f"{100 * (mv - me) / me:+.0f} %"
        print(f"| {run.name} | {tp:.1f} / {m['tpot_mean_ms']:.1f} ({pct(m['tpot_mean_ms'], tp)}) "
              f"| {e:.2f} / {m['gpu_j_per_token']:.2f} ({pct(m['gpu_j_per_token'], e)}) |")
    print("\n### The flagship, modeled (shipped vLLM defaults)\n")
    print("| scenario | GPUs | TTFT p50 ms | TPOT p50 ms | GPU J per generated token |\n|---|---|---|---|---|")
    import yaml
    for p in ("scenarios/llama70b_offload.yaml", "scenarios/gpu/llama70b_offload_h200.yaml"):
        sd = yaml.safe_load((ROOT / p).read_text())
        m = modeled(sd, db)
        g = sd["hardware"]["gpu"]
        print(f"| `{p}` | {g['count']} x {g['device']} | {m['ttft_p50_ms']:.0f} | {m['tpot_p50_ms']:.1f} "
              f"| {m['gpu_j_per_token']:.2f} |")


if __name__ == "__main__":
    main()
