"""The performance model: physics sanity checks that could fail."""

import numpy as np
import yaml
import pytest

from storagecarbon.model.constants import ModelConstants

from storagecarbon.model.simulate import run_model
from storagecarbon.scenario import load_scenario, parse_scenario
from storagecarbon.trace import read_trace
from storagecarbon.carbon.usage import aggregate


@pytest.fixture(scope="module")
def offload(db, root, tmp_path_factory):
    scn = load_scenario(root / "scenarios/llama70b_offload.yaml", db)
    out = tmp_path_factory.mktemp("m") / "t.arrows"
    return scn, run_model(scn, db, out)


def test_modeled_trace_is_labelled_and_complete(offload):
    scn, res = offload
    t = read_trace(res.path)
    assert t.source == "modeled" and not t.truncated
    assert res.requests == scn.workload.num_requests()
    assert res.generated_tokens > 0 and res.duration_s > 0


def test_kv_stores_to_dram_and_ssd_are_chunk_multiples(offload, db):
    scn, res = offload
    u = aggregate(res.path)
    chunk_bytes = scn.placement.kv.chunk_size * scn.model.kv_bytes_per_token()
    ids = u.devices
    for dev in ("dram", "ssd"):
        w = u.by_phase["bytes_written"][ids.index(dev)].sum()
        assert w > 0
        assert w / chunk_bytes == pytest.approx(round(w / chunk_bytes))


def test_decode_is_memory_bound_tpot_matches_bytes_over_bandwidth(db, root, tmp_path):
    # one request alone: TPOT ~ (weights + KV) / (HBM BW x efficiency) + overhead
    text = (root / "scenarios/llama70b_hbm_only.yaml").read_text()
    text = text.replace("requests: 512", "requests: 1").replace("dist: lognormal, sigma: 0.5, min: 16, max: 1024", "dist: fixed")
    scn = parse_scenario(text, "one.yaml", db)
    k = ModelConstants()
    res = run_model(scn, db, tmp_path / "one.arrows", constants=k)
    gpu = db.get("h100-sxm5-80gb")
    bw = gpu.read_gb_per_s.central * 1e9 * 4 * k.hbm_efficiency
    expect = scn.model.weight_bytes() / bw + k.step_overhead_s
    assert res.tpot_s[0] == pytest.approx(expect, rel=0.05)


def test_weight_offload_slows_decode(db, root, tmp_path):
    base = (root / "scenarios/llama70b_old_gpus.yaml").read_text().replace("requests: 512", "requests: 16")
    r_off = run_model(parse_scenario(base, "a.yaml", db), db, tmp_path / "a.arrows")
    less = base.replace("weights: {hbm: 0.75, dram: 0.25}", "weights: {hbm: 0.85, dram: 0.15}")
    r_less = run_model(parse_scenario(less, "b.yaml", db), db, tmp_path / "b.arrows")
    assert np.median(r_off.tpot_s) > np.median(r_less.tpot_s)


def test_weights_that_do_not_fit_are_a_clear_error(db, root, tmp_path):
    from storagecarbon.errors import ValidationError

    text = (root / "scenarios/llama70b_old_gpus.yaml").read_text().replace("weights: {hbm: 0.75, dram: 0.25}",
                                                                            "weights: {hbm: 1.0}").replace(
        "device: a100-40gb, count: 4", "device: a100-40gb, count: 2")
    with pytest.raises(ValidationError, match="leave no room for KV"):
        run_model(parse_scenario(text, "c.yaml", db), db, tmp_path / "c.arrows")


def test_second_pass_hits_lmcache(db, root, tmp_path):
    text = (root / "scenarios/llama70b_offload.yaml").read_text()
    text = text.replace("requests: 512", "requests: 32").replace("  arrival_rate_rps: 0.5\n", "").replace(
        "shared_prefix: {tokens: 1536, fraction: 0.7}", "shared_prefix: {tokens: 0, fraction: 0.0}\n  passes: 2")
    scn = parse_scenario(text, "p.yaml", db)
    res = run_model(scn, db, tmp_path / "p.arrows")
    u = aggregate(res.path)
    # every prompt's full chunks were stored once and read back (from DRAM) in pass 2
    dram = u.devices.index("dram")
    assert u.by_phase["bytes_read"][dram].sum() > 0


