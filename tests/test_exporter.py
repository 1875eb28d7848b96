"""The live Prometheus exporter: series of a real recorded command, scraped over HTTP while it
runs, agree with the report of the same trace; missing data exports no series."""

from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from storagecarbon.cli import main
from storagecarbon.errors import StoragecarbonError
from storagecarbon.fleet.export import LiveExporter, LiveUsage, TraceFollower, parse_listen
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels
from storagecarbon.carbon.usage import QUANTITIES, aggregate

WORKLOAD = """
import os, time
with open("blob", "wb") as f:
    for i in range(12):
        f.write(os.urandom(1 << 20)); f.flush(); os.fsync(f.fileno()); time.sleep(0.1)
x = bytearray(64 << 20)
time.sleep(0.5)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def series(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def record_with_scrapes(tmp: Path, scenario: Path | None) -> tuple[Path, list[dict]]:
    """Record WORKLOAD with --prometheus and scrape the endpoint every 0.2 s from another thread."""
    (tmp / "w.py").write_text(WORKLOAD)
    port = free_port()
    scrapes: list[dict] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    scrapes.append(series(r.read().decode()))
            except OSError:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=scrape, daemon=True)
    th.start()
    trace = tmp / "rec" / "trace.arrows"
    args = ["record", "--out", str(trace), "--prometheus", f"127.0.0.1:{port}", "--prometheus-linger", "0.6",
            "--disk-path", str(tmp)]
    if scenario is not None:
        args += ["--scenario", str(scenario)]
    cwd = Path.cwd()
    try:
        import os

        os.chdir(tmp)
        rc = main(args + ["--", sys.executable, "w.py"])
    finally:
        os.chdir(cwd)
        done.set()
        th.join()
    assert rc == 0
    return trace, scrapes


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, root):
    tmp = tmp_path_factory.mktemp("exp")
    return record_with_scrapes(tmp, root / "scenarios/tiny_cpu_lmcache.yaml")


def test_series_exist_grow_and_agree_with_the_report(recorded, db, root):
    # GIVEN a real command recorded with --prometheus, scraped over HTTP while it ran
    trace, scrapes = recorded
    assert len(scrapes) >= 5
    # THEN the counters exist during the run, never decrease, and grow
    key = ("storagecarbon_co2e_grams_total", (("device", "host"), ("kind", "embodied"), ("tier", "host")))
    seen = [s[key] for s in scrapes if key in s]
    assert len(seen) >= 3 and seen[-1] > seen[0]
    for a, b in zip(scrapes, scrapes[1:]):
        for k, v in a.items():
            if k[0].endswith("_total") and k in b:
                assert b[k] >= v, k
    # AND the last scrape (the recorder's final sample) agrees with `report` of the trace
    from storagecarbon.pipeline import attribute_trace
    from storagecarbon.scenario import load_scenario

    res = attribute_trace(trace, db, load_scenario(root / "scenarios/tiny_cpu_lmcache.yaml", db).carbon, scenario="x")
    last = scrapes[-1]
    attr = res.attribution
    for i, d in enumerate(attr.devices):
        lab = (("device", d.id), ("tier", d.tier))
        e = last[("storagecarbon_co2e_grams_total", (lab[0], ("kind", "embodied"), lab[1]))]
        o = last[("storagecarbon_co2e_grams_total", (lab[0], ("kind", "operational"), lab[1]))]
        assert e == pytest.approx(attr.embodied_best_g[i].sum(), rel=1e-9)
        assert o == pytest.approx(attr.operational_best_g[i].sum(), rel=1e-9, abs=1e-15)
        j = [v for k, v in last.items() if k[0] == "storagecarbon_energy_joules_total" and ("device", d.id) in k[1]]
        assert j == [pytest.approx(attr.energy_best_j[i].sum(), rel=1e-9, abs=1e-12)]
    ssd = next(t for t in res.report["tiers"] if t["tier"] == "ssd")
    written = last[("storagecarbon_io_bytes_total", (("device", "ssd0"), ("direction", "write"), ("layer", "block"),
                                                     ("tier", "ssd")))]
    assert written == ssd["bytes_written"] and written >= 12 << 20


def test_trace_follower_serves_what_the_recorder_served(recorded, db, root):
    # GIVEN the finished trace, WHEN exported from the file (as `export --textfile` does)
    trace, scrapes = recorded
    from storagecarbon.scenario import load_scenario

    ex = LiveExporter(db, carbon=load_scenario(root / "scenarios/tiny_cpu_lmcache.yaml", db).carbon)
    TraceFollower(trace, ex).poll()
    from_file = series(ex.text())
    # THEN every series of the live endpoint's last scrape is there with the same value
    for k, v in scrapes[-1].items():
        if k[0].startswith("storagecarbon_") and "run_info" not in k[0]:
            assert from_file[k] == pytest.approx(v, rel=1e-9, abs=1e-15), k


def test_without_hardware_names_carbon_is_missing_not_zero(tmp_path, db):
    # GIVEN a recording without --scenario: host and DRAM have no device_db record
    trace, scrapes = record_with_scrapes(tmp_path, None)
    last = scrapes[-1]
    names = {k[0] for k in last}
    # THEN no energy or carbon series for them, and no storage share (it would be partial)
    for k in last:
        if k[0] in ("storagecarbon_co2e_grams_total", "storagecarbon_energy_joules_total"):
            assert dict(k[1])["device"] not in ("host", "dram"), k
    assert "storagecarbon_storage_share_ratio" not in names
    # AND the measured quantities are still there
    assert ("storagecarbon_cpu_seconds_total", (("device", "host"), ("tier", "host"))) in last


def _header(n_dev: int = 2) -> TraceHeader:
    devs = [DeviceEntry(f"ssd{i}", "ssd", None) for i in range(n_dev)]
    specs = [(d.id, m, "t") for d in devs for m in ("bytes_written", "resident_bytes")]
    return TraceHeader(source="replayed", devices=devs, channels=make_channels(specs), t0_unix=1.7e9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e9), st.booleans()), min_size=2, max_size=40),
       st.lists(st.integers(1, 10), min_size=1, max_size=8))
def test_live_usage_equals_the_trace_aggregate_for_any_split(tmp_path_factory, steps, cuts):
    # GIVEN a trace with counters (that may reset) and gauges
    h = _header(1)
    path = tmp_path_factory.mktemp("h") / "t.arrows"
    t = np.arange(len(steps), dtype=float) * 0.1
    ctr = np.cumsum([a for a, _, _ in steps])
    ctr = np.where([r for _, _, r in steps], ctr / 3, ctr)  # some samples drop: counter resets
    gauge = np.array([g for _, g, _ in steps])
    tend = float(t[-1])
    markers = [(tend * 0.3, "phase_start", "prefill"), (tend * 0.55, "phase_end", "prefill"),
               (tend * 0.55, "phase_start", "decode")]
    with TraceWriter(path, h, fsync=False) as w:
        w.samples(np.repeat(t, 2), np.tile([0, 1], len(t)), np.column_stack([ctr, gauge]).ravel())
        for m in markers:
            w.marker(*m)
    # WHEN the live accumulator gets the same samples in arbitrary chunks (markers as they come)
    live = LiveUsage(h)
    live.add_markers(markers[:1])
    live.add_markers(markers[1:])
    c = np.tile([0, 1], len(t))
    tt, vv = np.repeat(t, 2), np.column_stack([ctr, gauge]).ravel()
    i = 0
    for k in cuts * 20:
        if i >= len(c):
            break
        live.add(tt[i:i + k], c[i:i + k], vv[i:i + k])
        i += k
    live.add(tt[i:], c[i:], vv[i:])
    # THEN its totals are the aggregate's (one rule: usage.increments)
    u, lu = aggregate(path), live.usage()
    assert lu.phases == u.phases
    assert lu.phase_time_s == pytest.approx(u.phase_time_s, rel=1e-9, abs=1e-12)
    for q in QUANTITIES:
        assert lu.by_phase[q] == pytest.approx(u.by_phase[q], rel=1e-9, abs=1e-6)
    assert live.duration_s == pytest.approx(u.duration_s)


def test_follower_picks_up_a_growing_trace(tmp_path, db):
    h = _header(1)
    path = tmp_path / "g.arrows"
    w = TraceWriter(path, h, fsync=False)
    w.samples(np.array([0.0, 0.1]), np.array([0, 0]), np.array([0.0, 100.0]))
    w.flush()
    ex = LiveExporter(db)
    f = TraceFollower(path, ex)
    assert f.poll() is False
    key = ("storagecarbon_io_bytes_total", (("device", "ssd0"), ("direction", "write"), ("layer", "block"), ("tier", "ssd")))
    assert series(ex.text())[key] == 100.0
    w.samples(np.array([0.2]), np.array([0]), np.array([250.0]))
    w.flush()
    assert f.poll() is False
    assert series(ex.text())[key] == 250.0
    w.close()
    assert f.poll() is True
    # no resident_bytes sample was ever written: no gauge series; ssd0 has no db record: no carbon
    names = {k[0] for k in series(ex.text())}
    assert "storagecarbon_resident_bytes" not in names and "storagecarbon_co2e_grams_total" not in names


def test_bad_listen_addresses_and_export_options(tmp_path, capsys):
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "host:", "h:99999", "h:x"):
        with pytest.raises(StoragecarbonError):
            parse_listen(bad)
    assert main(["export", str(tmp_path / "nope.arrows"), "--textfile", str(tmp_path / "m.prom")]) != 0
    assert main(["export", str(tmp_path / "nope.arrows")]) != 0
    assert "exactly one of" in capsys.readouterr().err


def test_grafana_dashboard_uses_only_exported_names(root):
    import json
    import re

    dash = json.loads((root / "docs/grafana/storagecarbon.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"storagecarbon_[a-z0-9_]+", e)}
    known = {f"storagecarbon_{k}" + ("_total" if kind == "counter" else "") for k, (kind, _) in LiveExporter._HELP.items()}
    assert names and names <= known | {"storagecarbon_run_info"}, names - known


def test_export_command_serves_a_finished_trace_then_stops(recorded, root):
    # GIVEN a finished trace, WHEN `export --listen` serves it (with a short linger after its end)
    trace, scrapes = recorded
    port = free_port()
    got: list[dict] = []

    def scrape() -> None:
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    got.append(series(r.read().decode()))
                    return
            except OSError:
                time.sleep(0.1)

    th = threading.Thread(target=scrape)
    th.start()
    rc = main(["export", str(trace), "--listen", f"127.0.0.1:{port}", "--linger", "2",
               "--scenario", str(root / "scenarios/tiny_cpu_lmcache.yaml")])
    th.join()
    # THEN it answered with the recording's final counters and returned once the linger was over
    assert rc == 0 and got
    key = ("storagecarbon_co2e_grams_total", (("device", "host"), ("kind", "embodied"), ("tier", "host")))
    assert got[0][key] == pytest.approx(scrapes[-1][key], rel=1e-9)
