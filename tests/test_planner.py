"""compare and plan: paired draws, the analytic model against the simulation, Pareto, robust picks, sweeps."""

import copy
import json

import numpy as np
import pytest
import yaml

from storagecarbon.carbon.grid import CARBONCAST_CISO, IntensitySeries, NO_ERROR, grid_for_region, pue_triple
from storagecarbon.carbon.sampling import GridSpec, logtri_ppf
from storagecarbon.carbon.usage import DeviceUse
from storagecarbon.model.configs import configs_from_scenarios
from storagecarbon.model.steady_state import analytic_model
from storagecarbon.plan.compare import compare
from storagecarbon.plan.footprint import plan_carbon
from storagecarbon.plan.options import Option, load_option
from storagecarbon.plan.pareto import pareto_front, robust_picks
from storagecarbon.plan.plan import plan
from storagecarbon.plan.sweep import LifetimeVariant, load_sweep
from storagecarbon.plan.world import World
from storagecarbon.carbon.sampling import Triple
from storagecarbon.cli import main
from storagecarbon.errors import ValidationError
from storagecarbon.scenario import load_scenario, parse_scenario


def _option(db, name, *, gpu_busy=1000.0, duration=1000.0, n_gpu=2, tokens=100_000, region="us", ssd_written=0.0,
            extra=()):
    uses = [DeviceUse.total("gpu", "hbm", "h100-sxm5-80gb", n_gpu, duration, gpu_busy, n_gpu * duration),
            DeviceUse.total("ssd", "ssd", "samsung-pm9a3-7.68tb", 1, duration, 1.0, 0.01 * duration, ssd_written),
            *extra]
    return Option(name=name, source="test", report={"latency": {}}, uses=uses, grid=grid_for_region(db, region),
                     pue=pue_triple(db, "hyperscale"), allocation="max", requests=500, generated_tokens=tokens,
                     mode="modeled")


# ---------------------------------------------------------------------------------- compare
def test_paired_probabilities_are_probabilities_and_complement(db):
    # GIVEN two options with different hardware counts (so attribute()'s own rng streams would diverge)
    a = _option(db, "a", gpu_busy=900.0)
    b = _option(db, "b", gpu_busy=1000.0, n_gpu=3, extra=(DeviceUse.total("dram", "dram", "ddr5-rdimm-64gb", 8, 1000.0, 1.0,
                                                                                2000.0),))
    # WHEN compared with paired draws
    res = compare([a, b], db, draws=800, seed=3)
    # THEN probabilities are in [0, 1] and complementary
    (p,) = res["pairs"]
    assert 0.0 <= p["p_a_less"] <= 1.0 and 0.0 <= p["p_b_less"] <= 1.0
    assert p["p_a_less"] + p["p_b_less"] == pytest.approx(1.0, abs=1e-9)
    assert sum(res["p_lowest"].values()) == pytest.approx(1.0)


def test_dominating_option_has_probability_one(db):
    # GIVEN A uses the same hardware as B for the same time but half the GPU activity
    a = _option(db, "lean", gpu_busy=400.0)
    b = _option(db, "busy", gpu_busy=800.0)
    res = compare([a, b], db, draws=1000)
    # THEN in every paired draw A emits less (same device, grid and PUE draws: the pairing is real)
    assert res["pairs"][0]["p_a_less"] == 1.0
    assert res["ranking"]["by_p50"][0] == "lean"


def test_identical_options_tie_in_every_draw(db):
    res = compare([_option(db, "x"), _option(db, "y")], db, draws=500)
    p = res["pairs"][0]
    assert p["p_a_less"] == pytest.approx(0.5) and p["p_b_less"] == pytest.approx(0.5)
    assert p["diff_per_1k_gco2e"] == {"p5": 0.0, "p50": 0.0, "p95": 0.0}


def test_world_draws_do_not_depend_on_other_options(db):
    # the same region / device key gets the same draws whatever else was sampled before
    w1 = World(db, 300, seed=7)
    w1.key("a100-40gb")
    g1 = w1.grid(grid_for_region(db, "us"))
    w2 = World(db, 300, seed=7)
    g2 = w2.grid(grid_for_region(db, "us"))
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(w1.key("h100-sxm5-80gb").te_g, w2.key("h100-sxm5-80gb").te_g)


