"""Issue 11 accounting: hand-checked numbers, scope, missing-is-missing, bands, ledger, wear, overrides.

Most tests use a tiny device_db with round numbers written here, so the expected values are a few
lines of arithmetic in the test itself, not a call into the kernel.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storagecarbon.carbon.attribute import CarbonInputs, attribute
from storagecarbon.carbon.sampling import Triple, band, logtri_ppf
from storagecarbon.cli import main
from storagecarbon.devicedb import DeviceDB
from storagecarbon.report.build import build_report
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels
from storagecarbon.carbon.usage import aggregate

YEAR_S = 365.25 * 86400
LIFE = {"best": 5, "source": "test"}
DEVICES = [
    {"key": "gpu-x", "kind": "gpu", "name": "test GPU", "capacity_gb": 80,
     "embodied_kgco2e": {"per": "unit", "best": 100, "method": "model", "source": "test"},
     "lifetime_years": LIFE, "idle_w": {"best": 50, "source": "test"}, "active_w": {"best": 250, "source": "test"}},
    {"key": "ssd-x", "kind": "ssd", "name": "test SSD", "capacity_gb": 1000,
     "embodied_kgco2e": {"per": "unit", "best": 20, "method": "model", "source": "test"},
     "lifetime_years": LIFE, "idle_w": {"best": 5, "source": "test"}, "active_w": {"best": 15, "source": "test"},
     "endurance_tbw": {"best": 1000, "source": "test"}},
    {"key": "dram-x", "kind": "dram", "name": "test DRAM per GB", "capacity_gb": 1,
     "embodied_kgco2e": {"per": "unit", "best": 2, "method": "model", "source": "test"},
     "lifetime_years": LIFE, "active_w": {"best": 0.5, "source": "test"}},
]
FIXED = CarbonInputs(Triple.fixed(400, "test"), Triple.fixed(1.0, "test"), allocation="max", draws=64, seed=0)
T = 100.0  # s


def _db(tmp_path: Path, devices=DEVICES) -> DeviceDB:
    d = tmp_path / "db"
    d.mkdir(exist_ok=True)
    (d / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (d / "grid.yaml").write_text(yaml.safe_dump({
        "regions": [{"key": "world", "name": "test", "year": 2024, "gco2e_per_kwh": {"best": 400, "source": "test"}}],
        "pue": [{"key": "industry-average", "name": "test", "value": {"best": 1.0, "source": "test"}}]}))
    return DeviceDB.load(d)


def _trace(path: Path, *, gpu_busy=40.0, ssd_busy=10.0, ssd_written=1e9, dram_resident=4e9, ssd_resident=1e11,
           drop=(), scenario=None, dram_kv_read=None, prompt_tokens=10_000):
    """A 100 s trace: 1 GPU, 1 SSD, 16 GB of DRAM; ``drop`` removes (device, metric) channels."""
    devs = [DeviceEntry("gpu", "hbm", "gpu-x", count=1, capacity_bytes=80e9),
            DeviceEntry("ssd", "ssd", "ssd-x", count=1, capacity_bytes=1e12),
            DeviceEntry("dram", "dram", "dram-x", count=16, capacity_bytes=1e9)]
    specs = [("gpu", "busy_s", "model"), ("ssd", "busy_s", "model"), ("ssd", "bytes_written", "model"),
             ("ssd", "resident_bytes", "model"), ("dram", "resident_bytes", "model"),
             ("workload", "generated_tokens", "model"), ("workload", "prompt_tokens", "model")]
    if dram_kv_read is not None:
        specs.append(("dram", "app_bytes_read", "lmcache_tap"))
    specs = [s for s in specs if (s[0], s[1]) not in drop]
    ch = make_channels(specs)
    end = {("gpu", "busy_s"): gpu_busy, ("ssd", "busy_s"): ssd_busy, ("ssd", "bytes_written"): ssd_written,
           ("ssd", "resident_bytes"): ssd_resident, ("dram", "resident_bytes"): dram_resident,
           ("workload", "generated_tokens"): 1000.0, ("workload", "prompt_tokens"): float(prompt_tokens),
           ("dram", "app_bytes_read"): dram_kv_read or 0.0}
    with TraceWriter(path, TraceHeader(source="modeled", devices=devs, channels=ch, scenario=scenario), fsync=False) as w:
        w.marker(0.0, "phase_start", "prefill")
        w.marker(T / 2, "phase_end", "prefill")
        w.marker(T / 2, "phase_start", "decode")
        w.marker(T, "phase_end", "decode")
        for t in np.linspace(0.0, T, 11):
            for c in ch:
                v = end[(c.device, c.metric)]
                w.sample(float(t), c.id, v if not c.cumulative else v * t / T)
        w.close({"requests": 10, "generated_tokens": 1000, "prompt_tokens": prompt_tokens})
    return path


def _report(path, db, inputs=FIXED, scenario=None):
    a = attribute(aggregate(path), db, inputs, scenario=scenario)
    return build_report(a, scenario="t"), a


# ----------------------------------------------------------------------------- hand-checked numbers
def test_hand_checked_dedicated_scope(tmp_path):
    # GIVEN round device figures, 400 g/kWh, PUE 1, a 100 s run, dedicated scope (the default)
    db = _db(tmp_path)
    rep, _ = _report(_trace(tmp_path / "t.arrows"), db)
    dev = {d["id"]: d for d in rep["devices"]}
    g_per_j = 400 / 3.6e6
    # GPU: 50 W x 100 s + (250 - 50) W x 40 s busy; 100 kg x 100 s / 5 yr
    assert dev["gpu"]["operational_gco2e"]["p50"] == pytest.approx((50 * 100 + 200 * 40) * g_per_j, rel=1e-9)
    assert dev["gpu"]["embodied_gco2e"]["p50"] == pytest.approx(100e3 * 100 / (5 * YEAR_S), rel=1e-9)
    # SSD: 5 W x 100 s + 10 W x 10 s; wear 20 kg x 1 GB / 1000 TB beats the time share 20 kg x 100 s / 5 yr
    assert dev["ssd"]["operational_gco2e"]["p50"] == pytest.approx((5 * 100 + 10 * 10) * g_per_j, rel=1e-9)
    assert dev["ssd"]["embodied_gco2e"]["p50"] == pytest.approx(20e3 * 1e9 / 1e15, rel=1e-9)
    # DRAM, dedicated: all 16 GB for 100 s at 0.5 W/GB and 2 kg/GB
    assert dev["dram"]["operational_gco2e"]["p50"] == pytest.approx(0.5 * 16 * 100 * g_per_j, rel=1e-9)
    assert dev["dram"]["embodied_gco2e"]["p50"] == pytest.approx(2e3 * 16 * 100 / (5 * YEAR_S), rel=1e-9)
    assert dev["dram"]["idle_capacity_share"] == pytest.approx(1 - 4 / 16)
    # energy in J and kWh with its basis; the run's kWh and the storage share of the total
    assert dev["gpu"]["energy_j"]["p50"] == pytest.approx(13000.0)
    assert dev["gpu"]["energy_kwh"]["p50"] == pytest.approx(13000.0 / 3.6e6)
    assert dev["gpu"]["energy_basis"] == "modeled"
    e_all = 13000 + 600 + 800
    assert rep["headline"]["energy_kwh"]["p50"] == pytest.approx(e_all / 3.6e6)
    storage = sum(dev[k]["total_gco2e"]["p50"] for k in ("ssd", "dram"))
    assert rep["headline"]["storage_share"]["total"]["p50"] == pytest.approx(storage / rep["headline"]["total_g"]["p50"])
    assert rep["scope"] == "dedicated" and rep["missing"] == [] and rep["coverage"] == 1.0
    # wear: 1 GB in 100 s = 864 GB/day on a 1 TB drive rated 1000 TB over 5 years (0.548 DWPD)
    (w,) = rep["wear"]
    assert w["drive_writes_per_day"] == pytest.approx(0.864)
    assert w["rated_dwpd"] == pytest.approx(1000 / 1 / (5 * 365))
    assert w["over_rating"] is True
    assert w["implied_lifetime_years"] == pytest.approx(1e15 / (1e9 / 100) / YEAR_S)


def test_scope_shared_charges_occupancy_and_report_scope_reattributes(tmp_path, capsys):
    # GIVEN the same trace attributed with scope shared
    db = _db(tmp_path)
    p = _trace(tmp_path / "t.arrows")
    shared = CarbonInputs(FIXED.intensity_gco2e_per_kwh, FIXED.pue, draws=64, scope="shared")
    rep, _ = _report(p, db, shared)
    dev = {d["id"]: d for d in rep["devices"]}
    g_per_j = 400 / 3.6e6
    # THEN DRAM is charged for the 4 GB it held, the SSD idle power for 100 GB of 1 TB, GPUs stay whole
    assert dev["dram"]["operational_gco2e"]["p50"] == pytest.approx(0.5 * 4 * 100 * g_per_j, rel=1e-9)
    assert dev["dram"]["embodied_gco2e"]["p50"] == pytest.approx(2e3 * 4 * 100 / (5 * YEAR_S), rel=1e-9)
    assert dev["ssd"]["operational_gco2e"]["p50"] == pytest.approx((5 * 0.1 * 100 + 10 * 10) * g_per_j, rel=1e-9)
    assert dev["dram"]["idle_capacity_share"] == pytest.approx(0.0)
    assert dev["gpu"]["embodied_gco2e"]["p50"] == pytest.approx(100e3 * 100 / (5 * YEAR_S), rel=1e-9)
    assert rep["scope"] == "shared"
    # AND `report --scope` re-attributes the saved trace (in-process CLI)
    for scope, dram_gb in (("shared", 4), ("dedicated", 16)):
        assert main(["report", str(p), "--scope", scope, "--gco2e-per-kwh", "400", "--json", "--db", str(tmp_path / "db")]) == 0
        out = json.loads(capsys.readouterr().out)
        d = {x["id"]: x for x in out["devices"]}
        assert out["scope"] == scope
        assert d["dram"]["energy_j"]["p50"] == pytest.approx(0.5 * dram_gb * 100)


# ----------------------------------------------------------------------------- missing is missing
def _walk_bands(x, path=""):
    if isinstance(x, dict):
        if set(x) >= {"p5", "p50", "p95"}:
            yield path, x
            return
        for k, v in x.items():
            yield from _walk_bands(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _walk_bands(v, f"{path}[{i}]")


FIELDS = ["idle_w", "active_w", "embodied_kgco2e", "endurance_tbw"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drop_fields=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(FIELDS)), max_size=6),
       drop_channels=st.lists(st.sampled_from([("gpu", "busy_s"), ("ssd", "busy_s"), ("ssd", "resident_bytes"),
                                               ("dram", "resident_bytes"), ("ssd", "bytes_written")]), max_size=4),
       unknown=st.booleans(), scope=st.sampled_from(["dedicated", "shared"]),
       alloc=st.sampled_from(["time", "wear", "max"]))
def test_no_missing_input_becomes_zero(tmp_path_factory, drop_fields, drop_channels, unknown, scope, alloc):
    # GIVEN device records with figures removed, trace channels removed, maybe an unknown device
    tmp = tmp_path_factory.mktemp("m")
    devs = copy.deepcopy(DEVICES)
    for i, f in drop_fields:
        devs[i].pop(f, None)
    db = _db(tmp, devs)
    p = _trace(tmp / "t.arrows", drop=set(drop_channels))
    u = aggregate(p)
    if unknown:
        import dataclasses

        u.header.devices[0] = dataclasses.replace(u.header.devices[0], db_key="no-such-gpu")
    inp = CarbonInputs(FIXED.intensity_gco2e_per_kwh, FIXED.pue, allocation=alloc, draws=32, scope=scope)
    rep = build_report(attribute(u, db, inp), scenario="t")
    # THEN no band anywhere is a 0 standing in for a figure (every figure here is > 0 when known)
    for where, b in _walk_bands(rep):
        assert b["p95"] > 0, where
    # AND what is missing is null, listed, and named in the totals' excludes
    dev = {d["id"]: d for d in rep["devices"]}
    for m in rep["missing"]:
        d = dev[m["device"]]
        if m["field"] in ("device_db record", "embodied_kgco2e"):
            assert d["embodied_gco2e"] is None
        if m["field"] == "power":
            assert d["energy_j"] is None and d["energy_basis"] == "missing" and d["operational_gco2e"] is None
    assert rep["excludes"] == rep["totals"]["excludes"]
    if rep["excludes"]:
        assert rep["coverage"] is None or rep["coverage"] < 1.0
    else:
        assert rep["coverage"] == 1.0


def test_terminal_prints_missing_not_zero(tmp_path):
    from rich.console import Console

    from storagecarbon.report.terminal import render

    devs = copy.deepcopy(DEVICES)
    devs[1].pop("idle_w")
    devs[1].pop("active_w")
    rep, _ = _report(_trace(tmp_path / "t.arrows"), _db(tmp_path, devs))
    con = Console(record=True, width=200)
    render(rep, con)
    text = con.export_text()
    assert "missing" in text and "ssd operational" in rep["excludes"][0] + " ".join(rep["excludes"])
    assert rep["tiers"][[t["tier"] for t in rep["tiers"]].index("ssd")]["operational_gco2e"] is None


# ----------------------------------------------------------------------------- bands contain the best value
@given(lo=st.floats(0.01, 100), ratio=st.floats(1.0, 50), missing=st.sampled_from(["low", "high", None]),
       seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_band_contains_best_with_one_missing_bound(lo, ratio, missing, seed):
    from storagecarbon.devicedb import Figure

    best = lo * ratio ** 0.3
    hi = lo * ratio
    fig = Figure(low=None if missing == "low" else lo, best=best, high=None if missing == "high" else hi, source="test")
    t = Triple.of(fig)
    x = logtri_ppf(t, np.random.default_rng(seed).random(400))
    b = band(x, t.best)
    assert b["p5"] <= best * (1 + 1e-12) and b["p95"] >= best * (1 - 1e-12)
    if missing is not None:  # mirrored: the best value is the median of the distribution
        assert float(logtri_ppf(t, np.array([0.5]))[0]) == pytest.approx(best, rel=1e-9)


# ----------------------------------------------------------------------------- ledger
def _scenario_echo():
    from storagecarbon.scenario import parse_scenario

    text = """
