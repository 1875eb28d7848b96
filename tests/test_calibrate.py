"""storagecarbon calibrate: recovers known constants, reads the committed GPU traces, writes a
file the performance model loads."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from storagecarbon import calibrate as cal
from storagecarbon.errors import StoragecarbonError
from storagecarbon.model.constants import ModelConstants, load_constants
from storagecarbon.model.simulate import run_model
from storagecarbon.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "gpu" / "results" / "2026-11-24"

SCN = """
name: {name}
hardware:
  gpu: {{device: h100-sxm5-80gb, count: 1}}
  host: {{device: server-base-generic, count: 1}}
  dram: {{device: ddr5-rdimm-per-gb, count: 128}}
  ssd: {{device: virtio-disk-standin, count: 1}}
model: {{preset: llama-3-8b, weight_dtype: bf16, kv_dtype: bf16}}
placement:
  weights: {weights}
workload: {{requests: {b}, prompt_tokens: {{mean: {p}}}, output_tokens: {{mean: {o}}}}}
engine:
  kind: transformers
  max_num_seqs: {b}
  max_num_batched_tokens: {mbt}
  transformers: {{offload: {off}, batch_size: {b}}}
carbon: {{region: world}}
"""


def synthetic(tmp_path, db, k, name, b, p, o, weights="{hbm: 1.0}", off="none"):
    scn = parse_scenario(SCN.format(name=name, b=b, p=p, o=o, weights=weights, off=off, mbt=max(8192, b * p)),
                         name=name, db=db)
    return cal.write_synthetic_measurement(scn, db, k, tmp_path / f"{name}.arrows", offload=off)


def test_nelder_mead_and_bounded_lstsq():
    x, fx, _ = cal.nelder_mead(lambda v: float((v[0] - 1.5) ** 2 + 3 * (v[1] + 0.5) ** 2), np.zeros(2))
    assert x == pytest.approx([1.5, -0.5], abs=1e-3) and fx < 1e-6
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sol = cal._bounded_lstsq(a, np.array([-1.0, 2.0, 1.0]), 0.0, 4.0)
    assert sol[0] == 0.0 and 0.0 <= sol[1] <= 4.0


def test_calibration_recovers_known_constants(tmp_path, db):
    # GIVEN "measurements" made by the model itself with known constants
    k_true = replace(ModelConstants(), hbm_efficiency=0.55, compute_efficiency=0.42, step_overhead_s=0.006,
                     pcie_gb_per_s=12.0, overlap=0.3, power_frac_prefill=0.9, power_frac_decode=0.6,
                     power_frac_io_wait=0.15)
    paths = [
        synthetic(tmp_path, db, k_true, "b1", 1, 256, 16),
        synthetic(tmp_path, db, k_true, "b16", 16, 1024, 16),
        synthetic(tmp_path, db, k_true, "b64", 64, 512, 8),
        synthetic(tmp_path, db, k_true, "cpu25", 4, 256, 6, "{hbm: 0.75, dram: 0.25}", "cpu"),
        synthetic(tmp_path, db, k_true, "cpu50", 4, 256, 6, "{hbm: 0.5, dram: 0.5}", "cpu"),
    ]
    # WHEN the constants are fitted (starting from the defaults)
    res = cal.run_calibration([str(p) for p in paths], db, max_evals=500)
    k = res.constants
    # THEN the ones the runs inform come back
    for name in ("hbm_efficiency", "compute_efficiency", "step_overhead_s", "pcie_gb_per_s",
                 "power_frac_prefill", "power_frac_decode", "power_frac_io_wait"):
        assert getattr(k, name) == pytest.approx(getattr(k_true, name), rel=0.05), name
    assert k.overlap == pytest.approx(k_true.overlap, abs=0.1)
    assert "disk_efficiency" in res.defaulted and "tp_efficiency" in res.defaulted
    # and every residual is (near) zero
    for r in res.residuals(None):
        for m in cal.METRICS:
            assert abs(r[m]["error_pct"]) < 2.0, (r["name"], m)


def test_holdout_is_evaluated_not_fitted(tmp_path, db):
    k_true = replace(ModelConstants(), hbm_efficiency=0.6, compute_efficiency=0.5, step_overhead_s=0.01)
    paths = [synthetic(tmp_path, db, k_true, n, b, p, 8) for n, b, p in (("a", 1, 128), ("b", 8, 512), ("c", 4, 256))]
    res = cal.run_calibration([str(p) for p in paths], db, holdout=["c"], max_evals=300)
    assert [o.name for o in res.observations if o.held_out] == ["c"]
    assert res.error_summary(True)["tpot_ms"]["n"] == 1
    with pytest.raises(StoragecarbonError, match="held out"):
        cal.run_calibration([str(p) for p in paths], db, holdout=["*"])


def test_rejects_traces_that_are_not_measured_transformers_runs(tmp_path, db):
    scn = parse_scenario(SCN.format(name="m", b=1, p=64, o=4, weights="{hbm: 1.0}", off="none", mbt=8192), db=db)
    run_model(scn, db, tmp_path / "modeled.arrows")
    with pytest.raises(StoragecarbonError, match="measured"):
        cal.run_calibration([str(tmp_path / "modeled.arrows")], db)
    with pytest.raises(StoragecarbonError, match="does not exist"):
        cal.run_calibration([str(tmp_path / "missing.arrows")], db)


@pytest.mark.skipif(not (RESULTS / "traces").exists(), reason="committed GPU traces not present")
def test_committed_gpu_traces_calibrate_via_cli_and_the_file_loads(tmp_path):
    from storagecarbon.cli import main

    # GIVEN two committed H100 traces (gzip), one held out
    traces = [RESULTS / "traces" / "l8b_none_b1_p512.arrows.gz", RESULTS / "traces" / "l8b_none_b64_p512.arrows.gz"]
    out = tmp_path / "cal.yaml"
    # WHEN calibrate runs from the command line
    rc = main(["calibrate", *map(str, traces), "--out", str(out), "--holdout", "l8b_none_b64*", "--max-evals", "120"])
    # THEN the file loads as the model's constants, with the measured machine and residuals
    assert rc == 0
    k = load_constants(out)
    assert k.source.startswith("calibration") and 0 < k.compute_efficiency <= 1
    import yaml

    doc = yaml.safe_load(out.read_text())
    assert doc["machine"]["gpus"] == ["NVIDIA H100 80GB HBM3"]
    assert [t["held_out"] for t in doc["traces"]] == [False, True]
    assert {r["name"] for r in doc["residuals"]} == {"l8b_none_b1_p512", "l8b_none_b64_p512"}
    assert doc["residuals"][0]["tpot_ms"]["measured"] == pytest.approx(32.92, rel=0.01)


def test_shipped_calibration_loads_and_the_calibrated_scenario_uses_it(tmp_path, db, monkeypatch):
    from storagecarbon.scenario import load_scenario

    k = load_constants(ROOT / "calibration" / "h100-transformers.yaml")
    assert k.hbm_efficiency > 0 and k.pcie_gb_per_s > 0
    monkeypatch.chdir(ROOT)  # the scenario's calibration path is relative to the repository root
    scn = load_scenario(ROOT / "scenarios" / "gpu" / "llama8b_calibrated_model.yaml", db)
    res = run_model(scn, db, tmp_path / "t.arrows")
    assert res.summary["model"]["constants"]["source"].startswith("calibration")
    assert res.summary["model"]["constants"]["pcie_gb_per_s"] == pytest.approx(k.pcie_gb_per_s)