def test_logtri_ppf_is_scipys_log_triangular():
    # GIVEN a device figure (low, best, high) THEN its quantiles are triang.ppf on the logs (independent check)
    from scipy import stats

    t = Triple(28.7, 164, 575.2)
    u = np.array([0.05, 0.5, 0.95])
    a, m, b = np.log([28.7, 164, 575.2])
    expect = np.exp(stats.triang(c=(m - a) / (b - a), loc=a, scale=b - a).ppf(u))
    np.testing.assert_allclose(logtri_ppf(t, u), expect, rtol=1e-12)


@pytest.fixture(scope="module")
def three(root, db, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    return [load_option(root / f"scenarios/llama70b_{n}.yaml", db, out_root=out) for n in ("offload", "hbm_only", "old_gpus")]


def test_profile_and_compare_agree_exactly(three, db):
    # GIVEN each shipped llama70b scenario profiled (its report.json) and compared, same seed and draws
    res = compare(three, db, draws=2000, seed=0)
    for opt, o in zip(three, res["options"]):
        prof = opt.report
        # THEN totals, per-1k, headline, every device's bands and the grid are the same numbers
        assert o["totals"] == prof["totals"], opt.name
        assert o["per_1k_tokens_gco2e"] == prof["per_1k_tokens_gco2e"]
        assert o["headline"] == prof["headline"]
        assert [d["embodied_gco2e"] for d in o["devices"]] == [d["embodied_gco2e"] for d in prof["devices"]]
        assert o["ledger"] == prof["ledger"]


def test_compare_three_shipped_scenarios(three, db):
    res = compare(three, db, draws=2000)
    names = [o["name"] for o in res["options"]]
    assert names == ["llama70b_offload", "llama70b_hbm_only", "llama70b_old_gpus"]
    p = {(x["a"], x["b"]): x for x in res["pairs"]}
    # offloading the KV cache on 2 GPUs beats 4 GPUs without offload in every draw
    assert p[("llama70b_offload", "llama70b_hbm_only")]["p_a_less"] > 0.99
    old = next(o for o in res["options"] if o["name"] == "llama70b_old_gpus")
    assert old["slo_met"] is False
    for o in res["options"]:
        b = o["per_1k_tokens_gco2e"]
        assert 0 < b["p5"] <= b["p50"] <= b["p95"]
        assert {r["tier"] for r in o["tiers"] if r["present"]} >= {"hbm", "host"}


def test_cli_compare_prints_probabilities(root, capsys):
    rc = main(["compare", *(str(root / f"scenarios/llama70b_{n}.yaml") for n in ("offload", "hbm_only", "old_gpus")),
               "--draws", "500"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "P(A<B)" in out and "per 1k tokens" in out and "llama70b_old_gpus" in out
    assert "by P95" in out and "out: TTFT p90" in out  # the option that misses its SLO is not a candidate


def test_cli_compare_json(root, capsys):
    rc = main(["compare", str(root / "scenarios/llama70b_offload.yaml"), str(root / "scenarios/llama70b_hbm_only.yaml"),
               "--json", "--draws", "300"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["compare_version"] == 1 and len(res["pairs"]) == 1


# ---------------------------------------------------------------------------------- analytic model
def _variant(root, name, **kw):
    d = yaml.safe_load((root / "scenarios/llama70b_offload.yaml").read_text())
    d = copy.deepcopy(d)
    d["name"] = name
    for k, v in kw.items():
        cur = d
        ks = k.split(".")
        for kk in ks[:-1]:
            cur = cur.setdefault(kk, {})
        if v is None:
            cur.pop(ks[-1], None)
        else:
            cur[ks[-1]] = v
    return d


# Measured agreement (docs/planning.md): P50 gCO2e per 1k generated tokens within -6.2%..+2.4% over
# eleven configurations; here four of them, checked at +-10%.
AGREEMENT_RTOL = 0.10


@pytest.mark.parametrize("name,kw", [
    ("offload", {}),
    ("old_gpus_saturated", {"hardware.gpu": {"device": "a100-40gb", "count": 4}, "hardware.dram": {"device": "ddr4-rdimm-64gb", "count": 16},
                            "placement.weights": {"hbm": 0.75, "dram": 0.25}, "placement.gpu_memory_utilization": 0.9}),
    ("h200x2", {"hardware.gpu": {"device": "h200-sxm-141gb", "count": 2}}),
    ("h100x4_busy", {"hardware.gpu": {"device": "h100-sxm5-80gb", "count": 4}, "workload.arrival_rate_rps": 2.0,
                     "engine.max_num_seqs": 128}),
])
def test_analytic_model_agrees_with_simulation(root, db, tmp_path, name, kw):
    from storagecarbon.model.simulate import run_model
    from storagecarbon.pipeline import attribute_trace

    d = _variant(root, name, **kw)
    scn = parse_scenario(yaml.safe_dump(d), name, db)
    # GIVEN the iteration-level simulation + attribute()
    run_model(scn, db, tmp_path / "t.arrows")
    ref = attribute_trace(tmp_path / "t.arrows", db, scn.carbon, scenario=name, draws=3000,
                          slo=scn.slo.model_dump()).report
    # WHEN the analytic model and the vectorised kernel evaluate the same configuration
    cfg = configs_from_scenarios([scn], db)
    perf = analytic_model(scn, cfg, db)
    car = plan_carbon(perf, cfg, World(db, 3000), [grid_for_region(db, scn.carbon.region)],
                         pue_triple(db, scn.carbon.pue), [LifetimeVariant(name="d")], scn.carbon.allocation)
    # THEN gCO2e per 1k tokens agrees within the stated tolerance; latency roughly
    q = car["q"][0, 0, 0]
    assert q[1] == pytest.approx(ref["per_1k_tokens_gco2e"]["p50"], rel=AGREEMENT_RTOL)
    assert q[2] == pytest.approx(ref["per_1k_tokens_gco2e"]["p95"], rel=AGREEMENT_RTOL)
    assert perf.duration_s[0] == pytest.approx(ref["duration_s"], rel=0.1)
    assert perf.tpot_p90_ms[0] == pytest.approx(ref["latency"]["tpot_ms"]["p90"], rel=0.2)
    if name == "old_gpus_saturated":
        # vLLM's UVA weight offload re-reads the host-resident quarter of the weights per tile of tokens: a full
        # prefill step takes ~6.5 s against 0.4 s decode steps, the run sits at utilisation ~1, and the steady
        # state's queueing approximation puts TTFT P90 at half the simulation's (docs/planning.md)
        pytest.xfail("steady-state TTFT at utilisation ~1 with very long prefill steps (UVA weight offload)")
    assert perf.ttft_p90_ms[0] == pytest.approx(ref["latency"]["ttft_ms"]["p90"], rel=0.35)


def test_configs_that_do_not_fit_are_infeasible_with_a_reason(root, db):
    scn = load_scenario(root / "scenarios/llama70b_offload.yaml", db)
    d = _variant(root, "tiny", **{"hardware.gpu": {"device": "a100-40gb", "count": 2}})
    small = parse_scenario(yaml.safe_dump(d), "tiny", db)
    cfg = configs_from_scenarios([scn, small], db)
    perf = analytic_model(scn, cfg, db)
    assert perf.feasible.tolist() == [True, False]
    assert "leave no room for KV cache" in perf.reason[1]
    assert np.isnan(perf.duration_s[1])


# ---------------------------------------------------------------------------------- ranking
def test_pareto_front_is_non_dominated():
    rng = np.random.default_rng(0)
    x, y = rng.random(400), rng.random(400)
    f = pareto_front(x, y)
    fs = set(f.tolist())
    for i in f:  # nobody dominates a frontier point
        assert not np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i])))
    for j in range(400):  # every other point is dominated by a frontier point
        if j not in fs:
            assert np.any((x[f] <= x[j]) & (y[f] <= y[j]))
    assert np.all(np.diff(x[f]) >= 0) and np.all(np.diff(y[f]) < 0)


def test_robust_pick_differs_from_median_pick():
    # GIVEN A: steady around 1.0; B: lower median but a heavy tail (e.g. sited on a volatile grid)
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.02, 4000)
    b = np.where(rng.random(4000) < 0.2, rng.uniform(1.5, 2.5, 4000), rng.normal(0.9, 0.02, 4000))
    picks = robust_picks(np.vstack([a, b]), q=95)
    assert picks == {"median": 1, "robust": 0}


