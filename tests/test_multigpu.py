"""N GPUs end to end without hardware: a replayed 4-GPU trace through usage, attribute() and the
report (each GPU a whole unit, each GPU's own measured energy), and the model on 1..8 GPUs."""

import numpy as np
import pytest

from storagecarbon.carbon.sampling import SECONDS_PER_YEAR, Triple

from storagecarbon.carbon.attribute import CarbonInputs, attribute
from storagecarbon.report.build import build_report
from storagecarbon.record.sensors.replay import write_replay
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels
from storagecarbon.carbon.usage import aggregate

N = 4


@pytest.fixture()
def four_gpu_trace(tmp_path):
    devs = [DeviceEntry(f"gpu{i}", "hbm", "h100-sxm5-80gb", name="NVIDIA H100 80GB HBM3") for i in range(N)]
    ch = make_channels([(f"gpu{i}", "energy_j", "nvml") for i in range(N)] +
                       [("workload", "generated_tokens", "x"), ("workload", "requests_done", "x")])
    src = tmp_path / "src.arrows"
    with TraceWriter(src, TraceHeader(source="measured", devices=devs, channels=ch), fsync=False) as w:
        w.marker(0.0, "phase_start", "prefill")
        w.marker(1.0, "phase_end", "prefill")
        w.marker(1.0, "phase_start", "decode")
        for k in range(101):
            t = k * 0.1
            for i in range(N):
                w.sample(t, i, (i + 1) * 100.0 * t)  # GPU i draws (i+1) x 100 W
            w.sample(t, N, 50.0 * t)
            w.sample(t, N + 1, float(k // 10))
        w.marker(10.0, "phase_end", "decode")
    out = tmp_path / "replayed.arrows"
    write_replay(src, out)
    return out


def test_replayed_four_gpus_are_each_accounted(four_gpu_trace, db):
    u = aggregate(four_gpu_trace)
    a = attribute(u, db, CarbonInputs(Triple.fixed(400, "t"), Triple.fixed(1.0, "t"), draws=200))
    r = build_report(a, scenario="4gpu")
    assert r["mode"] == "replayed"
    hbm = next(t for t in r["tiers"] if t["tier"] == "hbm")
    assert len(hbm["devices"]) == N
    gpus = [d for d in r["devices"] if d["tier"] == "hbm"]
    rec = db.get("h100-sxm5-80gb")
    T = u.duration_s
    for i, d in enumerate(sorted(gpus, key=lambda d: d["id"])):
        # whole unit for the run, at central values
        idx = [b.id for b in a.devices].index(d["id"])
        expect = rec.embodied_kgco2e.best * 1000 * T / (rec.lifetime_years.central * SECONDS_PER_YEAR)
        assert a.embodied_best_g[idx].sum() == pytest.approx(expect, rel=1e-9)
        # its own measured energy: (i+1) x 100 W x 10 s
        assert a.energy_best_j[idx].sum() == pytest.approx((i + 1) * 100.0 * 10.0, rel=1e-9)
        assert d["energy_basis"].startswith("measured")
    total_j = sum((i + 1) * 1000.0 for i in range(N))
    assert r["totals"]["operational_gco2e"]["p50"] == pytest.approx(total_j / 3.6e6 * 400, rel=1e-9)


def _tpot(db, root, tmp_path, n_gpu):
    from storagecarbon.model.simulate import run_model
    from storagecarbon.scenario import parse_scenario

    text = (root / "scenarios/llama70b_hbm_only.yaml").read_text().replace("count: 4}", f"count: {n_gpu}}}", 1)
    text = text.replace("requests: 512", "requests: 64").replace("device: h100-sxm5-80gb", "device: h200-sxm-141gb")
    scn = parse_scenario(text, "n.yaml", db)
    res = run_model(scn, db, tmp_path / f"n{n_gpu}.arrows")
    assert aggregate(res.path).header.devices[0].count == n_gpu
    return float(np.median(res.tpot_s))


def test_model_scales_over_gpus(db, root, tmp_path):
    from storagecarbon.errors import ValidationError

    with pytest.raises(ValidationError, match="no room for KV"):  # 141 GB of weights on one 141 GB GPU
        _tpot(db, root, tmp_path, 1)
    t2, t4, t8 = (_tpot(db, root, tmp_path, n) for n in (2, 4, 8))
    assert t8 < t4 < t2  # decode is memory-bound: more GPUs, more HBM bandwidth