def test_passes_after_a_prefix_cache_reset_load_the_prefix_from_the_offload_tier(db, root, tmp_path):
    # GIVEN the measured matrix's protocol: 8 requests sharing a 1,536-token prefix, vLLM's native CPU offload,
    # two passes with the HBM prefix cache emptied between them (scenario edited as data)
    d = yaml.safe_load((root / "scenarios/gpu/vllm_l8b_native_b8_p2048.yaml").read_text())
    kv_per_token = 2 * 32 * 8 * 128 * 2
    loads = {}
    for reset in (False, True):
        d["workload"]["reset_prefix_cache_between_passes"] = reset
        scn = parse_scenario(yaml.safe_dump(d), f"r{reset}.yaml", db)
        res = run_model(scn, db, tmp_path / f"r{reset}.arrows")
        u = aggregate(res.path)
        loads[reset] = u.by_phase["kv_bytes_read"][u.devices.index("dram")].sum()
        assert res.summary["requests"] == 16
    # THEN with the reset, pass 2 loads the prefix back from host DRAM, in whole 16-token blocks (vLLM's native
    # connector's unit), at least once and at most once per request; without it the prefix stays in HBM
    prefix = 1536 * kv_per_token
    assert prefix <= loads[True] <= 8 * prefix and loads[True] % (16 * kv_per_token) == 0
    assert loads[False] < 0.1 * loads[True]


# ---------------------------------------------------------------------------------- one physics
def test_physics_gives_the_same_step_for_one_configuration_and_for_many(db, root):
    # GIVEN the rates of several configurations as arrays, and the same configurations one by one as floats
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from storagecarbon.model import physics as ph
    from storagecarbon.model.configs import configs_from_scenarios
    from storagecarbon.model.constants import load_constants
    from storagecarbon.scenario import TransformersCfg

    scn = load_scenario(root / "scenarios/llama70b_old_gpus.yaml", db)
    cfg = configs_from_scenarios([scn, load_scenario(root / "scenarios/llama70b_offload.yaml", db)], db)
    rates = [ph.rates_for(scn.model_copy(update={"engine": scn.engine.model_copy(update={"transformers": t})}), cfg, db, k)
             for k in (ModelConstants(), load_constants(root / "calibration/h100-transformers.yaml"))
             for t in (None, TransformersCfg(offload="kv-cpu"))]

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(range(len(rates))), st.floats(0, 0.5), st.floats(0, 2e11), st.floats(1, 256), st.floats(0, 1e15))
    def check(ri, t_gpu, kv_bytes, batch, flops):
        r = rates[ri]
        arr = np.full(len(cfg), 1.0)
        # WHEN the physics evaluates a prefill and a decode step both ways
        many = [ph.step_time(r, arr * t_gpu, arr * kv_bytes), ph.decode_gpu_s(r, 70e9, arr * batch, arr * kv_bytes),
                ph.prefill_gpu_s(r, arr * flops)]
        for i in range(len(cfg)):
            one = r.at(i)
            single = [ph.step_time(one, t_gpu, kv_bytes), ph.decode_gpu_s(one, 70e9, batch, kv_bytes),
                      ph.prefill_gpu_s(one, flops)]
            # THEN the numbers are the same
            assert np.asarray(many[0][0])[i] == pytest.approx(single[0][0], rel=1e-12)
            assert np.asarray(many[0][1])[i] == pytest.approx(single[0][1], rel=1e-12, abs=1e-15)
            assert np.asarray(many[1])[i] == pytest.approx(single[1], rel=1e-12)
            assert np.asarray(many[2])[i] == pytest.approx(single[2], rel=1e-12)

    check()


def test_host_floor_and_kv_round_trip_slow_a_step():
    from storagecarbon.model import physics as ph

    k = ModelConstants(layer_overhead_s=0.001, kv_offload_gb_per_s=10.0, overlap=0.0)
    one = np.ones(1)
    r = ph.rates(k, n_gpu=one, gpu_read_gb_per_s=one * 3350, gpu_bf16_tflops=one * 989, weight_bytes=16e9,
                 w_frac=np.array([[1.0, 0, 0, 0]]), dram_read_gb_per_s=one * np.nan, n_dram=one * 0,
                 ssd_read_gb_per_s=one * np.nan, ssd_write_gb_per_s=one * np.nan, n_ssd=one * 0, hdd_read_gb_per_s=one * np.nan,
                 hdd_write_gb_per_s=one * np.nan, n_hdd=one * 0, layers=32, kv_round_trip=True).at(0)
    # a 1 ms GPU step under a 32 ms host floor takes the floor (+ overhead)
    assert ph.step_time(r, 0.001)[0] == pytest.approx(0.032 + k.step_overhead_s)
    # 1 GB of KV to the GPU and back at 10 GB/s: 0.2 s, not hidden (kv_offload_overlap 0)
    assert ph.step_time(r, 0.001, 1e9)[0] == pytest.approx(0.2 + 0.032 + k.step_overhead_s)