# ---------------------------------------------------------------------------------- sweep
def _sweep(tmp_path, text):
    p = tmp_path / "sweep.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,line,field", [
    ("gpus:\n  - {device: h100-sxm5-80gb, count: [2]}\nregions: [us]\nbogus: 1\n", 4, "bogus"),
    ("gpus:\n  - device: h100-sxm5-80gb\n    count: [0]\n", 3, "gpus[0].count"),
    ("gpus:\n  - {device: h100-sxm5-80gb, count: 2}\nregions:\n  - us\n  - atlantis\n", 5, "regions[1]"),
    ("gpus:\n  - {device: h100-sxm5-80gb, count: 2}\n  - {device: h900, count: 2}\n", 3, "gpus[1].device"),
    ("gpus:\n  - {device: h100-sxm5-80gb, count: 2}\nssd:\n  - {device: ddr4-rdimm-64gb, count: 1}\n", 4, "ssd[0].device"),
    ("gpus:\n  - {device: h100-sxm5-80gb, count: 2}\nweights:\n  - {hbm: 0.5}\n", 4, "weights[0]"),
])
def test_sweep_errors_name_file_line_field(tmp_path, db, text, line, field):
    p = _sweep(tmp_path, text)
    with pytest.raises(ValidationError) as ei:
        load_sweep(p, db)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: {field}"), msg


