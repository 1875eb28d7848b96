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
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RES = ROOT / "benchmarks/gpu/results/2026-11-30-vllm"


def load(p: Path):
    from storagecarbon.trace import read_trace

    return read_trace(p)   # .arrows.gz as is


def lmcache_loaded(kb: dict):
    """LMCache's loads in a pass: bytes its CPU and disk tiers served (taps); None where the taps saw no reads."""
    parts = [kb.get("lmcache_cpu_loaded_bytes"), kb.get("lmcache_disk_loaded_bytes")]
    return sum(x for x in parts if x) or None


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
    print("| run | pass | TTFT p50 ms | HBM prefix hits GB | native CPU stored / loaded GB | LMCache CPU stored / loaded GB | "
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
                  f"| {gb(kb['lmcache_cpu_stored_bytes'])} / {gb(kb.get('lmcache_cpu_loaded_bytes'))} "
                  f"| {gb(kb['lmcache_disk_stored_bytes'])} / "
                  f"{gb(kb['lmcache_disk_loaded_bytes'])} | {gb(kb['external_hit_bytes'])} |")
    print("\n### KV bytes stored to the CPU tier in the first pass: modeled vs measured\n")
    print("| run | measured GB | modeled GB | error |\n|---|---|---|---|")
    import copy as _copy
    import tempfile as _tf
    from storagecarbon.devicedb import DeviceDB as _DB
    from storagecarbon.model.constants import load_constants as _lc
    from storagecarbon.model.simulate import run_model
    from storagecarbon.scenario import Scenario as _S
    from storagecarbon.trace import read_trace as _rt
    db0, k0 = _DB.load(), _lc(a.calibration)
    errs = []
    for p in sorted((RES / "traces").glob("*.arrows.gz")):
        if "__load" in p.name or not ("-native__" in p.name or "-lmcache__" in p.name):
            continue
        t = load(p)
        p1 = t.summary["vllm"]["passes"][0]
        kb = p1["kv_bytes"]
        meas = kb["native_cpu_stored_bytes"] if "-native__" in p.name else kb["lmcache_cpu_stored_bytes"]
        echo = _copy.deepcopy(t.header.scenario)
        echo["workload"] = dict(echo["workload"], passes=1)
        echo["calibration"] = None
        with _tf.TemporaryDirectory() as d:
            run_model(_S.model_validate(echo), db0, Path(d) / "m.arrows", constants=k0)
            mt = _rt(Path(d) / "m.arrows")
            sr = mt.series("dram", "bytes_written")
            mod = float(sr[1][-1]) if sr is not None and len(sr[1]) else None
        e = None if not meas or mod is None else 100 * (mod - meas) / meas
        if e is not None:
            errs.append(abs(e))
        print(f"| {p.name.split('.')[0]} | {gb(meas)} | {gb(mod)} | {'–' if e is None else f'{e:+.1f} %'} |")
    if errs:
        import numpy as _np
        print(f"\nmedian |error| {_np.median(errs):.1f} %, worst {max(errs):.1f} % (n = {len(errs)})")
    print("\n### KV bytes loaded back in pass 2 (after `reset_prefix_cache()`): modeled vs measured\n")
    print("Modeled: the trace's scenario with two passes and `workload.reset_prefix_cache_between_passes` (the "
          "matrix's protocol), the HBM KV cache that ran (vLLM's block count); the DRAM tier's KV reads (native) or "
          "every tier's KV reads (LMCache) of the modeled trace. Measured: vLLM's `kv_offload_load_bytes` (native); "
          "the bytes LMCache's CPU and disk tiers served in pass 2 (tier taps; the runs on vLLM's V1 model runner, "
          "benchmarks/gpu/results/2026-12-01-lmcache-loads/).\n")
    print("| run | measured GB | modeled GB | error |\n|---|---|---|---|")
    errs = []
    from storagecarbon.calibrate import observe as _observe
    for p in sorted((RES / "traces").glob("*.arrows.gz")):
        if "__load" in p.name or not ("-native__" in p.name or "-lmcache__" in p.name):
            continue
        t = load(p)
        passes = t.summary["vllm"]["passes"]
        if len(passes) < 2:
            continue
        kb = passes[1]["kv_bytes"]
        meas = kb["native_cpu_loaded_bytes"] if "-native__" in p.name else lmcache_loaded(kb)
        if not meas:
            continue
        o = _observe(p, Path(_tf.mkdtemp()))
        echo = o.scenario.model_dump(mode="json")
        echo["workload"] = dict(echo["workload"], passes=2, reset_prefix_cache_between_passes=True)
        echo["workload"]["shared_prefix"] = dict(echo["workload"].get("shared_prefix") or {}, warm=False)
        with _tf.TemporaryDirectory() as d:
            run_model(_S.model_validate(echo), db0, Path(d) / "m.arrows", constants=k0)
            mt = _rt(Path(d) / "m.arrows")
            mod = 0.0
            for dev in mt.header.devices:
                sr = mt.series(dev.id, "app_bytes_read")
                if sr is not None and len(sr[1]) and dev.tier in (("dram",) if "-native__" in p.name else ("dram", "ssd", "hdd")):
                    mod += float(sr[1][-1])
        e = 100 * (mod - meas) / meas
        errs.append(abs(e))
        print(f"| {p.name.split('.')[0]} | {gb(meas)} | {gb(mod)} | {e:+.1f} % |")
    if errs:
        import numpy as _np
        print(f"\nmedian |error| {_np.median(errs):.1f} %, worst {max(errs):.1f} % (n = {len(errs)})")
    print("\n### Tensor parallel (2 x H200, full 80-layer Llama-3-70B) and weight offload, first pass, against the fit\n")
    from storagecarbon.calibrate import observe, predict
    from storagecarbon.devicedb import DeviceDB
    from storagecarbon.model.constants import load_constants

    k = load_constants(a.calibration)
    db = DeviceDB.load()
    held = set(cal.get("held_out") or [])
    held |= {t["name"] for t in cal.get("traces") or [] if t.get("held_out")}
    print("| run | GPUs | set | TTFT measured / modeled ms | TPOT measured / modeled ms | GPU J/token measured / modeled |"
          "\n|---|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())

    def pct(m: float, o: float) -> str:
        return f"{100 * (m - o) / o:+.0f} %"

    for p in sorted((RES / "traces").glob("*.arrows.gz")):
        if "__load" in p.name or not ("l70b80" in p.name or "weights" in p.name):
            continue
        o = observe(p, tmp)   # as calibrate sees it: first pass, warm prefix where it was warm
        m = predict(o, db, k, tmp)
        mt, mo = o.measured, m
        ej = "–" if mt.get("gpu_j_per_token") is None or mo.get("gpu_j_per_token") is None else \
            f"{mt['gpu_j_per_token']:.2f} / {mo['gpu_j_per_token']:.2f} ({pct(mo['gpu_j_per_token'], mt['gpu_j_per_token'])})"
        print(f"| {o.name} | {o.n_gpu} | {'held out' if o.name in held else 'fit'} "
              f"| {mt['ttft_ms']:.0f} / {mo['ttft_ms']:.0f} ({pct(mo['ttft_ms'], mt['ttft_ms'])}) "
              f"| {mt['tpot_ms']:.1f} / {mo['tpot_ms']:.1f} ({pct(mo['tpot_ms'], mt['tpot_ms'])}) | {ej} |")

if __name__ == "__main__":
    main()
