"""attribute(): conservation, bands, linearity, wear, missing-is-missing."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storagecarbon.carbon.sampling import SECONDS_PER_YEAR, Triple

from storagecarbon.carbon.attribute import CarbonInputs, attribute
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels
from storagecarbon.carbon.usage import aggregate

INPUTS = CarbonInputs(Triple(300, 400, 500, "test"), Triple(1.1, 1.2, 1.4, "test"), draws=500, seed=1)


def write_trace(path, *, n=40, dt=0.25, ssd_written=None, gpu_energy=None, phases=(("prefill", 0, 10), ("decode", 10, 40)),
                resident=1e9, extra_devices=()):
    devs = [DeviceEntry("gpu0", "hbm", "h100-sxm5-80gb", count=2), DeviceEntry("dram", "dram", "ddr5-rdimm-64gb", count=4),
            DeviceEntry("ssd0", "ssd", "samsung-pm9a3-7.68tb"), *extra_devices]
    ch = make_channels([("gpu0", "energy_j", "x"), ("gpu0", "busy_s", "x"), ("dram", "resident_bytes", "x"),
                        ("ssd0", "bytes_written", "x"), ("ssd0", "resident_bytes", "x"), ("ssd0", "busy_s", "x"),
                        ("workload", "generated_tokens", "x"), ("workload", "requests_done", "x")])
    rng = np.random.default_rng(0)
    ssd_written = ssd_written if ssd_written is not None else np.cumsum(rng.uniform(0, 1e8, n))
    gpu_energy = gpu_energy if gpu_energy is not None else np.cumsum(rng.uniform(50, 200, n))
    with TraceWriter(path, TraceHeader(source="replayed", devices=devs, channels=ch), fsync=False) as w:
        for name, a, b in phases:
            w.marker(a * dt, "phase_start", name)
            w.marker(b * dt, "phase_end", name)
        for i in range(n):
            t = i * dt
            for cid, v in ((0, gpu_energy[i]), (1, i * dt * 0.5), (2, resident), (3, ssd_written[i]), (4, resident),
                           (5, i * dt * 0.1), (6, i * 10.0), (7, i // 4)):
                w.sample(t, cid, v)
        w.close({"requests": n // 4, "generated_tokens": n * 10})
    return path


def test_conservation_tiers_devices_phases(tmp_path, db):
    u = aggregate(write_trace(tmp_path / "t.arrows"))
    a = attribute(u, db, INPUTS)
    total = a.total_g
    by_dev = (a.embodied_g + a.operational_g).sum(axis=1)  # [dev, draw]
    by_phase = (a.embodied_g + a.operational_g).sum(axis=0)
    by_tier = sum((a.embodied_g + a.operational_g)[a.tier_mask(t)].sum(axis=(0, 1)) for t in a.tiers())
    np.testing.assert_allclose(by_dev.sum(axis=0), total, rtol=1e-12)
    np.testing.assert_allclose(by_phase.sum(axis=0), total, rtol=1e-12)
    np.testing.assert_allclose(by_tier, total, rtol=1e-12)
    assert set(a.phases) >= {"prefill", "decode"}


def test_bands_ordered_and_nonzero_for_each_tier(tmp_path, db):
    from storagecarbon.report.build import build_report

    a = attribute(aggregate(write_trace(tmp_path / "t.arrows")), db, INPUTS)
    r = build_report(a, scenario="t")
    for tier in r["tiers"]:
        e = tier["embodied_gco2e"]
        assert 0 < e["p5"] <= e["p50"] <= e["p95"], tier["tier"]
    assert r["totals"]["total_gco2e"]["p5"] <= r["totals"]["total_gco2e"]["p95"]


def test_measured_energy_is_used_exactly(tmp_path, db):
    energy = np.linspace(0, 3600.0, 40)  # 3600 J = 1 Wh
    a = attribute(aggregate(write_trace(tmp_path / "t.arrows", gpu_energy=energy)), db,
                  CarbonInputs(Triple.fixed(500, "t"), Triple.fixed(1.0, "t"), draws=200))
    gpu = [i for i, d in enumerate(a.devices) if d.id == "gpu0"][0]
    # 1 Wh x 500 g/kWh = 0.5 g, identical in every draw
    np.testing.assert_allclose(a.operational_g[gpu].sum(axis=0), 0.5)
    assert a.devices[gpu].energy.startswith("measured")


def test_embodied_linear_in_time_share(tmp_path, db):
    fixed = CarbonInputs(Triple.fixed(400, "t"), Triple.fixed(1.0, "t"), allocation="time", draws=100)
    a1 = attribute(aggregate(write_trace(tmp_path / "a.arrows", n=40)), db, fixed)
    a2 = attribute(aggregate(write_trace(tmp_path / "b.arrows", n=40, dt=0.5,
                                         phases=(("prefill", 0, 10), ("decode", 10, 40)))), db, fixed)
    gpu = 0
    np.testing.assert_allclose(a2.embodied_best_g[gpu].sum(), 2 * a1.embodied_best_g[gpu].sum(), rtol=1e-9)
    # and equals TE x count x T / lifetime
    rec = db.get("h100-sxm5-80gb")
    T = a1.usage.duration_s
    expect = rec.embodied_kgco2e.best * 1000 * 2 * T / (rec.lifetime_years.central * SECONDS_PER_YEAR)
    np.testing.assert_allclose(a1.embodied_best_g[gpu].sum(), expect, rtol=1e-9)


def test_wear_share_wins_for_heavy_writes(tmp_path, db):
    rec = db.get("samsung-pm9a3-7.68tb")
    tbw = rec.endurance_tbw.central * 1e12
    heavy = np.linspace(0, tbw * 0.01, 40)  # 1 % of the drive's endurance in 10 s
    inp = CarbonInputs(Triple.fixed(400, "t"), Triple.fixed(1.0, "t"), allocation="max", draws=300)
    a = attribute(aggregate(write_trace(tmp_path / "w.arrows", ssd_written=heavy)), db, inp)
    ssd = [i for i, d in enumerate(a.devices) if d.id == "ssd0"][0]
    assert a.wear_share_won[ssd] == 1.0
    te = rec.embodied_total_triple()[1] * 1000
    np.testing.assert_allclose(a.embodied_best_g[ssd].sum(), 0.01 * te * heavy[-1] / heavy[-1], rtol=0.05)


def test_missing_device_record_is_missing_not_zero(tmp_path, db):
    p = write_trace(tmp_path / "m.arrows", extra_devices=[DeviceEntry("hdd0", "hdd", "no-such-drive")])
    a = attribute(aggregate(p), db, INPUTS)
    assert any("no-such-drive" in w and "missing" in w for w in a.warnings)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(3, 60), dt=st.floats(0.01, 5.0), split=st.floats(0.05, 0.95),
       writes=st.lists(st.floats(0, 1e9), min_size=60, max_size=60), seed=st.integers(0, 10**6),
       alloc=st.sampled_from(["time", "wear", "max"]))
def test_conservation_property(tmp_path_factory, db, n, dt, split, writes, seed, alloc):
    k = max(1, int(n * split))
    p = write_trace(tmp_path_factory.mktemp("h") / "h.arrows", n=n, dt=dt, ssd_written=np.cumsum(writes[:n]),
                    phases=(("prefill", 0, k), ("decode", k, n)))
    a = attribute(aggregate(p), db, CarbonInputs(INPUTS.intensity_gco2e_per_kwh, INPUTS.pue, allocation=alloc,
                                                 draws=100, seed=seed))
    cells = a.embodied_g + a.operational_g
    assert np.all(cells >= 0)
    np.testing.assert_allclose(cells.sum(axis=(0, 1)), a.total_g)
    np.testing.assert_allclose(cells.sum(axis=0).sum(axis=0), cells.sum(axis=1).sum(axis=0))
    # phases sum to the run at central values too
    np.testing.assert_allclose(a.embodied_best_g.sum(), a.embodied_best_g.sum(axis=0).sum())
    assert a.usage.phase_time_s.sum() == pytest.approx(a.usage.duration_s, rel=1e-9, abs=1e-9)


def test_wear_policy_still_charges_non_flash_by_time(tmp_path, db):
    inp = CarbonInputs(Triple.fixed(400, "t"), Triple.fixed(1.0, "t"), allocation="wear", draws=100)
    a = attribute(aggregate(write_trace(tmp_path / "w.arrows")), db, inp)
    gpu = [i for i, d in enumerate(a.devices) if d.id == "gpu0"][0]
    assert a.embodied_best_g[gpu].sum() > 0