def test_intensity_series_errors_name_line(tmp_path, db):
    (tmp_path / "ci.csv").write_text("timestamp,gco2e_per_kwh\n2024-01-01T00:00Z,100\n2024-01-01T01:00Z,abc\n")
    p = _sweep(tmp_path, "gpus:\n  - {device: h100-sxm5-80gb, count: 2}\nintensity_series:\n  - {name: x, file: ci.csv}\n")
    with pytest.raises(ValidationError) as ei:
        load_sweep(p, db)
    assert str(ei.value).startswith(f"{tmp_path / 'ci.csv'}:3: gco2e_per_kwh")


def test_forecast_error_bands_widen_the_intensity(db):
    vals = np.full(96, 300.0)
    exact = IntensitySeries("flat", vals, NO_ERROR)
    noisy = IntensitySeries("flat", vals, CARBONCAST_CISO)
    w = World(db, 20_000, seed=0)
    e = w.grid(GridSpec("series:exact", series=exact))
    n = w.grid(GridSpec("series:noisy", series=noisy))
    assert np.all(e == 300.0)
    ape = np.abs(300.0 / n - 1.0) * 100  # actual = forecast / (1 + e)
    assert 9.0 < np.median(ape) < 13.0       # between the day-1 and day-4 P50 bands (9.0 .. 12.5 %)
    assert np.percentile(ape, 95) < 30.0


def test_plan_on_shipped_sweep(root, db):
    scn = load_scenario(root / "scenarios/llama70b_offload.yaml", db)
    loaded = load_sweep(root / "scenarios/sweeps/llama70b_sweep.yaml", db)
    res = plan(scn, loaded, db, top=5)
    c = res["counts"]
    assert c["configurations"] == c["hardware"] * c["lifetimes"] * c["grids"] >= 10_000
    rb = res["recommendation"]["robust"]
    assert rb is not None and rb["slo_met"] and rb["complete"]
    # old and new GPUs were both evaluated, and the sweep spans clean to dirty grids
    gpus = set(res["scatter"]["gpu"])
    assert {"a100-40gb", "v100-sxm2-32gb", "h100-sxm5-80gb", "h200-sxm-141gb"} <= gpus
    p50s = [g["gco2e_per_kwh_p50"] for g in res["by_grid"]]
    assert p50s == sorted(p50s) and p50s[0] < 100 < 600 < p50s[-1]
    # the Pareto frontiers are non-dominated within the detail grid
    sc = res["scatter"]
    idx = {i: k for k, i in enumerate(sc["id"])}
    front = [idx[i] for i in res["pareto_ids"][sc["grid"]]["latency_vs_p95"]]
    x, y = np.array(sc["tpot_p90_ms"]), np.array(sc["p95"])
    for i in front:
        assert not np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i])))
    assert res["infeasible_reasons"]


def test_cli_plan_prints_frontier_and_robust_pick(root, capsys):
    rc = main(["plan", str(root / "scenarios/llama70b_offload.yaml"), "--sweep",
               str(root / "scenarios/sweeps/llama70b_sweep.yaml"), "--top", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "What to buy" in out and "Pareto frontier" in out and "What if" in out
