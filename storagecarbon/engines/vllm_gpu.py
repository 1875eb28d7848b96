"""vLLM on NVIDIA GPUs: the measured path for ``engine: vllm`` on a GPU host.

The scenario's placement maps onto vLLM and LMCache settings (:func:`engine_settings`):

* ``placement.gpu_memory_utilization`` -> ``gpu_memory_utilization``;
* ``placement.kv.hbm_gb`` -> ``num_gpu_blocks_override`` (HBM KV blocks of ``engine.block_size``
  tokens; the HBM prefix cache is that small);
* ``placement.kv.backend: native`` with ``local_cpu.size_gb`` -> vLLM's own CPU KV offload
  (``kv_offloading_size``, ``kv_offloading_backend="native"``: the ``OffloadingConnector``);
* ``placement.kv.backend: lmcache`` (default) with ``local_cpu`` / ``local_disk`` -> LMCache's
  ``LMCacheConnectorV1`` with ``chunk_size``, ``max_local_cpu_size``, ``local_disk`` and
  ``max_local_disk_size``;
* ``placement.weights.dram`` (a fraction of the weight bytes) -> ``cpu_offload_gb`` per GPU
  (vLLM's UVA weight offload: host-pinned weights read over PCIe at every forward step);
* ``hardware.gpu.count`` -> ``tensor_parallel_size``; ``engine.max_num_seqs``,
  ``max_num_batched_tokens``, ``block_size``, ``max_model_len`` as given.

Weights are dummy (``load_format="dummy"``) on a ``config.json`` built from the model shape
(nothing is downloaded; ``model.truncated_layers`` keeps the shape and drops layers). One engine
instance runs one or more *workloads*; each workload is recorded into its own trace by the
project's :class:`~storagecarbon.record.recorder.Recorder` (NVML energy/power/memory/PCIe per GPU,
``/proc/diskstats``, process-tree IO and memory, LMCache tier taps, and vLLM's own counters
published live by the worker: :class:`VllmCounterFileSensor`). The engine start-up is its own
trace (``<label>`` = ``load``), so start-up never lands in a workload's per-token figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import EngineError
from ..record.launch import kill_group, start_group
from ..record.sensors.base import Probe, SensorBase

REPO_ROOT = Path(__file__).resolve().parents[2]
GIB = float(1 << 30)
VLLM_GPU_VERSIONS = {"vllm": "0.26.0", "lmcache": "0.5.3"}   # the pack in ../shared/gpu-vllm (see docs/engines.md)


def gpu_engine_available() -> tuple[bool, str]:
    """Can real vLLM run on a GPU here? ``(ok, reason)``; never raises, imports nothing heavy
    unless a GPU is visible."""
    from ..record.sensors.nvml import NvmlSensor   # the one module that imports pynvml

    nv = NvmlSensor(pcie=False)
    probe = nv.probe()
    n = len(nv.devices()) if probe.available else 0
    nv.close()
    if not probe.available or n == 0:
        return False, f"no NVIDIA GPU visible ({probe.reason})"
    from importlib import util

    if util.find_spec("vllm") is None:
        return False, (f"{n} NVIDIA GPU(s) but vllm is not importable (on the lent H200: the pack in "
                       f"../shared/gpu-vllm, PYTHONPATH=/tmp/site)")
    try:
        from importlib import metadata
        v = metadata.version("vllm")
    except Exception:  # noqa: BLE001
        v = "unknown version"
    if "cpu" in v:
        return False, f"vllm {v} is the CPU build; the GPU path needs a CUDA build of vLLM"
    return True, f"{n} NVIDIA GPU(s), vllm {v}"


# ------------------------------------------------------------------------------------ mapping
def model_config(dims: Any) -> dict[str, Any]:
    """A Llama ``config.json`` for the shape (what vLLM needs to build dummy weights)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": dims.vocab_size,
            "hidden_size": dims.hidden_size, "intermediate_size": dims.intermediate_size,
            "num_hidden_layers": dims.layers, "num_attention_heads": dims.num_heads,
            "num_key_value_heads": dims.num_kv_heads, "head_dim": dims.head_dim,
            "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
            "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 2}


