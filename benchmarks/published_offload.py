"""The performance model against published offloading throughputs (FlexGen README, T4 16 GB).

Published (FMInference/FlexLLMGen README and its benchmark/batch_size_table.md; GCP T4 16 GB,
208 GB DRAM, 1.5 TB SSD; prompt 512, generation 32; fp16 OPT):
  OPT-175B, weights on disk: HF Accelerate 0.01 tok/s (batch 2), DeepSpeed ZeRO-Inference
  0.01 tok/s (batch 1), FlexGen 0.69 tok/s (batch 256, KV cache and attention on the CPU).
  OPT-30B, weights in DRAM: FlexGen 7.32 tok/s (batch 144, KV on the CPU).

The model is run with FlexGen's own fitted T4 constants (experimental/cost_model.py:
ctog_bdw 12.89 GB/s host->GPU, dtoc_bdw 0.473 GB/s disk->host, mm_flops_g 4.3 TFLOPS achieved)
so only the model's structure is tested, not datasheet figures. The T4's 16-bit peak (65 TFLOPS
fp16 tensor, NVIDIA T4 datasheet) enters only as the denominator of that achieved rate.

Run: .venv/bin/python benchmarks/published_offload.py > benchmarks/results/published_offload.md
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from storagecarbon.devicedb import DEFAULT_DB_DIR, DeviceDB
from storagecarbon.model.constants import ModelConstants
from storagecarbon.model.simulate import run_model
from storagecarbon.scenario import parse_scenario

T4_PEAK_FP16_TFLOPS = 65.0
FLEXGEN = ModelConstants(hbm_efficiency=0.7, compute_efficiency=4.3 / T4_PEAK_FP16_TFLOPS, pcie_gb_per_s=12.89,
                         disk_efficiency=1.0, overlap=1.0, tp_efficiency=1.0, step_overhead_s=0.0,
                         source="FlexGen fitted T4 constants (experimental/cost_model.py)")


def overlay_db(tmp: Path) -> DeviceDB:
    """device_db plus two benchmark-only records: the T4 with its fp16 peak, and a disk at
    FlexGen's fitted disk->host rate."""
    d = tmp / "db"
    shutil.copytree(DEFAULT_DB_DIR, d)
    db = DeviceDB.load(d)
    t4 = db.get("t4-16gb").model_dump(mode="json", exclude_none=True)
    t4.update(key="bench-t4-fp16", aliases=[], bf16_tflops={"best": T4_PEAK_FP16_TFLOPS,
              "source": "NVIDIA T4 datasheet: 65 TFLOPS fp16 tensor (benchmark-only record; OPT runs in fp16)"})
    disk = db.get("ssd-enterprise-tlc-per-gb").model_dump(mode="json", exclude_none=True)
    disk.update(key="bench-flexgen-disk", aliases=[], capacity_gb=1500.0,
                read_gb_per_s={"best": 0.473, "source": "FlexGen fitted dtoc_bdw (experimental/cost_model.py)"},
                write_gb_per_s={"best": 0.746, "source": "FlexGen fitted ctod_bdw_cache_p"})
    (d / "zz_bench.yaml").write_text(yaml.safe_dump({"devices": [t4, disk]}))
    return DeviceDB.load(d)


def scenario(model: str, weights: dict, batch: int) -> str:
    w = ", ".join(f"{k}: {v}" for k, v in weights.items())
    return f"""
name: {model}-b{batch}
hardware:
  gpu: {{device: bench-t4-fp16, count: 1}}
  dram: {{device: ddr4-rdimm-64gb, count: 4}}
  ssd: {{device: bench-flexgen-disk, count: 1}}
model: {{preset: {model}, weight_dtype: fp16, kv_dtype: fp16}}
placement:
  gpu_memory_utilization: 1.0
  weights: {{{w}}}
workload:
  requests: {batch}
  prompt_tokens: {{mean: 512}}
  output_tokens: {{mean: 32}}
engine: {{kind: none, max_num_seqs: {batch}, max_num_batched_tokens: {512 * batch}}}
carbon: {{region: us}}
"""


CASES = [
    # (system, model, placement, batch, published tok/s, how the system keeps KV)
    ("HF Accelerate", "opt-175b", {"hbm": 0.03, "dram": 0.55, "ssd": 0.42}, 2, 0.01, "KV on GPU (like the model)"),
    ("DeepSpeed ZeRO-Inference", "opt-175b", {"hbm": 0.03, "dram": 0.55, "ssd": 0.42}, 1, 0.01, "KV on GPU (like the model)"),
    ("FlexGen", "opt-175b", {"hbm": 0.0, "dram": 0.5, "ssd": 0.5}, 256, 0.69, "KV + attention on CPU (not modeled)"),
    ("FlexGen", "opt-30b", {"hbm": 0.2, "dram": 0.8}, 144, 7.32, "KV + attention on CPU (not modeled)"),
]


def main() -> int:
    with tempfile.TemporaryDirectory() as td:
        db = overlay_db(Path(td))
        print("| system | model | weights hbm/dram/disk | batch | published tok/s | modeled tok/s | modeled / published | KV |")
        print("|---|---|---|---|---|---|---|---|")
        for system, model, w, batch, pub, kv in CASES:
            scn = parse_scenario(scenario(model, w, batch), f"{model}.yaml", db)
            kv_hbm = None
            try:
                res = run_model(scn, db, Path(td) / "t.arrows", constants=FLEXGEN)
                tps = res.generated_tokens / res.duration_s
                cell, ratio = f"{tps:.3g}", f"{tps / pub:.2f}x"
            except Exception as exc:  # noqa: BLE001 - reported in the table
                cell, ratio = "—", f"not representable: {str(exc)[:80]}"
            del kv_hbm
            wtxt = "/".join(f"{w.get(k, 0):g}" for k in ("hbm", "dram", "ssd"))
            print(f"| {system} | {model} | {wtxt} | {batch} | {pub:g} | {cell} | {ratio} | {kv} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