# ---------------------------------------------------------------------------------- agreement
# The simulation and the planner's steady state share the physics (storagecarbon/model/physics.py);
# what this checks is the steady state's queueing approximation (Little's law when not saturated,
# per-request FIFO admission in decode time when saturated or offline), for default and calibrated
# constants and every offload mode. Measured: docs/planning.md.
AGREEMENT_RTOL = 0.07          # duration, TPOT mean, GPU busy-seconds
AGREEMENT_P90_RTOL = 0.20      # TPOT P90 (unsaturated: prefill interruptions as a stationary Poisson mixture)
AGREEMENT_TTFT_RTOL = 0.30     # TTFT P90 (unsaturated: residual step + own prefill, normal tail)

OFFLOAD_MODES = {
    "none": {},
    "weights-dram": {"placement.weights": {"hbm": 0.8, "dram": 0.2}},
    "weights-ssd": {"placement.weights": {"hbm": 0.95, "ssd": 0.05}},
    # LMCache tiers: two passes over the requests and little HBM, so the second pass loads from the tier
    "kv-dram": {"placement.kv.local_cpu": {"enabled": True, "size_gb": 128}, "workload.passes": 2},
    "kv-ssd": {"placement.kv.local_disk": {"enabled": True, "size_gb": 500}, "workload.passes": 2},
    "kv-hdd": {"placement.kv.local_disk": {"enabled": True, "size_gb": 500}, "workload.passes": 2, "hardware.ssd": None,
               "hardware.hdd": {"device": "seagate-exos-x20-20tb", "count": 2}},
    "kv-offloaded-cache": {"engine.kind": "transformers", "engine.transformers": {"offload": "kv-cpu", "batch_size": 16}},
}


def _set(d, key, v):
    ks = key.split(".")
    for kk in ks[:-1]:
        d = d.setdefault(kk, {})
    if v is None:
        d.pop(ks[-1], None)
    else:
        d[ks[-1]] = v


def _agreement_scenario(root, db, workload, mode):
    import yaml

    if workload == "online":  # Poisson arrivals, lognormal lengths, shared prefixes (llama70b_offload, 128 requests)
        d = yaml.safe_load((root / "scenarios/llama70b_offload.yaml").read_text())
        d["workload"]["requests"] = 128
        for tier in ("local_cpu", "local_disk"):
            d["placement"]["kv"].pop(tier, None)
    else:  # offline batches of fixed lengths (the calibrated H100 scenario, 32 requests in batches of 16)
        d = yaml.safe_load((root / "scenarios/gpu/llama8b_calibrated_model.yaml").read_text())
        d.pop("calibration")
        d["workload"]["shared_prefix"] = {"tokens": 512, "fraction": 0.5}
    d["hardware"]["ssd"] = {"device": "samsung-pm9a3-7.68tb", "count": 1}
    if mode.startswith("kv-") and mode != "kv-offloaded-cache":
        d["placement"].setdefault("kv", {})["hbm_gb"] = 20 if workload == "online" else 4
    d["name"] = f"{workload}-{mode}"
    for key, v in OFFLOAD_MODES[mode].items():
        _set(d, key, v)
    return parse_scenario(yaml.safe_dump(d), d["name"], db)


@pytest.mark.parametrize("workload", ["online", "offline"])
@pytest.mark.parametrize("mode", list(OFFLOAD_MODES))
def test_steady_state_agrees_with_simulation(root, db, tmp_path, workload, mode, request):
    if (workload, mode) == ("online", "kv-offloaded-cache"):
        # Known gap (docs/planning.md): with the NVML-sized H100 (85.5 GB) this online run saturates under
        # transformers' OffloadedCache, whose decode step grows steeply with the batch; the steady state's
        # decode-time -> wall-time map then compresses time and its TTFT goes wrong (negative). Duration,
        # TPOT and GPU busy still agree; TTFT does not.
        request.applymarker(pytest.mark.xfail(reason="steady-state TTFT of saturated OffloadedCache runs", strict=False))
    from storagecarbon.model.configs import configs_from_scenarios
    from storagecarbon.model.constants import load_constants
    from storagecarbon.model.steady_state import analytic_model

    scn = _agreement_scenario(root, db, workload, mode)
    for k in (ModelConstants(), load_constants(root / "calibration/h100-transformers.yaml")):
        # GIVEN the iteration-level simulation of one configuration
        res = run_model(scn, db, tmp_path / "t.arrows", constants=k)
        gpu_busy = aggregate(res.path).by_phase["busy_s"][0].sum()
        lat = res.summary["latency"]
        # WHEN the steady state evaluates the same configuration with the same constants
        perf = analytic_model(scn, configs_from_scenarios([scn], db), db, constants=k)
        assert perf.feasible[0], perf.reason[0]
        if mode.startswith("kv-") and mode != "kv-offloaded-cache":
            assert perf.kv_hit_share[0] > 0.5  # the tier under test serves the second pass
        # THEN they agree within the queueing approximation's bound
        why = f"{scn.name}, constants {k.source}"
        assert perf.duration_s[0] == pytest.approx(res.duration_s, rel=AGREEMENT_RTOL), why
        assert perf.tpot_mean_ms[0] == pytest.approx(lat["tpot_ms"]["mean"], rel=AGREEMENT_RTOL), why
        assert perf.tpot_p90_ms[0] == pytest.approx(lat["tpot_ms"]["p90"], rel=AGREEMENT_P90_RTOL), why
        assert perf.busy["gpu"][0] == pytest.approx(gpu_busy, rel=AGREEMENT_RTOL), why
        assert perf.ttft_p90_ms[0] == pytest.approx(lat["ttft_ms"]["p90"], rel=AGREEMENT_TTFT_RTOL), why


