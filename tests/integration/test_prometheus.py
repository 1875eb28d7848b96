"""A real Prometheus server scrapes `record --prometheus` during a real vLLM-CPU + LMCache run.

Prometheus (Debian's ``prometheus`` package, installed by scripts/setup.sh) runs on loopback with a
generated config (1 s scrape interval) and its own TSDB in a temporary folder. The run is the
tiny CPU scenario with fewer requests. Checked through Prometheus' HTTP API: the series exist,
increase during the run, and their last values agree with the report of the recorded trace.

Without vLLM/LMCache or the prometheus binary the test FAILS with the reason (set
``STORAGECARBON_ALLOW_NO_ENGINE=1`` to skip instead).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from storagecarbon.cli import main
from storagecarbon.engines.vllm_cpu import engine_available

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

SCENARIO = "scenarios/tiny_cpu_lmcache.yaml"


def _need(ok: bool, why: str) -> None:
    if ok:
        return
    if os.environ.get("STORAGECARBON_ALLOW_NO_ENGINE") == "1":
        pytest.skip(why)
    pytest.fail(why + " (set STORAGECARBON_ALLOW_NO_ENGINE=1 to skip instead)", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params: str) -> list[dict]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    exe = shutil.which("prometheus")
    _need(exe is not None, "the prometheus binary is not installed (scripts/setup.sh installs Debian's package)")
    d = tmp_path_factory.mktemp("prom")
    target_port, web_port = free_port(), free_port()
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: storagecarbon\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
    log = open(d / "prometheus.log", "wb")
    proc = subprocess.Popen([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web_port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (d / "prometheus.log").read_text()[-2000:]
            assert time.time() < deadline, "prometheus did not become ready in 60 s"
            time.sleep(0.3)
        yield {"base": base, "target_port": target_port}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def served_run(prometheus, root, db, tmp_path_factory):
    ok, why = engine_available()
    _need(ok, f"vLLM-CPU + LMCache are required for this test: {why}")
    from storagecarbon.engines.vllm_profile import build_spec
    from storagecarbon.scenario import load_scenario

    work = tmp_path_factory.mktemp("run")
    scn = load_scenario(root / SCENARIO, db)
    spec = build_spec(scn, work, (root / SCENARIO).parent)
    spec["generator"]["num_requests"] = 8  # short: the point is the scrape path, not the workload
    (work / "engine").mkdir()
    (work / "engine" / "spec.json").write_text(json.dumps(spec))
    trace = work / "trace.arrows"
    argv = ["record", "--scenario", str(root / SCENARIO), "--out", str(trace),
            "--prometheus", f"127.0.0.1:{prometheus['target_port']}", "--prometheus-linger", "5", "--",
            sys.executable, "-m", "storagecarbon.engines.vllm_run", "--spec", str(work / "engine" / "spec.json"),
            "--result", str(work / "engine" / "result.json"), "--workdir", str(work / "engine"), "--timeout", "400"]
    cwd = Path.cwd()
    os.chdir(work)  # the scenario's LMCache disk path is relative to the recorded command's folder
    try:
        t0 = time.time()
        rc = main(argv)
        t1 = time.time()
    finally:
        os.chdir(cwd)
    assert rc == 0, (work / "engine" / "engine.log").read_text(errors="replace")[-3000:]
    return {"trace": trace, "t0": t0, "t1": t1, "scenario": scn, **prometheus}


def _by_labels(result: list[dict], *keys: str) -> dict[tuple, float]:
    return {tuple(r["metric"].get(k, "") for k in keys): float(r["value"][1]) for r in result}


def test_series_exist_increase_and_agree_with_the_report(served_run, db):
    base, t0, t1 = served_run["base"], served_run["t0"], served_run["t1"]
    # GIVEN Prometheus scraped the exporter every second during the run
    # THEN the carbon, energy and byte series exist for every device, through the HTTP API
    at = str(t1 + 2)
    co2 = _by_labels(api(base, "/api/v1/query", query="last_over_time(storagecarbon_co2e_grams_total[10m])", time=at),
                     "device", "tier", "kind")
    assert {(d, k) for d, _, k in co2} == {(d, k) for d in ("host", "dram", "ssd0") for k in ("embodied", "operational")}
    energy = _by_labels(api(base, "/api/v1/query", query="last_over_time(storagecarbon_energy_joules_total[10m])",
                            time=at), "device", "method")
    io = _by_labels(api(base, "/api/v1/query", query="last_over_time(storagecarbon_io_bytes_total[10m])", time=at),
                    "device", "direction", "layer")
    # AND they increased while the engine ran: many scrapes, non-decreasing, and growing
    rng = api(base, "/api/v1/query_range", query="sum(storagecarbon_co2e_grams_total)",
              start=str(t0), end=str(t1), step="1")
    values = [float(v) for _, v in rng[0]["values"]]
    assert len(values) >= 20
    assert all(b >= a for a, b in zip(values, values[1:])) and values[-1] > values[0] > 0
    wr = api(base, "/api/v1/query_range",
             query='storagecarbon_io_bytes_total{device="ssd0",layer="app",direction="write"}',
             start=str(t0), end=str(t1), step="1")
    w_vals = [float(v) for _, v in wr[0]["values"]]
    assert w_vals[0] < w_vals[-1]  # LMCache's disk tier was written during the run, not only at its end
    # AND the last values are the report's (central values, same carbon kernel), once Prometheus
    # has scraped the recorder's final sample (it serves it for 5 s after the command ends)
    from storagecarbon.pipeline import attribute_trace

    res = attribute_trace(served_run["trace"], db, served_run["scenario"].carbon, scenario="prom")
    attr = res.attribution
    scrapes = api(base, "/api/v1/query", query="count_over_time(up[10m])", time=at)
    ups = api(base, "/api/v1/query_range", query="up", start=str(t1 - 6), end=str(t1), step="1")
    seconds = api(base, "/api/v1/query", query="last_over_time(storagecarbon_recorded_seconds_total[10m])", time=at)
    assert float(seconds[0]["value"][1]) == pytest.approx(attr.usage.duration_s, rel=1e-9), (scrapes, ups)
    for i, d in enumerate(attr.devices):
        assert co2[(d.id, d.tier, "embodied")] == pytest.approx(attr.embodied_best_g[i].sum(), rel=1e-9)
        assert co2[(d.id, d.tier, "operational")] == pytest.approx(attr.operational_best_g[i].sum(), rel=1e-9)
        (j,) = [v for (dev, _m), v in energy.items() if dev == d.id]
        assert j == pytest.approx(attr.energy_best_j[i].sum(), rel=1e-9)
    ssd = next(t for t in res.report["tiers"] if t["tier"] == "ssd")
    assert io[("ssd0", "write", "app")] == ssd["app_bytes_written"] > 0
    share = api(base, "/api/v1/query", query="last_over_time(storagecarbon_storage_share_ratio[10m])", time=at)
    assert 0 < float(share[0]["value"][1]) < 1


def test_every_grafana_panel_query_answers(served_run, root):
    # GIVEN the shipped Grafana dashboard, WHEN each panel's PromQL runs on the Prometheus that
    # scraped the run (Grafana's variables filled in as Grafana would)
    dash = json.loads((root / "docs/grafana/storagecarbon.json").read_text())
    at = str(served_run["t1"] - 1)
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", "10s").replace('instance=~"$instance"', 'instance=~".+"')
            # THEN it is valid and returns data
            assert api(served_run["base"], "/api/v1/query", query=expr, time=at), (p["title"], expr)
