"""Tables of the measured vLLM GPU matrix (benchmarks/gpu/results/2026-11-30-vllm/) for docs/validation.md.

    python benchmarks/gpu/vllm_validate.py [--calibration calibration/h200-vllm.yaml] > OUT.md

1. the calibration's fit and held-out errors (from the calibration file: `storagecarbon calibrate`);
2. per-pass KV bytes by tier, measured (vLLM's own counters for native offload, the LMCache tier taps,
   vLLM's prefix-cache and external-hit token counters x KV bytes per token), and the TTFT of the
   hit pass against the cold pass;
3. the tensor-parallel (2 x H200) and weight-offload runs against the fitted model (timing only:
   those traces have no GPU energy, see the results README).
"""
from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RES = ROOT / "benchmarks/gpu/results/2026-11-30-vllm"


def load(p: Path):
    from storagecarbon.trace import read_trace

    with tempfile.NamedTemporaryFile(suffix=".arrows") as f:
        f.write(gzip.open(p).read())
        f.flush()
        return read_trace(f.name)


def gb(x):
    return "–" if x is None else f"{x / 1e9:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", default=str(ROOT / "calibration/h200-vllm.yaml"))
    a = ap.parse_args()
    cal = yaml.safe_load(Path(a.calibration).read_text())
    print("### Fit and held-out errors (|modeled − measured| / measured, first pass of each workload)\n")
    print("| set | metric | median | worst | worst case | n |\n|---|---|---|---|---|---|")
    for st in ("fit", "held_out"):
        for m, e in cal["errors"][st].items():
            print(f"| {st} | {m} | {e['median_abs_pct']:.1f} % | {e['worst_abs_pct']:.1f} % | {e['worst']} | {e['n']} |")
    print("\n### KV bytes per tier and pass (measured), and what the hit pass did to TTFT\n")
    print("| run | pass | TTFT p50 ms | HBM prefix hits GB | native CPU stored / loaded GB | LMCache CPU stored GB | "
          "LMCache disk stored / loaded GB | external (connector) hits GB |\n|---|---|---|---|---|---|---|---|")
    for p in sorted((RES / "traces").glob("*.arrows.gz")):
        if "__load" in p.name or "-hbm__" in p.name:
            continue
        t = load(p)
        for ps in t.summary["vllm"]["passes"]:
            kb = ps["kv_bytes"]
            print(f"| {p.name.split('.')[0]} | {ps['label']}{' (page cache dropped)' if ps.get('page_cache') == 'dropped' else ''} "
                  f"| {(ps['ttft_ms'] or {}).get('p50', float('nan')):.0f} | {gb(kb['hbm_prefix_hit_bytes'])} "
                  f"| {gb(kb['native_cpu_stored_bytes'])} / {gb(kb['native_cpu_loaded_bytes'])} "
                  f"| {gb(kb['lmcache_cpu_stored_bytes'])} | {gb(kb['lmcache_disk_stored_bytes'])} / "
                  f"{gb(kb['lmcache_disk_loaded_bytes'])} | {gb(kb['external_hit_bytes'])} |")
    print("\n### Tensor parallel (2 x H200, full 80-layer Llama-3-70B) and weight offload, first pass, against the fit\n")
    from storagecarbon.calibrate import observe_vllm
    from storagecarbon.devicedb import DeviceDB
    from storagecarbon.perfmodel import load_constants
    from storagecarbon.calibrate import predict
    k = load_constants(a.calibration)
    db = DeviceDB.load()
    print("| run | GPUs | TTFT measured / modeled ms | TPOT measured / modeled ms |\n|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())
    for p in sorted((RES / "traces-no-gpu-energy").glob("*.arrows.gz")):
        if "__load" in p.name or not ("l70b80" in p.name or "weights" in p.name):
            continue
        t = load(p)
        p1 = t.summary["vllm"]["passes"][0]
        from storagecarbon.calibrate import Observation, vllm_mode  # noqa: F401
        import copy
        from storagecarbon.scenario import Scenario
        echo = copy.deepcopy(t.header.scenario)
        echo["workload"] = dict(echo["workload"], passes=1)
        echo["calibration"] = None
        if vllm_mode(echo) == "weights":
            echo["placement"] = dict(echo["placement"], weights={"hbm": 1.0})
        o = Observation(name=p.name, path=str(p), scenario=Scenario.model_validate(echo), offload="", n_gpu=t.summary["vllm"]["n_gpu"],
                        measured={"ttft_ms": p1["ttft_ms"]["mean"], "tpot_ms": p1["tpot_ms"]["mean"], "gpu_j_per_token": 1.0})
        m = predict(o, db, k, tmp)
        e1 = 100 * (m["ttft_ms"] - o.measured["ttft_ms"]) / o.measured["ttft_ms"]
        e2 = 100 * (m["tpot_ms"] - o.measured["tpot_ms"]) / o.measured["tpot_ms"]
        print(f"| {p.name.split('.')[0]} | {o.n_gpu} | {o.measured['ttft_ms']:.0f} / {m['ttft_ms']:.0f} ({e1:+.0f} %) "
              f"| {o.measured['tpot_ms']:.1f} / {m['tpot_ms']:.1f} ({e2:+.0f} %) |")


if __name__ == "__main__":
    main()