def test_plan_on_calibrated_scenario_matches_profile_tpot(root, tmp_path, monkeypatch, capsys):
    # GIVEN the calibrated H100 scenario, run from another directory (its calibration: path is
    # relative to the repository), and a sweep of just its own hardware
    import json

    from storagecarbon.cli import main

    scn = root / "scenarios/gpu/llama8b_calibrated_model.yaml"
    sweep = tmp_path / "own.yaml"
    sweep.write_text("gpus:\n  - {device: h100-sxm5-80gb, count: [1]}\ndraws: 200\n")
    monkeypatch.chdir(tmp_path)
    # WHEN profile models it and plan evaluates it
    assert main(["profile", str(scn), "--mode", "modeled", "--out", str(tmp_path / "p"), "--json", "--draws", "200"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert main(["plan", str(scn), "--sweep", str(sweep), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # THEN both used the calibration, and plan's TPOT is profile's within the agreement bound
    assert "h100-transformers.yaml" in str(plan["assumptions"]["constants"]["source"])
    assert plan["scatter"]["tpot_p90_ms"][0] == pytest.approx(prof["latency"]["tpot_ms"]["p90"], rel=AGREEMENT_P90_RTOL)


def test_long_modeled_run_streams(root, db, tmp_path, monkeypatch):
    # GIVEN a spill threshold far below the run's row count
    from storagecarbon.model import simulate
    from storagecarbon.trace import read_trace

    monkeypatch.setattr(simulate, "SPILL_ROWS", 500)
    import yaml

    d = yaml.safe_load((root / "scenarios/llama70b_offload.yaml").read_text())
    d["workload"]["requests"] = 64
    scn = parse_scenario(yaml.safe_dump(d), "long", db)
    batches = []
    orig = simulate.TraceWriter.samples
    monkeypatch.setattr(simulate.TraceWriter, "samples", lambda self, t, c, v: (batches.append(len(t)), orig(self, t, c, v)))
    # WHEN the simulation runs
    res = run_model(scn, db, tmp_path / "m.arrows")
    # THEN its rows reached the file in many small batches, and the trace reads back whole with its markers
    assert len(batches) > 10 and max(batches) < 500 + 64
    tr = read_trace(res.path)
    assert not tr.truncated and len(tr.t_s) == sum(batches)
    assert any(ev == "phase_start" for _, ev, _ in tr.markers)


# ------------------------------------------------------------------ calibration files from before the GB/s rename


def test_calibration_with_old_constant_names_loads(tmp_path):
    from storagecarbon.model.constants import load_constants

    # GIVEN a calibration file written before the rename (pcie_gbps, kv_offload_gbps)
    p = tmp_path / "old.yaml"
    p.write_text("constants:\n  pcie_gbps: 12.5\n  kv_offload_gbps: 80.0\n  overlap: 0.25\n")
    # WHEN loaded THEN the old names set the renamed constants
    k = load_constants(p)
    assert (k.pcie_gb_per_s, k.kv_offload_gb_per_s, k.overlap) == (12.5, 80.0, 0.25)


def test_calibration_giving_both_names_is_refused(tmp_path):
    from storagecarbon.errors import ValidationError
    from storagecarbon.model.constants import load_constants

    p = tmp_path / "both.yaml"
    p.write_text("constants:\n  pcie_gbps: 12.5\n  pcie_gb_per_s: 20.0\n")
    with pytest.raises(ValidationError, match=r"both\.yaml: constants: pcie_gbps and pcie_gb_per_s both given"):
        load_constants(p)


def test_vllm_defaults_load_every_figure_of_their_file():
    # GIVEN the shipped vLLM-fitted constants (written by calibrate, old or new field names)
    import yaml

    from storagecarbon.model.constants import VLLM_DEFAULTS, load_constants
    from storagecarbon.renames import RENAMED

    written = yaml.safe_load(VLLM_DEFAULTS.read_text())["constants"]
    # WHEN loaded THEN every constant in the file is the one the model uses, under its current name
    k = load_constants(VLLM_DEFAULTS)
    assert written and {n: getattr(k, RENAMED.get(n, n)) for n in written} == written
