"""The vLLM GPU path without a GPU: the scenario -> vLLM/LMCache mapping, the counter sensor, and the
committed H200 traces replayed through observation (calibrate) and report."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from pathlib import Path

import pytest

from storagecarbon.engines import vllm_gpu
from storagecarbon.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks/gpu/results/2026-11-30-vllm"
BASE = {
    "name": "t",
    "hardware": {"gpu": {"device": "h200-sxm-141gb", "count": 1}, "dram": {"device": "ddr5-rdimm-per-gb", "count": 128},
                 "ssd": {"device": "virtio-disk-standin", "count": 1}},
    "model": {"preset": "llama-3-8b"},
    "workload": {"requests": 8, "prompt_tokens": {"mean": 2048}, "output_tokens": {"mean": 64},
                 "shared_prefix": {"tokens": 1536, "fraction": 1.0}, "passes": 2},
    "engine": {"kind": "vllm", "max_num_seqs": 64, "block_size": 16},
    "carbon": {"region": "world"},
}


def scn(**placement) -> Scenario:
    d = copy.deepcopy(BASE)
    d["placement"] = placement
    return Scenario.model_validate(d)


def test_native_offload_maps_to_kv_offloading_size(tmp_path):
    # GIVEN KV offload through vLLM's own connector, 48 GiB, and 12 GB of HBM KV
    s = scn(kv={"backend": "native", "hbm_gb": 12, "local_cpu": {"size_gb": 48}})
    # WHEN mapped
    kw, lmc, _ = vllm_gpu.engine_settings(s, tmp_path)
    # THEN vLLM's native offload gets the size, no LMCache, and the HBM blocks follow 12 GB / (16 x 128 KiB)
    assert kw["kv_offloading_size"] == 48 and kw["kv_offloading_backend"] == "native" and lmc is None
    # hbm_gb: GB (10^9 B) of KV over the whole engine, as the model reads it (12e9 / 16 tokens / 128 KiB)
    assert kw["num_gpu_blocks_override"] == 5722
    assert kw["load_format"] == "dummy" and kw["tensor_parallel_size"] == 1


def test_lmcache_tiers_and_weight_offload(tmp_path):
    s = scn(weights={"hbm": 0.75, "dram": 0.25},
            kv={"chunk_size": 256, "local_cpu": {"size_gb": 4}, "local_disk": {"size_gb": 80, "path": "d"}})
    kw, lmc, notes = vllm_gpu.engine_settings(s, tmp_path)
    assert lmc == {"chunk_size": 256, "local_cpu": True, "max_local_cpu_size_gb": 4, "local_disk_path": str(tmp_path / "d"),
                   "max_local_disk_size_gb": 80}
    # 25 % of Llama-3-8B's bf16 weights, per GPU, in GiB
    assert kw["cpu_offload_gb"] == pytest.approx(0.25 * s.model.weight_bytes() / 2**30, rel=1e-3)


def test_served_flags_and_the_v1_runner_rule(tmp_path):
    # GIVEN LMCache tiers (CUDA graphs on, as the mapping sets them), native offload, and weight offload
    lmc = scn(kv={"chunk_size": 256, "local_cpu": {"size_gb": 4}})
    argv, env = vllm_gpu.serve_argv(lmc, tmp_path / "a", port=8011)
    # THEN the served command has the connector and runs on vLLM's V1 runner: the V2 runner with CUDA graphs skips
    # LMCache's loads (benchmarks/gpu/results/2026-12-01-lmcache-loads/)
    assert "LMCacheConnectorV1" in argv[argv.index("--kv-transfer-config") + 1]
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    _, env = vllm_gpu.serve_argv(scn(kv={"backend": "native", "local_cpu": {"size_gb": 4}}), tmp_path / "b", port=8011)
    assert "VLLM_USE_V2_MODEL_RUNNER" not in env
    _, env = vllm_gpu.serve_argv(scn(weights={"hbm": 0.75, "dram": 0.25}), tmp_path / "c", port=8011)
    assert env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert vllm_gpu.v1_runner_reason({"enforce_eager": True}, True) is None


def test_native_backend_refuses_a_disk_tier(tmp_path):
    from storagecarbon.errors import EngineError

    s = scn(kv={"backend": "native", "local_cpu": {"size_gb": 4}, "local_disk": {"size_gb": 8}})
    with pytest.raises(EngineError, match="native"):
        vllm_gpu.engine_settings(s, tmp_path)


def test_counter_sensor_maps_offload_bytes_to_dram(tmp_path):
    p = tmp_path / "c.json"
    sensor = vllm_gpu.VllmCounterFileSensor(p, dram_device="dram")
    assert sensor.read() == []                      # nothing published yet: no rows, not zeros
    p.write_text(json.dumps({"prompt_tokens": 10, "generated_tokens": 4, "kv_offload_store_bytes": 7.0,
                             "kv_offload_load_bytes": None}))
    rows = dict(((d, m), v) for d, m, v in sensor.read())
    assert rows[("dram", "app_bytes_written")] == 7.0 and rows[("workload", "generated_tokens")] == 4.0


def test_counters_from_metrics_reads_new_and_legacy_names():
    new = {"vllm:kv_offload_store_bytes": 5.0, "vllm:kv_offload_load_bytes": 3.0, "vllm:prompt_tokens": 9}
    old = {"vllm:kv_offload_total_bytes{transfer_type=GPU_to_CPU}": 5.0,
           "vllm:kv_offload_total_bytes{transfer_type=CPU_to_GPU}": 3.0}
    for m in (new, old):
        c = vllm_gpu.counters_from_metrics(m)
        assert (c["kv_offload_store_bytes"], c["kv_offload_load_bytes"]) == (5.0, 3.0)
    assert vllm_gpu.counters_from_metrics({})["kv_offload_store_bytes"] is None


@pytest.fixture()
def h200_trace(tmp_path) -> Path:
    src = RES / "traces/l70b40-native__b128_p512.arrows.gz"
    out = tmp_path / "native.arrows"
    with gzip.open(src) as fi, open(out, "wb") as fo:
        shutil.copyfileobj(fi, fo)
    return out


def test_h200_trace_observation_and_offload_bytes(h200_trace):
    from storagecarbon.calibrate import observe

    o = observe(h200_trace, h200_trace.parent)
    # measured on the H200: J/token and latency are physical, not placeholders
    assert o.offload == "vllm-native" and 0.05 < o.measured["gpu_j_per_token"] < 5
    assert o.measured["tpot_ms"] > 1 and o.measured["ttft_ms"] > 1
    from storagecarbon.trace import read_trace

    passes = read_trace(h200_trace).summary["vllm"]["passes"]
    # pass 1 stores the prefixes into host DRAM, pass 2 loads them back (vLLM's own counters)
    assert passes[0]["kv_bytes"]["native_cpu_stored_bytes"] > 1e9
    assert passes[1]["kv_bytes"]["native_cpu_loaded_bytes"] > 1e9


def test_h200_trace_replays_through_report(h200_trace, capsys):
    from storagecarbon.cli import main

    # WHEN the committed H200 trace is re-attributed (replay: no GPU here)
    assert main(["report", str(h200_trace), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    # THEN the GPU's energy is the measured NVML figure, in joules, a point band (no range to sample)
    gpu = next(d for d in rep["devices"] if d["tier"] == "hbm")
    e = gpu["energy_j"]
    assert gpu["energy_basis"] == "measured" and e["p5"] == e["p50"] == e["p95"] > 100
    # AND the host DRAM the KV went to is a tier of the report, with the bytes vLLM's counters saw
    dram = next(t for t in rep["tiers"] if t["tier"] == "dram")
    assert dram["app_bytes_written"] > 1e9


SERVE = RES.parent / "2026-11-30-vllm-serve"


@pytest.mark.parametrize("trace", [RES / "traces/l70b80-lmcache__b8_p2048.arrows.gz",
                                   SERVE / "l70b80-native/trace.arrows.gz"])
def test_tp2_trace_replays_with_each_gpu_measured(trace, capsys):
    from storagecarbon.cli import main
    from storagecarbon.trace import read_trace

    # GIVEN a committed tensor-parallel (2 x H200) trace, offline engine or `vllm serve`, read as stored (gzip)
    t = read_trace(trace)
    gpus = [d.id for d in t.header.devices if d.tier == "hbm"]
    assert len(gpus) == 2
    # WHEN it is re-attributed here (no GPU)
    assert main(["report", str(trace), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    # THEN each GPU is its own device with its own measured NVML energy (not one figure split in two)
    devs = {d["id"]: d for d in rep["devices"] if d["tier"] == "hbm"}
    assert sorted(devs) == sorted(gpus)
    joules = []
    for g in gpus:
        ts, vs = t.series(g, "energy_j")
        assert devs[g]["energy_basis"] == "measured"
        assert devs[g]["energy_j"]["p50"] == pytest.approx(vs[-1] - vs[0], rel=0.02)
        joules.append(devs[g]["energy_j"]["p50"])
    assert min(joules) > 1000 and joules[0] != joules[1]
    assert rep["scenario"] and rep["tokens"]["generated"] > 0