def write_model_dir(dims: Any, root: Path, *, tokenizer: bool = False) -> Path:
    """A model folder for vLLM's dummy weights: ``config.json``, and with ``tokenizer`` a word-level
    tokenizer over the whole vocabulary (``vllm serve`` detokenizes; the offline engine skips it)."""
    d = Path(root) / f"{dims.name}-{dims.layers}l"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model_config(dims), indent=1))
    if tokenizer:
        write_wordlevel_tokenizer(d, int(dims.vocab_size))
    return d


def write_wordlevel_tokenizer(d: Path, vocab_size: int) -> None:
    """``tokenizer.json`` (HF tokenizers, WordLevel: token ``t<i>`` is id ``i``) and its config: every id the
    model can emit decodes, and no hub download is needed. Ids 0-2 are unk/bos/eos as in :func:`model_config`."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    specials = {0: "<unk>", 1: "<s>", 2: "</s>"}
    for i, tok in specials.items():
        del vocab[f"t{i}"]
        vocab[tok] = i
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True} for i, t in specials.items()],
          "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
          "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>", "model_max_length": 131072, "clean_up_tokenization_spaces": False}))


def hbm_kv_blocks(hbm_gb: float, block_size: int, kv_bytes_per_token: float) -> int:
    """vLLM KV blocks in ``hbm_gb`` GB (10^9 B) of HBM over all the engine's GPUs."""
    return int(hbm_gb * 1e9 // (block_size * kv_bytes_per_token))


def kv_bytes_per_token(dims: Any, dtype_bytes: int = 2) -> int:
    return 2 * dims.layers * dims.num_kv_heads * dims.head_dim * dtype_bytes


def engine_settings(scn: Any, work: Path) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """``(engine_kwargs for vllm.LLM, lmcache config or None, notes)`` for a scenario."""
    dims = scn.model.dims()
    eng, pl = scn.engine, scn.placement
    n_gpu = scn.hardware.gpu.count if scn.hardware.gpu else 1
    kw: dict[str, Any] = {"load_format": "dummy", "skip_tokenizer_init": True,
                          "gpu_memory_utilization": pl.gpu_memory_utilization,
                          "max_num_seqs": eng.max_num_seqs, "max_num_batched_tokens": eng.max_num_batched_tokens,
                          "block_size": eng.block_size, "tensor_parallel_size": n_gpu,
                          "max_model_len": eng.max_model_len or 16384, "enforce_eager": False,
                          # CUDA graphs for the batch sizes the workload can reach (fewer captures, faster start)
                          "compilation_config": {"cudagraph_capture_sizes":
                                                 [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
                                                  if b <= max(1, eng.max_num_seqs)]}}
    notes = [f"vLLM: dummy weights on a {dims.name} shape ({dims.layers} layers), CUDA graphs on, "
             f"tensor_parallel_size={n_gpu}"]
    kvb = kv_bytes_per_token(dims, 2 if scn.model.kv_dtype in ("bf16", "fp16") else 1)
    if pl.kv.hbm_gb:
        # hbm_gb is the KV cache of the whole engine in GB (as the model reads it); one vLLM block holds
        # block_size tokens of every layer across the tensor-parallel GPUs
        kw["num_gpu_blocks_override"] = max(16, int(hbm_kv_blocks(pl.kv.hbm_gb, eng.block_size, kvb)))
        notes.append(f"HBM KV cache: {kw['num_gpu_blocks_override']} blocks of {eng.block_size} tokens "
                     f"({pl.kv.hbm_gb:g} GB)")
    w = pl.weights
    if w.ssd or w.hdd:
        raise EngineError("vLLM has no disk weight offload: placement.weights.ssd/hdd need engine transformers "
                          "(accelerate) or the model (engine: none)")
    if w.dram > 0:
        weight_bytes = float(scn.model.weight_bytes())
        kw["cpu_offload_gb"] = round(w.dram * weight_bytes / n_gpu / GIB, 3)
        notes.append(f"weights: {w.dram:.0%} in host DRAM (cpu_offload_gb={kw['cpu_offload_gb']:g} per GPU, UVA)")
    lmc = None
    kv = pl.kv
    backend = kv.backend
    cpu_on = kv.local_cpu is not None and kv.local_cpu.enabled
    disk_on = kv.local_disk is not None and kv.local_disk.enabled
    if backend == "native":
        if disk_on:
            raise EngineError("placement.kv.backend native offloads to CPU memory only; drop local_disk or use lmcache")
        if cpu_on:
            kw["kv_offloading_size"] = float(kv.local_cpu.size_gb)
            kw["kv_offloading_backend"] = "native"
            notes.append(f"KV offload: vLLM native OffloadingConnector, {kv.local_cpu.size_gb:g} GiB of host DRAM")
    elif cpu_on or disk_on:
        disk = None
        if disk_on:
            p = Path(kv.local_disk.path or "lmcache-disk")
            disk = str(p if p.is_absolute() else (work / p))
        lmc = {"chunk_size": kv.chunk_size, "local_cpu": cpu_on,
               "max_local_cpu_size_gb": kv.local_cpu.size_gb if cpu_on else 0.0,
               "local_disk_path": disk, "max_local_disk_size_gb": kv.local_disk.size_gb if disk_on else 0.0}
        notes.append(f"KV offload: LMCache (chunk {kv.chunk_size}) cpu {lmc['max_local_cpu_size_gb']:g} GB, "
                     f"disk {lmc['max_local_disk_size_gb']:g} GB at {disk}")
    return kw, lmc, notes


# engine_settings' LLM() keywords that `vllm serve` takes as flags of the same name (--kv-offloading-size ...)
_SERVE_FLAGS = ("load_format", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "block_size",
                "tensor_parallel_size", "max_model_len", "num_gpu_blocks_override", "kv_offloading_size",
                "kv_offloading_backend", "cpu_offload_gb")


def v1_runner_reason(engine_kwargs: dict[str, Any], uses_lmcache: bool) -> str | None:
    """Why this placement must run on vLLM 0.26's V1 GPU model runner (``VLLM_USE_V2_MODEL_RUNNER=0``), or None.

    The default V2 runner (``vllm/v1/worker/gpu/model_runner.py``) breaks two offload paths, both measured on the
    H200 (``benchmarks/gpu/results/2026-12-01-lmcache-loads/``):

    * it accepts ``cpu_offload_gb`` and never calls the weight offloader: the weights stay in HBM;
    * with CUDA graphs it starts KV-connector loads outside a forward context with attention metadata (its
      ``ActiveKVConnector.pre_forward`` sets ``set_forward_context(None, ...)``), and LMCache's ``start_load_kv``
      returns at once when ``attn_metadata`` is None: vLLM counts the external prefix hits, LMCache loads nothing
      (``LMCacheEngine.retrieve`` is never called) and the prefix's KV is left unwritten in HBM.
    """
    if engine_kwargs.get("cpu_offload_gb"):
        return "cpu_offload_gb: the V2 runner ignores it"
    if uses_lmcache and not engine_kwargs.get("enforce_eager"):
        return "LMCache with CUDA graphs: the V2 runner skips LMCache's loads"
    return None


def serve_argv(scn: Any, work: Path, *, port: int, python: str = "python3") -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` of the ``vllm serve`` that runs the scenario's placement: the same mapping as the offline
    engine (:func:`engine_settings`), as command-line flags. The model folder (``config.json`` and a word-level
    tokenizer, dummy weights) is written under ``work``. LMCache's config file is ``record``'s to write
    (``LMCACHE_CONFIG_FILE`` from the scenario); here only the connector is switched on."""
    kw, lmc, _notes = engine_settings(scn, work)
    model = write_model_dir(scn.model.dims(), work / "model", tokenizer=True)
    argv = [python, "-m", "vllm.entrypoints.cli.main", "serve", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--dtype", "bfloat16", "--seed", "0", "--enable-prefix-caching"]
    for k in _SERVE_FLAGS:
        if kw.get(k) is not None:
            argv += ["--" + k.replace("_", "-"), str(kw[k])]
    argv += ["--compilation-config", json.dumps(kw["compilation_config"])]
    if lmc is not None:
        argv += ["--kv-transfer-config", json.dumps({"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"})]
    env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
    if v1_runner_reason(kw, lmc is not None):
        env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    return argv, env


def workload_from_scenario(scn: Any, label: str = "run") -> dict[str, Any]:
    wl = scn.workload
    prompt = int(round(wl.prompt_tokens.mean))
    prefix = wl.shared_prefix.tokens if wl.shared_prefix.fraction else 0
    if wl.prompt_tokens.dist != "fixed" or wl.output_tokens.dist != "fixed":
        raise EngineError("engine vllm (GPU) runs fixed prompt/output lengths; set dist: fixed")
    if wl.shared_prefix.fraction not in (0.0, 1.0):
        raise EngineError("engine vllm (GPU): shared_prefix.fraction must be 0 or 1")
    return {"label": label, "max_tokens": int(round(wl.output_tokens.mean)), "passes": wl.passes,
            "generator": {"num_requests": wl.num_requests(), "shared_prefix_tokens": prefix,
                          "suffix_tokens": max(0, prompt - prefix), "seed": wl.seed}}


# ------------------------------------------------------------------------------------ sensor
class VllmCounterFileSensor(SensorBase):
    """vLLM's own counters, published by the worker (``vllm:*`` from ``LLM.get_metrics()`` every
    0.25 s into a JSON file): native KV-offload bytes become the DRAM tier's application bytes,
    token counts the workload's. Absent until the worker writes (absent is not zero)."""

    name = "vllm_counters"

    def __init__(self, path: str | Path, *, dram_device: str | None):
        self.path = Path(path)
        self.dram = dram_device

    def probe(self) -> Probe:
        return Probe(True, f"vLLM counters published by the worker ({self.path.name})")

    def channels(self) -> list[tuple[str, str, str]]:
        ch = [("workload", m, self.name) for m in ("prompt_tokens", "generated_tokens")]
        if self.dram:
            ch += [(self.dram, "app_bytes_written", self.name), (self.dram, "app_bytes_read", self.name)]
        return ch

    def devices(self) -> list[Any]:
        return []

    def read(self) -> list[tuple[str, str, float]]:
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        rows = [("workload", m, float(d[m])) for m in ("prompt_tokens", "generated_tokens") if d.get(m) is not None]
        if self.dram and d.get("kv_offload_store_bytes") is not None:
            rows += [(self.dram, "app_bytes_written", float(d["kv_offload_store_bytes"])),
                     (self.dram, "app_bytes_read", float(d.get("kv_offload_load_bytes") or 0.0))]
        return rows

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


def counters_from_metrics(m: dict[str, Any]) -> dict[str, float | None]:
    """The counters the sensor reads, from a ``_metrics_dict`` snapshot (label sets summed)."""
    def tot(*names: str, label: str | None = None) -> float | None:
        vals = [v for k, v in m.items() if isinstance(v, (int, float)) and k.split("{")[0] in names
                and (label is None or label in k)]
        return float(sum(vals)) if vals else None

    store = tot("vllm:kv_offload_store_bytes")
    load = tot("vllm:kv_offload_load_bytes")
    if store is None:  # older names: kv_offload_total_bytes{transfer_type=GPU_to_CPU|CPU_to_GPU}
        store = tot("vllm:kv_offload_total_bytes", label="GPU_to_CPU")
        load = tot("vllm:kv_offload_total_bytes", label="CPU_to_GPU")
    return {"prompt_tokens": tot("vllm:prompt_tokens"), "generated_tokens": tot("vllm:generation_tokens"),
            "kv_offload_store_bytes": store, "kv_offload_load_bytes": load,
            "prefix_cache_hits": tot("vllm:prefix_cache_hits"), "prefix_cache_queries": tot("vllm:prefix_cache_queries"),
            "external_prefix_cache_hits": tot("vllm:external_prefix_cache_hits"),
            "external_prefix_cache_queries": tot("vllm:external_prefix_cache_queries")}


# ------------------------------------------------------------------------------------ summary
def _stats_ms(xs: list[Any]) -> dict[str, float] | None:
    import numpy as np

    a = np.asarray([x for x in xs if x is not None], dtype=float) * 1e3
    if a.size == 0:
        return None
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99))}


def workload_summary(res: dict[str, Any], t0_unix: float, kvb: int, scn_dims: Any,
                     n_gpu: int) -> tuple[dict[str, Any], list[tuple[float, str, str]]]:
    """Trace summary and prefill/decode markers of one workload's result."""
    markers: list[tuple[float, str, str]] = []
    ttft, tpot = [], []
    passes = []
    for ps in res["passes"]:
        reqs = ps["requests"]
        firsts = [r["ttft_s"] for r in reqs if r.get("ttft_s") is not None]
        ttft += [r.get("ttft_s") for r in reqs]
        tpot += [r.get("tpot_s") for r in reqs]
        start, end = ps["start_unix"] - t0_unix, ps["end_unix"] - t0_unix
        split = min(max(start + (max(firsts) if firsts else 0.0), start), end)
        if split > start:
            markers += [(start, "phase_start", "prefill"), (split, "phase_end", "prefill")]
        markers += [(split, "phase_start", "decode"), (end, "phase_end", "decode")]
        md = ps.get("vllm_metrics_delta") or {}
        c = counters_from_metrics(md)
        td = ps.get("taps_delta") or {}
        passes.append({
            "label": ps["label"], "page_cache": ps.get("page_cache"),
            "duration_s": ps["end_unix"] - ps["start_unix"],
            "prompt_tokens": ps["prompt_tokens"], "generated_tokens": ps["generated_tokens"],
            "ttft_ms": _stats_ms([r.get("ttft_s") for r in reqs]), "tpot_ms": _stats_ms([r.get("tpot_s") for r in reqs]),
            "prefill_s": split - start, "decode_s": end - split,
            "num_cached_tokens": sum(int(r.get("num_cached_tokens") or 0) for r in reqs),
            "vllm": c,
            "kv_bytes": {"hbm_prefix_hit_bytes": (c["prefix_cache_hits"] or 0) * kvb if c["prefix_cache_hits"] is not None else None,
                         "native_cpu_stored_bytes": c["kv_offload_store_bytes"],
                         "native_cpu_loaded_bytes": c["kv_offload_load_bytes"],
                         "lmcache_cpu_stored_bytes": td.get("cpu_bytes_written"),
                         "lmcache_cpu_loaded_bytes": td.get("cpu_bytes_read"),
                         "lmcache_disk_stored_bytes": td.get("disk_bytes_written"),
                         "lmcache_disk_loaded_bytes": td.get("disk_bytes_read"),
                         "external_hit_bytes": (c["external_prefix_cache_hits"] or 0) * kvb
                         if c["external_prefix_cache_hits"] is not None else None},
            "lmcache_taps": td})
    w, g = res["workload"], res["generator"]
    req = sum(len(ps["requests"]) for ps in res["passes"])
    summary = {
        "requests": req,
        "prompt_tokens": sum(ps["prompt_tokens"] for ps in res["passes"]),
        "generated_tokens": sum(ps["generated_tokens"] for ps in res["passes"]),
        "latency": {"ttft_ms": _stats_ms(ttft), "tpot_ms": _stats_ms(tpot)},
        "engine": {"kind": "vllm-gpu", "versions": res.get("versions"), "engine_kwargs": res.get("engine_kwargs"),
                   "lmcache": res.get("lmcache"), "cache": res.get("engine"), "load_s": res.get("load_s")},
        "vllm": {"batch_size": g["num_requests"], "prompt_len": g["shared_prefix_tokens"] + g["suffix_tokens"],
                 "shared_prefix_tokens": g["shared_prefix_tokens"], "new_tokens": w.get("max_tokens"),
                 "passes": passes, "kv_bytes_per_token": kvb, "layers": scn_dims.layers, "shape": scn_dims.name,
                 "n_gpu": n_gpu},
        "phase_note": "prefill = pass start .. last first token; decode = the rest of the pass (offline batch)",
    }
    return summary, markers


# ------------------------------------------------------------------------------------ runner
def _tail(path: Path, pos: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return [], pos
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], pos
    out = []
    for line in data[:cut + 1].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out, pos + cut + 1


def run_instance(scn: Any, workloads: list[dict[str, Any]], out_dir: str | Path, *, db: Any = None,
                 progress: Callable[[str], None] = lambda s: None, hz: float | None = None,
                 timeout_s: float | None = None, scenario_for: Callable[[dict[str, Any]], Any] | None = None,
                 record_load: bool = True, gpu_indices: list[int] | None = None) -> dict[str, Any]:
    """Start one vLLM engine for ``scn`` and run ``workloads`` on it, each under its own recorder.

    Writes ``out_dir/<label>.arrows`` per workload (and ``load.arrows`` for the start-up) and
    returns ``{"traces": {label: path}, "result": worker result, "log": path}``.
    ``scenario_for(workload)``: the scenario echoed into that workload's trace header (default:
    ``scn``), so that each trace says what ran.
    """
    import psutil

    from ..record.recorder import QUIET_ENV, Recorder, default_sensors
    from ..record.sensors.nvml import FULL_RATE, NvmlSensor
    from ..record.sensors.procio import ProcTree
    from ..record.tiermap import map_tiers

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    hs = {"control": str(work / "control.jsonl"), "markers_dir": str(work / "markers"), "go_dir": str(work / "go")}
    Path(hs["markers_dir"]).mkdir()
    Path(hs["go_dir"]).mkdir()
    Path(hs["control"]).touch()
    kw, lmc, notes = engine_settings(scn, work)
    if lmc and lmc.get("local_disk_path"):
        shutil.rmtree(lmc["local_disk_path"], ignore_errors=True)
        Path(lmc["local_disk_path"]).mkdir(parents=True, exist_ok=True)
    dims = scn.model.dims()
    n_gpu = scn.hardware.gpu.count if scn.hardware.gpu else 1
    kvb = kv_bytes_per_token(dims)
    model_dir = write_model_dir(dims, work / "model")
    counters = work / "vllm_counters.json"
    spec = {"model_dir": str(model_dir), "engine_kwargs": kw, "lmcache": lmc, "workloads": workloads,
            "handshake": hs, "seed": scn.workload.seed, "workdir": str(work), "counters_file": str(counters),
            "multiprocessing": True}
    (work / "spec.json").write_text(json.dumps(spec, indent=1))
    result_path = work / "result.json"
    tap_dir = work / "taps"
    tap_dir.mkdir()
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "VLLM_USE_FLASHINFER_SAMPLER": "0", "PYTHONHASHSEED": "0", "STORAGECARBON_TAP_DIR": str(tap_dir),
                "NCCL_NVLS_ENABLE": "0", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    hz = max(float(hz or scn.engine.sample_hz), 10.0)
    timeout_s = float(timeout_s or scn.engine.timeout_s)

    if gpu_indices is None and os.environ.get("CUDA_VISIBLE_DEVICES", "").replace(",", "").isdigit():
        gpu_indices = [int(x) for x in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
    if gpu_indices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_indices)
    nv = NvmlSensor(indices=gpu_indices)
    probed = {"nvml": nv.probe()}
    gpus = nv.devices() if probed["nvml"].available else []
    nv.close()
    tiers = scn.hardware.tiers()
    paths: dict[str, str | Path] = {}
    disk_tier = next((t for t in ("ssd", "hdd") if t in tiers), None)
    if disk_tier and not tiers[disk_tier].path:
        paths[disk_tier] = (lmc or {}).get("local_disk_path") or work
    tm = map_tiers(scn, db=db, gpus=gpus, disk_paths=paths, base_dir=str(work),
                   memory_bytes=float(psutil.virtual_memory().total))
    log_path = out_dir / "engine.log"
    log = open(log_path, "ab")
    proc = start_group([sys.executable, "-m", "storagecarbon.engines.vllm_worker", "--spec",
                        str(work / "spec.json"), "--result", str(result_path)],
                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work), stdin=subprocess.DEVNULL)
    traces: dict[str, str] = {}
    t_deadline = time.time() + timeout_s
    pos = 0
    header_notes = notes + [f"engine: vLLM {VLLM_GPU_VERSIONS['vllm']}-series on GPU; one engine instance, "
                            f"{len(workloads)} workload(s), each its own trace"]

    def make_recorder(path: Path, scn_echo: Any, markers_file: Path | None) -> Any:
        tree = ProcTree()
        tree.attach(proc.pid, session=proc.pid)
        # a fresh NVML sensor per recorder: a recorder closes its sensors (nvmlShutdown) when it stops
        # every NVML metric on every tick: a pass lasts seconds and its prefill/decode split is sub-second
        nv_k = NvmlSensor(indices=gpu_indices, every_s=FULL_RATE)
        probed_k = {"nvml": nv_k.probe()}
        sensors = default_sensors(tree, tm, tap_dir=tap_dir, scenario=scn_echo, lmcache=lmc is not None,
                                  nvml=nv_k, base_dir=work)
        sensors.append(VllmCounterFileSensor(counters, dram_device="dram" if tm.has("dram") and lmc is None else None))
        header = {"devices": tm.devices, "notes": header_notes + list(tm.notes),
                  "scenario": scn_echo.model_dump(mode="json"), "host": {"tier_map": tm.header_dict()["tier_map"]}}
        return Recorder(path, header, sensors, hz=hz, markers_file=markers_file, probed=probed_k)

    rec = None
    current: str | None = None
    failure: str | None = None
    try:
        if record_load:
            rec = make_recorder(out_dir / "load.arrows", scn, Path(hs["control"]))
            rec.start()
            rec.marker("command_start", str(proc.pid))
            current = "load"
        while True:
            if proc.poll() is not None:
                break
            if time.time() > t_deadline:
                failure = f"timed out after {timeout_s:g} s"
                break
            events, pos = _tail(Path(hs["control"]), pos)
            for ev in events:
                if ev.get("event") == "workload_ready":
                    label = ev["label"]
                    if rec is not None:
                        rec.stop({"engine": {"kind": "vllm-gpu", "phase": current}})
                        if current == "load":
                            traces["load"] = str(out_dir / "load.arrows")
                    w = next(x for x in workloads if x["label"] == label)
                    scn_echo = scenario_for(w) if scenario_for else scn
                    mf = Path(hs["markers_dir"]) / f"{label}.jsonl"
                    mf.touch()
                    rec = make_recorder(out_dir / f"{label}.arrows", scn_echo, mf)
                    rec.start()
                    current = label
                    (Path(hs["go_dir"]) / label).touch()
                    progress(f"workload {label}: running")
                elif ev.get("event") == "workload_done":
                    label = ev["label"]
                    assert rec is not None
                    rec.sample_now()
                    res = json.loads((work / f"result-{label}.json").read_text())
                    trace = out_dir / f"{label}.arrows"
                    summary, mk = workload_summary(res, rec.t0_unix, kvb, dims, n_gpu)
                    rec.stop(summary, finish=lambda end, mk=mk: {"markers": mk})   # prefill/decode in each pass
                    rec = None
                    traces[label] = str(trace)
                    current = None
                    progress(f"workload {label}: done")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=max(1.0, min(60.0, t_deadline - time.time())))
            except subprocess.TimeoutExpired:
                failure = failure or "worker did not exit"
        if proc.poll() is None:
            kill_group(proc)
        if rec is not None:
            rec.stop({"error": failure or f"worker exited with {proc.returncode} during {current}"})
        log.close()
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    if result is None or failure:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise EngineError(f"vLLM GPU worker failed ({failure or f'exit {proc.returncode}'}); log {log_path}: "
                          + " | ".join(tail))
    return {"traces": traces, "result": result, "log": str(log_path)}


def profile_vllm_gpu(scn: Any, db: Any, scenario_path: Path, work: Path, *,
                     progress: Callable[[str], None] = lambda s: None) -> Path:
    """``profile --mode measured`` for ``engine: vllm`` on a GPU host: one workload, one trace."""
    ok, why = gpu_engine_available()
    if not ok:
        raise EngineError(f"vLLM GPU path not available: {why}")
    work = Path(work).resolve()
    progress("starting vLLM on the GPU (engine start-up takes 1-2 minutes)")
    out = run_instance(scn, [workload_from_scenario(scn)], work / "vllm", db=db, progress=progress)
    trace = work / "trace.arrows"
    shutil.copyfile(out["traces"]["run"], trace)
    return trace