name: ledger
hardware: {gpu: {device: gpu-x, count: 1}, dram: {device: dram-x, count: 16}, ssd: {device: ssd-x}}
model: {preset: llama-3-8b}
placement: {kv: {chunk_size: 256, local_cpu: {size_gb: 8}}}
workload: {requests: 10, prompt_tokens: {mean: 1000}, output_tokens: {mean: 100}}
carbon: {region: us}
"""
    return parse_scenario(text).model_dump(mode="json")


@pytest.mark.parametrize("hit_tokens", [0, 6000])
def test_ledger_sign_with_and_without_hits(tmp_path, hit_tokens):
    # GIVEN a run with a DRAM KV tier; KV bytes per token of llama-3-8b bf16 = 2 x 32 x 8 x 128 x 2
    kvb = 2 * 32 * 8 * 128 * 2
    scn = _scenario_echo()
    db = _db(tmp_path)
    p = _trace(tmp_path / "t.arrows", scenario=scn, dram_kv_read=hit_tokens * kvb, prompt_tokens=10_000)
    rep, _ = _report(p, db, scenario=scn)
    (row,) = [r for r in rep["ledger"] if r["tier"] == "dram"]
    assert row["kind"] == "kv" and row["hit_tokens"] == pytest.approx(hit_tokens)
    cost = sum(d["total_gco2e"]["p50"] for d in rep["devices"] if d["id"] == "dram")
    assert row["cost_g"]["p50"] == pytest.approx(cost)
    if hit_tokens == 0:
        # THEN without hits the tier saves nothing: net = cost > 0 and it never pays for itself
        assert row["saving_g"]["p50"] == 0 and row["net_g"]["p50"] > 0 and row["p_pays_for_itself"] == 0.0
    else:
        # THEN the saving is hit tokens x prefill energy per computed token (by hand), and here it beats the cost
        prefill_j = (50 * 50 + 200 * 20) + (5 * 50 + 10 * 5) + 0.5 * 16 * 50   # first 50 s of every device
        saving = hit_tokens * prefill_j / (10_000 - hit_tokens) * 400 / 3.6e6
        assert row["saving_g"]["p50"] == pytest.approx(saving, rel=1e-9)
        assert row["net_g"]["p50"] == pytest.approx(cost - saving, rel=1e-9)
        assert row["net_g"]["p50"] < 0 and row["p_pays_for_itself"] == 1.0


# ----------------------------------------------------------------------------- shipped data and scenarios
def test_device_db_ships_as_package_data(root):
    from storagecarbon import devicedb

    assert devicedb.DEFAULT_DB_DIR == Path(devicedb.__file__).parent / "device_db"
    import tomllib

    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert "device_db/*.yaml" in data["tool"]["setuptools"]["package-data"]["storagecarbon"]
    assert len(list(devicedb.DEFAULT_DB_DIR.glob("*.yaml"))) >= 5


def test_corrected_device_figures(db):
    assert db.get("ddr5-rdimm-64gb").embodied_kgco2e.triple == (64.5, 120, 230.5)
    assert db.get("a100-40gb").embodied_kgco2e.best == 127.6
    assert db.get("b200-180gb").embodied_kgco2e.best == pytest.approx(2274 / 8, abs=0.1)
    for key in ("v100-sxm2-32gb", "t4-16gb"):
        assert db.get(key).bf16_tflops is None and db.get(key).tensor_tflops is not None
    for d in db.of_kind("ssd") + db.of_kind("hdd"):
        if d.capacity_gb and d.capacity_gb > 1:  # every named drive has a power figure
            assert d.active_w is not None, d.key
    assert db.get("server-base-generic").idle_w is not None


def test_old_gpus_without_bf16_profile_and_overrides_are_reported(root, tmp_path):
    # GIVEN the llama70b_old_gpus scenario on 8 x V100 32GB (no bf16), with a device override
    from storagecarbon.pipeline import profile

    doc = yaml.safe_load((root / "scenarios/llama70b_old_gpus.yaml").read_text())
    doc["hardware"]["gpu"] = {"device": "v100-sxm2-32gb", "count": 8}
    doc["placement"]["weights"] = {"hbm": 1.0}
    doc["workload"]["requests"] = 32
    doc["device_overrides"] = {"samsung-pm9a3-7.68tb": {"source": "test: a measured drive",
                                                        "idle_w": {"best": 4.0}}}
    p = tmp_path / "v100.yaml"
    p.write_text(yaml.safe_dump(doc))
    res = profile(p, out_dir=tmp_path / "out", mode="modeled")
    rep = res.report
    # THEN it profiles (fp16 tensor FLOP/s serve the model) and the override is reported as such
    assert rep["headline"]["per_1k_tokens_g"]["p50"] > 0
    assert "samsung-pm9a3-7.68tb" in rep["device_overrides"]
    ssd = next(d for d in rep["devices"] if d["tier"] == "ssd")
    assert ssd["overridden"] == ["idle_w"]
