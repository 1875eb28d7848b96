"""The performance model: physics sanity checks that could fail."""

import numpy as np
import pytest

from storagecarbon.perfmodel import ModelConstants, run_model
from storagecarbon.scenario import load_scenario, parse_scenario
from storagecarbon.trace import read_trace
from storagecarbon.usage import aggregate


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
    bw = gpu.read_gbps.central * 1e9 * 4 * k.hbm_efficiency
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
