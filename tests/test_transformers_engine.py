"""The HF transformers engine on the CPU: tiny Llama shapes, real generate(), the real recorder
with a fake NVML of two GPUs. (The GPU runs themselves: benchmarks/gpu/.)"""

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from storagecarbon.engines import hf_transformers as hf  # noqa: E402

TINY = hf.LlamaShape(layers=4, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
                     vocab_size=256, name="tiny")

TINY_SCENARIO = """
name: tiny_transformers
hardware:
  gpu: {device: h100-sxm5-80gb, count: 2}
  host: {device: server-base-generic, count: 1}
  dram: {device: ddr5-rdimm-per-gb, count: 16}
  ssd: {device: virtio-disk-standin, count: 1}
model: {preset: tiny-llama, weight_dtype: bf16, kv_dtype: bf16}
workload: {requests: 4, prompt_tokens: {mean: 24}, output_tokens: {mean: 5}}
engine:
  kind: transformers
  max_num_seqs: 2
  sample_hz: 20
  transformers: {offload: OFFLOAD, gpu_weight_fraction: 0.5, batch_size: 2}
carbon: {region: world}
"""


class _NVMLError(Exception):
    pass


def fake_pynvml(n_gpus: int = 2) -> types.ModuleType:
    """NVML of ``n_gpus`` H100s whose energy counters grow with wall time (150 W and 250 W)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = _NVMLError
    m.NVML_PCIE_UTIL_TX_BYTES, m.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    t0 = time.time()
    watts = [150.0 + 100.0 * i for i in range(n_gpus)]
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlDeviceGetCount = lambda: n_gpus
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: int(5e6 + watts[h] * (time.time() - t0) * 1000)
    m.nvmlDeviceGetPowerUsage = lambda h: int(watts[h] * 1000)
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2**30, total=80 * 2**30, free=0)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=40, memory=10)
    m.nvmlDeviceGetPcieThroughput = lambda h, which: 1000
    return m


# ----------------------------------------------------------------------------- shapes, maps
def test_shape_from_truncated_70b_scenario(db):
    from storagecarbon.scenario import load_scenario

    # GIVEN the 70B-shaped scenario truncated to 16 layers
    scn = load_scenario(Path(__file__).parent.parent / "scenarios/gpu/l70b16_none_b1_p512.yaml", db)
    # WHEN its shape is derived
    s = hf.LlamaShape.from_scenario(scn)
    # THEN it keeps the 70B layer shape with 16 layers, and the parameter count matches the scenario's
    assert (s.layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.intermediate_size) == (16, 8192, 64, 8, 28672)
    assert s.params() == pytest.approx(scn.model.dims().param_count(), rel=0.01)
    assert s.kv_bytes_per_token() == 2 * 16 * 8 * 128 * 2


def test_offloaded_layer_count_and_device_map():
    s8 = hf.LlamaShape(32, 4096, 32, 8, 128, 14336, 128256)
    assert hf.offloaded_layer_count(s8, 1.0) == 0
    assert hf.offloaded_layer_count(s8, 0.75) == 9       # 25 % of 16 GB over 436 MB layers
    assert hf.offloaded_layer_count(s8, 0.999) == 1      # at least one layer when asked to offload
    assert hf.offloaded_layer_count(s8, 0.01) == 32      # never more than all layers
    dm = hf.device_map_for(s8, 3, "disk")
    assert [dm[f"model.layers.{i}"] for i in (28, 29, 30, 31)] == [0, "disk", "disk", "disk"]
    assert dm["lm_head"] == 0 and dm["model.embed_tokens"] == 0


# --------------------------------------------------------------------------- build + generate
def test_build_and_generate_tiny_on_cpu():
    b = hf.build_llama(TINY, device="cpu", seed=1)
    ids = hf.random_prompts(2, 12, TINY.vocab_size, 0, "cpu")
    first = []
    tm = hf.run_batch(b, ids, 5, on_first=first.append)
    assert b.weight_bytes == TINY.params() * 2
    assert tm.t_start <= tm.t_first <= tm.t_last <= tm.t_end
    assert first == [tm.t_first] and tm.ttft_s > 0 and tm.tpot_s > 0
    # same seed, same weights
    b2 = hf.build_llama(TINY, device="cpu", seed=1)
    w1 = b.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w1, b2.model.model.layers[0].mlp.up_proj.weight)
    assert float(w1.float().std()) == pytest.approx(hf.INIT_STD, rel=0.2)


def test_disk_offload_constructs_and_runs_on_cpu(tmp_path):
    import accelerate  # noqa: F401  (installed by scripts/setup.sh; never skipped)
    # GIVEN disk offload of half the weights
    b = hf.build_llama(TINY, device="cpu", offload="disk", gpu_weight_fraction=0.5, offload_dir=tmp_path)
    # THEN the last layers are .dat files on disk, their parameters are on the meta device
    assert b.offloaded_layers >= 1 and b.offload_target == "ssd"
    assert b.offload_files and all(p.exists() for p in b.offload_files)
    assert b.offloaded_bytes == pytest.approx(sum(p.stat().st_size for p in b.offload_files), rel=0.01)
    assert b.model.model.layers[-1].mlp.up_proj.weight.device.type == "meta"
    # WHEN it generates (the page cache of the files is dropped before every step)
    tm = hf.run_batch(b, hf.random_prompts(1, 8, TINY.vocab_size, 0, "cpu"), 3)
    assert tm.tpot_s > 0
    d = b.offload_dir
    b.close()
    assert d is not None and not d.exists()


def test_cpu_and_kv_cpu_modes_construct_on_cpu():
    import accelerate  # noqa: F401  (installed by scripts/setup.sh; never skipped)
    b = hf.build_llama(TINY, device="cpu", offload="cpu", gpu_weight_fraction=0.5)
    assert b.offload_target == "dram" and b.offloaded_layers == hf.offloaded_layer_count(TINY, 0.5)
    assert b.offloaded_bytes > 0 and b.device_map["model.layers.3"] == "cpu"
    kv = hf.build_llama(TINY, device="cpu", offload="kv-cpu")
    assert kv.offloaded_bytes == 0 and kv.offload_target is None  # weights stay; the cache offloads at run time
    with pytest.raises(Exception, match="not one of"):
        hf.build_llama(TINY, device="cpu", offload="tape")


# -------------------------------------------------------------------------- the measured path
@pytest.mark.parametrize("offload", ["none", "disk"])
def test_profile_measured_with_fake_two_gpu_nvml(tmp_path, monkeypatch, db, offload):
    import accelerate  # noqa: F401  (installed by scripts/setup.sh; never skipped)
    from storagecarbon.pipeline import profile
    from storagecarbon.trace import read_trace
    from storagecarbon.carbon.usage import aggregate

    # GIVEN a fake NVML with two H100s and the worker on the CPU
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(2))
    monkeypatch.setenv(hf.DEVICE_ENV, "cpu")
    scn_path = tmp_path / "tiny.yaml"
    scn_path.write_text(TINY_SCENARIO.replace("OFFLOAD", offload))
    # WHEN the scenario is profiled MEASURED through the pipeline
    res = profile(scn_path, db=db, out_dir=tmp_path / "out", mode="measured")
    # THEN the trace has both GPUs (resolved through the NVML alias), DRAM and the virtual disk
    tr = read_trace(res.trace_path)
    devs = {d.id: d for d in tr.header.devices}
    assert devs["gpu0"].db_key == devs["gpu1"].db_key == "h100-sxm5-80gb"
    assert devs["gpu0"].tier == "hbm" and "dram" in devs
    ssd = [d for d in tr.header.devices if d.tier == "ssd"]
    assert ssd and ssd[0].stand_in and ssd[0].db_key == "virtio-disk-standin"
    assert not tr.truncated
    # markers: load, warm-up, then prefill/decode per batch, and every request
    ev = [(e, n) for _, e, n in tr.markers]
    assert ev.count(("phase_start", "prefill")) == 2 and ev.count(("phase_end", "decode")) == 2
    assert sum(1 for e, _ in ev if e == "request_end") == 4
    # the summary has the performance model's keys
    s = tr.summary
    assert (s["requests"], s["prompt_tokens"], s["generated_tokens"]) == (4, 96, 20)
    assert set(s["latency"]["ttft_ms"]) == {"mean", "p50", "p90", "p99"} and s["latency"]["tpot_ms"]["mean"] > 0
    assert s["transformers"]["offload"] == offload
    assert (s["transformers"]["offloaded_bytes"] > 0) == (offload == "disk")
    assert s["recorder"]["ticks"] > 3
    # and it aggregates: both GPUs' energy in prefill and decode, the worker's token counters
    u = aggregate(res.trace_path)
    assert {"prefill", "decode"} <= set(u.phases)
    for gid in ("gpu0", "gpu1"):
        i = u.devices.index(gid)
        assert u.has[(gid, "energy_j")] and u.by_phase["energy_j"][i].sum() > 0
    assert u.workload["generated_tokens"] == 20 and u.workload["requests_done"] == 4
    assert u.has[("dram", "resident_byte_s")]
    # the report came out MEASURED, both GPUs counted whole
    assert res.report["mode_reason"].startswith("MEASURED")
    assert np.isfinite(res.report["totals"]["total_gco2e"]["p50"])


def test_transformers_available_answers_without_raising():
    ok, why = hf.transformers_available()
    assert isinstance(ok, bool) and why
    if not torch.cuda.is_available():
        assert not ok and "CUDA" in why


# ------------------------------------------------------------------------ several devices
def test_device_map_multi_splits_resident_layers_in_blocks():
    s = hf.LlamaShape(8, 64, 4, 2, 16, 128, 256)
    dm = hf.device_map_multi(s, 2, "cpu", [0, 1, 2])
    assert [dm[f"model.layers.{i}"] for i in range(8)] == [0, 0, 1, 1, 2, 2, "cpu", "cpu"]
    assert dm["model.embed_tokens"] == 0 and dm["lm_head"] == 2 and dm["model.norm"] == 2


def test_multi_device_build_draws_weights_in_place_and_generates():
    # GIVEN two devices (two CPU "devices" here; cuda:0, cuda:1 on a multi-GPU machine)
    b = hf.build_llama(TINY, device="cpu", devices=["cpu", "cpu"], seed=3)
    # THEN the meta-built model was materialised with random linear weights, unit norms, real rotary
    m = b.model.model
    assert not any(p.is_meta for p in b.model.parameters())
    assert float(m.layers[0].mlp.up_proj.weight.float().std()) == pytest.approx(hf.INIT_STD, rel=0.2)
    assert torch.all(m.layers[0].input_layernorm.weight == 1)
    assert torch.isfinite(m.rotary_emb.inv_freq).all() and m.rotary_emb.inv_freq[0] == 1.0
    assert b.devices == ["cpu", "cpu"] and b.weight_bytes == TINY.params() * 2
    # AND it generates
    tm = hf.run_batch(b, hf.random_prompts(2, 8, TINY.vocab_size, 0, "cpu"), 3)
    assert tm.tpot_s > 0
