"""HF transformers engine: real ``generate()`` runs of Llama-shaped models with random weights.

``engine: {kind: transformers, transformers: {offload, gpu_weight_fraction, batch_size, offload_dir}}``
runs the scenario's model shape (``model.preset`` or dimensions, ``model.truncated_layers``) with
weights drawn on the spot (seeded normal, std 0.02; nothing is downloaded) under the offloading
that users of this stack actually use:

* ``none``: every weight in HBM;
* ``cpu``: accelerate CPU offload: the last decoder layers (``1 - gpu_weight_fraction`` of the
  weight bytes) live in host memory and are copied to the GPU at every forward step
  (:func:`accelerate.dispatch_model` with ``"cpu"`` in the device map; pageable memory, as
  accelerate does it);
* ``disk``: accelerate disk offload: those layers are written to ``offload_dir`` (``.dat`` files on
  the machine's disk) and read back at every forward step. The run is **cold**: the page cache of
  the offload files is dropped before every forward step (``posix_fadvise(DONTNEED)``), as on a
  host whose free memory cannot hold the offloaded weights (with a warm page cache a disk offload
  is a DRAM offload in disguise). ``disk_page_cache="keep"`` measures the warm case instead;
* ``kv-cpu``: transformers' offloaded KV cache (``cache_implementation="offloaded"``): each
  layer's KV goes to host memory after its update and is prefetched back before its attention.

A run is ``rounds = ceil(workload.requests / batch_size)`` batches of ``batch_size`` prompts of
``workload.prompt_tokens.mean`` random token ids, each generating exactly
``workload.output_tokens.mean`` tokens (greedy, no EOS), after one warm-up batch of the same shape
(two tokens only for disk offload). The project's
:class:`~storagecarbon.record.recorder.Recorder` samples NVML (energy, power, utilisation, HBM use,
PCIe), ``/proc/diskstats``, the process's IO and resident memory, and the token counters of this
loop, all through :func:`storagecarbon.record.recorder.default_sensors`. Markers: ``phase_start/phase_end``
of ``load``, ``warmup``, ``prefill`` (the call to ``generate`` up to its first token, taken from a
streamer) and ``decode`` (first token to the last), ``request_start/request_end`` for every prompt
of a batch. The footer summary has ``requests``, ``prompt_tokens``, ``generated_tokens`` and
``latency: {ttft_ms, tpot_ms}`` with the performance model's keys, plus a ``transformers`` block
(offloaded bytes, layers, per-round times) that ``storagecarbon calibrate`` reads.

``torch``, ``transformers`` and ``accelerate`` are imported inside functions: importing this
module is cheap and works without them.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EngineError
from ..record.launch import kill_group, start_group

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
OFFLOAD_MODES = ("none", "cpu", "disk", "kv-cpu")
INIT_STD = 0.02
DEVICE_ENV = "STORAGECARBON_TRANSFORMERS_DEVICE"


def transformers_available() -> tuple[bool, str]:
    """Can the transformers engine run here? ``(ok, reason)``; never raises."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken install
        return False, f"torch cannot be imported ({type(exc).__name__}: {exc})"
    try:
        import transformers
    except Exception as exc:  # noqa: BLE001
        return False, f"transformers cannot be imported ({type(exc).__name__}: {exc})"
    try:
        import accelerate
        acc = f", accelerate {accelerate.__version__}"
    except Exception:  # noqa: BLE001
        acc = ", accelerate missing (offload cpu/disk unavailable)"
    vers = f"torch {torch.__version__}, transformers {transformers.__version__}{acc}"
    if not torch.cuda.is_available():
        return False, f"{vers}; no CUDA GPU (torch.cuda.is_available() is False)"
    return True, f"{vers}; {torch.cuda.device_count()} CUDA GPU(s): {torch.cuda.get_device_name(0)}"


# ------------------------------------------------------------------------------------ shapes
@dataclass(frozen=True)
class LlamaShape:
    """Dimensions of a Llama-architecture decoder (what ``LlamaConfig`` needs)."""

    layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    name: str = "llama"

    @classmethod
    def from_scenario(cls, scn: Any) -> "LlamaShape":
        d = scn.model.dims()  # truncated_layers already applied
        return cls(layers=d.layers, hidden_size=d.hidden_size, num_heads=d.num_heads, num_kv_heads=d.num_kv_heads,
                   head_dim=d.head_dim, intermediate_size=d.intermediate_size, vocab_size=d.vocab_size, name=d.name)

    def layer_params(self) -> int:
        h = self.hidden_size
        attn = h * self.num_heads * self.head_dim * 2 + h * self.num_kv_heads * self.head_dim * 2
        return attn + 3 * h * self.intermediate_size + 2 * h

    def params(self) -> int:
        return self.layers * self.layer_params() + 2 * self.vocab_size * self.hidden_size + self.hidden_size

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.num_kv_heads * self.head_dim * dtype_bytes


def offloaded_layer_count(shape: LlamaShape, gpu_weight_fraction: float) -> int:
    """Decoder layers to offload so that about ``1 - gpu_weight_fraction`` of the weight bytes
    leave HBM (at least one when the fraction is below 1; the embeddings, final norm and LM head
    stay on the GPU)."""
    if gpu_weight_fraction >= 1.0:
        return 0
    want = (1.0 - gpu_weight_fraction) * shape.params() / shape.layer_params()
    return int(min(shape.layers, max(1, round(want))))


def device_map_for(shape: LlamaShape, n_offload: int, target: str, gpu: int | str = 0) -> dict[str, Any]:
    """accelerate device map: the last ``n_offload`` decoder layers on ``target`` ("cpu"/"disk")."""
    dm: dict[str, Any] = {"model.embed_tokens": gpu, "model.rotary_emb": gpu}
    first_off = shape.layers - n_offload
    for i in range(shape.layers):
        dm[f"model.layers.{i}"] = target if i >= first_off else gpu
    dm["model.norm"] = gpu
    dm["lm_head"] = gpu
    return dm


# ------------------------------------------------------------------------------------- build
@dataclass
class BuiltModel:
    model: Any
    shape: LlamaShape
    device: str
    offload: str
    offloaded_layers: int = 0
    weight_bytes: int = 0
    offloaded_bytes: int = 0
    offload_target: str | None = None       # "dram" or "ssd" (tier of the offloaded weights)
    offload_dir: Path | None = None
    offload_files: list[Path] = field(default_factory=list)
    build_s: float = 0.0
    offload_write_s: float = 0.0
    device_map: dict[str, Any] | None = None
    devices: list[str] = field(default_factory=list)
    _fds: list[int] = field(default_factory=list)

    def drop_page_cache(self) -> None:
        """Evict the offload files from the page cache (disk offload, cold reads)."""
        if not self._fds:
            for p in self.offload_files:
                try:
                    self._fds.append(os.open(p, os.O_RDONLY))
                except OSError:
                    pass
        for fd in self._fds:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except (OSError, AttributeError):
                pass

    def close(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)
            self.offload_dir = None


def llama_config(shape: LlamaShape, *, max_positions: int = 8192) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                       intermediate_size=shape.intermediate_size, num_hidden_layers=shape.layers,
                       num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
                       head_dim=shape.head_dim, max_position_embeddings=max_positions, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=INIT_STD,
                       bos_token_id=None, eos_token_id=None, pad_token_id=None, use_cache=True)


def device_map_multi(shape: LlamaShape, n_offload: int, target: str, devices: list[Any]) -> dict[str, Any]:
    """accelerate device map over several GPUs: the resident decoder layers in contiguous blocks
    (the embeddings with the first block, the final norm and LM head with the last), the last
    ``n_offload`` layers on ``target``."""
    n_res = shape.layers - n_offload
    k = len(devices)
    dm: dict[str, Any] = {"model.embed_tokens": devices[0], "model.rotary_emb": devices[0]}
    for i in range(shape.layers):
        dm[f"model.layers.{i}"] = target if i >= n_res else devices[min(k - 1, i * k // max(n_res, 1))]
    dm["model.norm"] = devices[-1]
    dm["lm_head"] = devices[-1]
    return dm


def _torch_device(d: Any) -> str:
    return f"cuda:{d}" if isinstance(d, int) else str(d)


def _build_multi(shape: LlamaShape, cfg: Any, tdtype: Any, devices: list[str], offload: str,
                 gpu_weight_fraction: float, offload_dir: str | Path | None, disk_page_cache: str) -> BuiltModel:
    """Several GPUs: the model is created on the meta device, each block materialised where the
    device map puts it (no GPU ever holds the whole model), drawn at random there, then
    dispatched (accelerate moves activations between GPUs and streams offloaded layers)."""
    import torch
    from accelerate import dispatch_model
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    ids: list[Any] = [int(d.split(":")[1]) if d.startswith("cuda:") else d for d in devices]
    n_off = offloaded_layer_count(shape, gpu_weight_fraction) if offload in ("cpu", "disk") else 0
    if offload in ("cpu", "disk") and n_off == 0:
        raise EngineError(f"offload {offload!r} needs gpu_weight_fraction < 1 (got {gpu_weight_fraction:g})")
    dm = device_map_multi(shape, n_off, "cpu" if offload == "cpu" else "disk", ids)
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, dtype=tdtype, attn_implementation="sdpa")
    for name, dev in dm.items():
        mod = model.get_submodule(name)
        mod.to_empty(device="cpu" if dev in ("cpu", "disk") else _torch_device(dev))
        with torch.no_grad():
            for pname, prm in mod.named_parameters():
                if prm.dim() >= 2:
                    prm.normal_(0.0, INIT_STD)
                else:  # RMSNorm weights
                    prm.fill_(1.0)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg).to(_torch_device(ids[0]))  # buffers, not parameters
    model.eval()
    model.requires_grad_(False)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    built = BuiltModel(model=model, shape=shape, device=_torch_device(ids[0]), offload=offload, weight_bytes=int(wbytes))
    kw: dict[str, Any] = {}
    if offload == "disk":
        base = Path(offload_dir) if offload_dir is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        built.offload_dir = Path(tempfile.mkdtemp(prefix="storagecarbon-offload-", dir=base))
        kw["offload_dir"] = str(built.offload_dir)
    first_off = shape.layers - n_off
    built.offloaded_bytes = int(sum(p.numel() * p.element_size() for i in range(first_off, shape.layers)
                                    for p in model.model.layers[i].parameters()))
    dispatch_model(model, device_map=dm, main_device=ids[0], force_hooks=len(set(map(str, ids))) > 1, **kw)
    if offload == "disk":
        _finish_disk(built, disk_page_cache)
    built.offloaded_layers = n_off
    built.offload_target = {"cpu": "dram", "disk": "ssd"}.get(offload)
    built.device_map = dm
    built.devices = [str(d) for d in devices]
    return built


def _finish_disk(built: BuiltModel, disk_page_cache: str) -> None:
    assert built.offload_dir is not None
    built.offload_files = sorted(built.offload_dir.glob("*.dat"))
    for p in built.offload_files:  # dirty pages cannot be dropped: write them out first
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if disk_page_cache == "drop":
        built.drop_page_cache()
        built.model.register_forward_pre_hook(lambda _m, _a: built.drop_page_cache())


def build_llama(shape: LlamaShape, *, dtype: str = "bf16", device: str = "cuda", offload: str = "none",
                gpu_weight_fraction: float = 1.0, offload_dir: str | Path | None = None, seed: int = 0,
                max_positions: int = 8192, disk_page_cache: str = "drop",
                devices: list[str] | None = None) -> BuiltModel:
    """A Llama-architecture model with random weights drawn on ``device`` (fast on a GPU), then
    dispatched by accelerate for ``offload`` ``cpu``/``disk`` (see the module docstring).

    ``devices``: more than one (``["cuda:0", "cuda:1"]``) splits the resident layers over them
    (:func:`device_map_multi`); the weights are then drawn block by block where they live."""
    import torch
    from transformers import LlamaForCausalLM

    if offload not in OFFLOAD_MODES:
        raise EngineError(f"transformers offload {offload!r} is not one of {', '.join(OFFLOAD_MODES)}")
    if dtype not in TORCH_DTYPES:
        raise EngineError(f"transformers engine: weight dtype {dtype!r} not supported (bf16, fp16, fp32)")
    tdtype = getattr(torch, TORCH_DTYPES[dtype])
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cfg = llama_config(shape, max_positions=max_positions)
    if devices is not None and len(devices) > 1:
        built = _build_multi(shape, cfg, tdtype, list(devices), offload, gpu_weight_fraction, offload_dir,
                             disk_page_cache)
        for g in model_generation_defaults():
            setattr(built.model.generation_config, g[0], g[1])
        if any(d.startswith("cuda") for d in devices):
            torch.cuda.synchronize()
        built.build_s = time.perf_counter() - t0
        return built
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=tdtype, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    for g in model_generation_defaults():
        setattr(model.generation_config, g[0], g[1])
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    built = BuiltModel(model=model, shape=shape, device=device, offload=offload, weight_bytes=int(wbytes))
    if offload in ("cpu", "disk"):
        n_off = offloaded_layer_count(shape, gpu_weight_fraction)
        if n_off == 0:
            raise EngineError(f"offload {offload!r} needs gpu_weight_fraction < 1 (got {gpu_weight_fraction:g})")
        _dispatch(built, n_off, offload, offload_dir, disk_page_cache)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    built.build_s = time.perf_counter() - t0
    return built


def model_generation_defaults() -> list[tuple[str, Any]]:
    """Random weights have no EOS: generation always runs the full length."""
    return [("eos_token_id", None), ("pad_token_id", 0), ("bos_token_id", None)]


def _dispatch(built: BuiltModel, n_off: int, offload: str, offload_dir: str | Path | None,
              disk_page_cache: str) -> None:
    import torch
    from accelerate import dispatch_model

    model, shape = built.model, built.shape
    layers = model.model.layers
    first_off = shape.layers - n_off
    off_bytes = 0
    for i in range(first_off, shape.layers):
        layers[i].to("cpu")
        off_bytes += sum(p.numel() * p.element_size() for p in layers[i].parameters())
    if built.device.startswith("cuda"):
        torch.cuda.empty_cache()
    gpu: int | str = int(built.device.split(":")[1]) if ":" in built.device else (0 if built.device == "cuda" else built.device)
    dm = device_map_for(shape, n_off, "cpu" if offload == "cpu" else "disk", gpu)
    kw: dict[str, Any] = {}
    if offload == "disk":
        base = Path(offload_dir) if offload_dir is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        # a fresh folder: accelerate reuses an existing index.json, which would be stale
        built.offload_dir = Path(tempfile.mkdtemp(prefix="storagecarbon-offload-", dir=base))
        kw["offload_dir"] = str(built.offload_dir)
    t_w = time.perf_counter()
    dispatch_model(model, device_map=dm, main_device=gpu if gpu != "cpu" else "cpu", **kw)
    if offload == "disk":
        _finish_disk(built, disk_page_cache)
        built.offload_write_s = time.perf_counter() - t_w
    built.offloaded_layers = n_off
    built.offloaded_bytes = int(off_bytes)
    built.offload_target = "dram" if offload == "cpu" else "ssd"
    built.device_map = dm


# -------------------------------------------------------------------------------- generation
class _TokenClock:
    """A ``generate`` streamer that only stamps times: put #0 is the prompt, #k the k-th token."""

    def __init__(self, on_first: Callable[[float], None] | None = None):
        self.times: list[float] = []
        self.on_first = on_first

    def put(self, value: Any) -> None:  # generate hands over CPU tensors: the step is done
        t = time.time()
        self.times.append(t)
        if len(self.times) == 2 and self.on_first is not None:
            self.on_first(t)

    def end(self) -> None:
        pass


@dataclass
class BatchTiming:
    t_start: float      # unix time generate() was called
    t_first: float      # first generated token (all prompts of the batch)
    t_last: float       # last token handed to the streamer
    new_tokens: int
    t_end: float = 0.0  # generate() returned (device synchronised)

    @property
    def ttft_s(self) -> float:
        return self.t_first - self.t_start

    @property
    def tpot_s(self) -> float:
        return (self.t_last - self.t_first) / max(self.new_tokens - 1, 1)


def random_prompts(batch: int, prompt_len: int, vocab: int, seed: int, device: str) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, prompt_len), generator=g)
    return ids.to(device)


def run_batch(built: BuiltModel, input_ids: Any, new_tokens: int, *, kv_offload: bool = False,
              on_start: Callable[[float], None] | None = None, on_first: Callable[[float], None] | None = None) -> BatchTiming:
    """One ``generate`` of exactly ``new_tokens`` tokens (greedy, no EOS); times from a streamer."""
    import torch

    clock = _TokenClock(on_first)
    kw: dict[str, Any] = {}
    if kv_offload:
        kw["cache_implementation"] = "offloaded"
    mask = torch.ones_like(input_ids)
    sync = built.device.startswith("cuda")
    if sync:
        torch.cuda.synchronize()
    t0 = time.time()
    if on_start is not None:
        on_start(t0)
    with torch.inference_mode():
        built.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, num_beams=1, streamer=clock,
                             pad_token_id=0, eos_token_id=None, **kw)
    if sync:
        torch.cuda.synchronize()
    t_end = time.time()
    if len(clock.times) < 2:
        raise EngineError("generate produced no token")
    return BatchTiming(t0, clock.times[1], clock.times[-1], new_tokens, t_end)


# ------------------------------------------------------------------------- workload counters
class CounterFileSensor:
    """The worker's token and request counters (``workload`` device, cumulative), read from the
    small JSON file the worker replaces atomically after every batch. No file yet: no row
    (absent, not zero); the worker writes zeros before its first batch."""

    name = "workload"
    FIELDS = ("prompt_tokens", "generated_tokens", "requests_done")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def probe(self) -> Any:
        from ..record.sensors.base import Probe

        return Probe(True, f"token and request counters of the transformers worker ({self.path.name})")

    def channels(self) -> list[tuple[str, str, str]]:
        return [("workload", m, self.name) for m in self.FIELDS]

    def devices(self) -> list[Any]:
        return []

    def read(self) -> list[tuple[str, str, float]]:
        import json

        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [("workload", m, float(d[m])) for m in self.FIELDS if m in d]

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


def _write_json_atomic(path: Path, obj: Any) -> None:
    import json

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def latency_stats(x_ms: list[float] | np.ndarray) -> dict[str, float] | None:
    x = np.asarray(x_ms, dtype=float)
    if len(x) == 0:
        return None
    return {"mean": float(np.mean(x)), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99))}


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "transformers", "accelerate"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


# ------------------------------------------------------------------------------------ worker
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The measured workload (runs in its own process; see :func:`profile_transformers`).

    ``spec``: shape, dtype, device, offload, gpu_weight_fraction, offload_dir, disk_page_cache,
    batch, prompt_len, new_tokens, rounds, seed, markers (marker file), counters (counter file).
    Markers carry their own unix times; the result has unix times too.
    """
    from ..record.recorder import emit_marker

    mk = spec.get("markers")

    def marker(event: str, label: str = "", t: float | None = None) -> None:
        if mk:
            emit_marker(event, label, path=mk, t_unix=t)

    counters = {"prompt_tokens": 0, "generated_tokens": 0, "requests_done": 0}
    cpath = Path(spec["counters"]) if spec.get("counters") else None

    def publish() -> None:
        if cpath is not None:
            _write_json_atomic(cpath, counters)

    publish()
    shape = LlamaShape(**spec["shape"])
    device = spec["device"]
    batch, prompt_len, new_tokens, rounds = spec["batch"], spec["prompt_len"], spec["new_tokens"], spec["rounds"]
    seed = spec["seed"]
    offload = spec["offload"]
    devices = None
    if device == "cuda" and int(spec.get("gpus") or 1) > 1:
        import torch

        n = min(int(spec["gpus"]), torch.cuda.device_count())
        devices = [f"cuda:{i}" for i in range(n)] if n > 1 else None
    print(f"building {shape.name} ({shape.layers} layers) with random weights, offload {offload}"
          + (f", over {len(devices)} GPUs" if devices else ""), flush=True)
    marker("phase_start", "load")
    built = build_llama(shape, dtype=spec["dtype"], device=device, offload=offload, devices=devices,
                        gpu_weight_fraction=spec["gpu_weight_fraction"], offload_dir=spec.get("offload_dir"),
                        seed=seed, max_positions=max(8192, prompt_len + new_tokens + 8),
                        disk_page_cache=spec.get("disk_page_cache", "drop"))
    marker("phase_end", "load")
    timings: list[BatchTiming] = []
    try:
        kv_off = offload == "kv-cpu"
        # warm-up: one whole batch of the measured shape, so that kernels, cuBLAS heuristics and the
        # caching allocator (the KV cache grows by one token per step) are warm for every decode
        # length; a short warm-up left the first measured batch 2-4x slower per token. Disk offload,
        # where each step is seconds of IO, warms up with two tokens of the measured batch shape.
        marker("phase_start", "warmup")
        w_ids = random_prompts(batch, prompt_len, shape.vocab_size, seed + 999, device)
        run_batch(built, w_ids, min(new_tokens, 2) if offload == "disk" else new_tokens, kv_offload=kv_off)
        del w_ids
        marker("phase_end", "warmup")
        for r in range(rounds):
            ids = random_prompts(batch, prompt_len, shape.vocab_size, seed + r, device)
            print(f"batch {r + 1}/{rounds}: {batch} x {prompt_len} prompt tokens -> {new_tokens} new tokens", flush=True)

            def _start(t: float, r: int = r) -> None:
                for j in range(batch):
                    marker("request_start", str(r * batch + j), t)
                marker("phase_start", "prefill", t)

            def _first(t: float) -> None:
                marker("phase_end", "prefill", t)
                marker("phase_start", "decode", t)
                counters["prompt_tokens"] += batch * prompt_len
                counters["generated_tokens"] += batch
                publish()

            tm = run_batch(built, ids, new_tokens, kv_offload=kv_off, on_start=_start, on_first=_first)
            marker("phase_end", "decode", tm.t_end)
            for j in range(batch):
                marker("request_end", str(r * batch + j), tm.t_end)
            counters["generated_tokens"] += batch * (new_tokens - 1)
            counters["requests_done"] += batch
            publish()
            timings.append(tm)
            del ids
        peak = None
        if device.startswith("cuda"):
            import torch

            peak = int(sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())))
        return {
            "timings": [{"t_start": t.t_start, "t_first": t.t_first, "t_last": t.t_last, "t_end": t.t_end,
                         "ttft_s": t.ttft_s, "tpot_s": t.tpot_s} for t in timings],
            "weight_bytes": built.weight_bytes, "offloaded_layers": built.offloaded_layers,
            "offloaded_bytes": built.offloaded_bytes, "offload_target": built.offload_target,
            "offload_write_s": built.offload_write_s, "build_s": built.build_s, "peak_gpu_memory_bytes": peak,
            "devices": built.devices or [device],
            "versions": _versions(),
        }
    finally:
        built.close()


# ---------------------------------------------------------------------------------- profile
def _resolve_dir(p: str | None, work_dir: Path, default: str) -> Path:
    if p is None:
        return work_dir / default
    q = Path(p)
    return q if q.is_absolute() else (work_dir / q)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def profile_transformers(scn: Any, db: Any, scenario_path: str | Path, work_dir: str | Path,
                         progress: Callable[[str], None] = lambda s: None, *, device: str | None = None,
                         sensors: list[Any] | None = None, nvml: Any = None, hz: float | None = None,
                         disk_page_cache: str = "drop", seed: int | None = None) -> Path:
    """Run the scenario under the recorder; returns the trace path (``work_dir/trace.arrows``).

    The generate loop runs in a child process (``python -m storagecarbon.engines.hf_transformers``)
    and the recorder samples from this one, so that sampling never waits on the loop's GIL (and
    the loop never waits on sampling). The child reports markers through the recorder's marker
    file and its token counters through a small file; ``ProcTree`` follows the child for the
    DRAM and IO channels.

    ``sensors``/``nvml``: injected for tests (default: :func:`storagecarbon.record.recorder.default_sensors`
    with a fresh :class:`~storagecarbon.record.sensors.nvml.NvmlSensor`). ``hz``: sampling rate (default
    the scenario's ``engine.sample_hz``, at least 10 Hz). ``device``: torch device of the run
    (default ``$STORAGECARBON_TRANSFORMERS_DEVICE`` or ``cuda``; ``cpu`` runs the loop on the CPU,
    which tests use). Errors: :class:`EngineError` with the worker's last output lines; the trace
    is closed either way.
    """
    import json
    import subprocess
    import sys
    import threading

    import psutil

    from ..record.recorder import QUIET_ENV, Recorder, default_sensors
    from ..scenario import TransformersCfg
    from ..record.sensors.nvml import FULL_RATE, NvmlSensor
    from ..record.sensors.procio import ProcTree
    from ..record.tiermap import map_tiers

    device = device or os.environ.get(DEVICE_ENV) or "cuda"
    scenario_path = Path(scenario_path)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    tr = scn.engine.transformers or TransformersCfg()
    if tr.offload not in OFFLOAD_MODES:
        raise EngineError(f"engine.transformers.offload {tr.offload!r} not one of {', '.join(OFFLOAD_MODES)}")
    wl = scn.workload
    if wl.prompt_tokens.dist != "fixed" or wl.output_tokens.dist != "fixed":
        progress("transformers engine: prompt/output lengths use their mean (fixed lengths per batch)")
    batch = tr.batch_size
    prompt_len = int(round(wl.prompt_tokens.mean))
    new_tokens = max(1, int(round(wl.output_tokens.mean)))
    rounds = max(1, math.ceil(wl.num_requests() / batch))
    shape = LlamaShape.from_scenario(scn)
    wdtype = scn.model.weight_dtype
    if wdtype not in TORCH_DTYPES:
        raise EngineError(f"transformers engine: weight dtype {wdtype!r} not supported (bf16, fp16, fp32)")
    if scn.model.kv_dtype != wdtype:
        progress(f"transformers engine: KV cache uses the weight dtype {wdtype} (kv_dtype {scn.model.kv_dtype} ignored)")
    offload_dir = _resolve_dir(tr.offload_dir, work_dir, "offload") if tr.offload == "disk" else None
    seed = wl.seed if seed is None else seed
    hz = max(float(hz or scn.engine.sample_hz), 10.0)

    run_dir = Path(tempfile.mkdtemp(prefix="storagecarbon-tf-", dir=work_dir))
    markers = run_dir / "markers.jsonl"
    markers.touch()
    counters_path = run_dir / "counters.json"
    result_path = run_dir / "result.json"
    trace = work_dir / "trace.arrows"

    # ---- sensors and devices: the recorder's defaults, on the child's process tree
    notes: list[str] = []
    probed: dict[str, Any] = {}
    tree = ProcTree()
    if sensors is None:
        # every NVML metric on every tick: the measurement harness splits sub-second prefill/decode phases
        nv = nvml if nvml is not None else NvmlSensor(every_s=FULL_RATE)
        probed["nvml"] = nv.probe()
        gpus = nv.devices() if probed["nvml"].available else []
        tiers = scn.hardware.tiers()
        disk_tiers = [t for t in ("ssd", "hdd") if t in tiers]
        paths: dict[str, str | Path] = {}
        if disk_tiers and not tiers[disk_tiers[0]].path:
            paths[disk_tiers[0]] = offload_dir if offload_dir is not None else work_dir
            Path(paths[disk_tiers[0]]).mkdir(parents=True, exist_ok=True)
        tm = map_tiers(scn, db=db, gpus=gpus, disk_paths=paths, base_dir=str(work_dir),
                       memory_bytes=float(psutil.virtual_memory().total))
        notes += tm.notes
        sensors = default_sensors(tree, tm, tap_dir=None, scenario=scn, lmcache=False, nvml=nv, base_dir=work_dir)
        devices: list[Any] = tm.devices
        host_extra: dict[str, Any] = {"tier_map": tm.header_dict()["tier_map"]}
    else:
        for s in sensors:
            if hasattr(s, "tree") and getattr(s.tree, "root_pid", 1) is None:
                tree = s.tree
        devices, host_extra = [], {}
    sensors = list(sensors) + [CounterFileSensor(counters_path)]
    if tr.offload == "disk":
        notes.append("disk offload measured cold: the offload files' page cache is dropped before every forward step"
                     if disk_page_cache == "drop" else "disk offload measured warm: page cache kept")
    notes.append(f"transformers engine: random weights (normal, std {INIT_STD}), greedy decoding of exactly "
                 f"{new_tokens} tokens per prompt, {rounds} batch(es) of {batch} after one warm-up batch of the same shape; "
                 f"generate loop in a child process, recorder in the parent")
    header_base = {"devices": devices, "notes": notes, "scenario": scn.model_dump(mode="json"),
                   "host": host_extra}
    spec = {"shape": {k: getattr(shape, k) for k in ("layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                                                      "intermediate_size", "vocab_size", "name")},
            "dtype": wdtype, "device": device, "offload": tr.offload, "gpu_weight_fraction": tr.gpu_weight_fraction,
            "offload_dir": str(offload_dir) if offload_dir else None, "disk_page_cache": disk_page_cache,
            "gpus": scn.hardware.gpu.count if scn.hardware.gpu else 1,
            "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "rounds": rounds, "seed": seed,
            "markers": str(markers), "counters": str(counters_path), "result": str(result_path)}
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = _package_root() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    rec = Recorder(trace, header_base, sensors, hz=hz, markers_file=markers, probed=probed)
    summary: dict[str, Any] = {}
    tail: list[str] = []
    proc: subprocess.Popen[str] | None = None
    try:
        rec.start()
        proc = start_group([sys.executable, "-m", "storagecarbon.engines.hf_transformers", str(spec_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(work_dir))
        tree.attach(proc.pid, session=proc.pid)
        rec.marker("command_start", str(proc.pid))

        def _pump() -> None:
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                del tail[:-40]
                if line and not line.lower().startswith(("warning", "some parameters are on the meta")):
                    progress(line)

        pump = threading.Thread(target=_pump, daemon=True)
        pump.start()
        try:
            rc = proc.wait(timeout=scn.engine.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise EngineError(f"transformers worker timed out after {scn.engine.timeout_s:g} s; trace kept at {trace}")
        pump.join(timeout=5)
        rec.sample_now()
        rec.marker("command_end", str(rc))
        if rc != 0 or not result_path.exists():
            raise EngineError(f"transformers worker exited with {rc}: " + " | ".join(tail[-8:]))
        res = json.loads(result_path.read_text())
        summary = _summary(res, rec.t0_unix, tr.offload, batch, prompt_len, new_tokens, rounds, shape, wdtype,
                           device, disk_page_cache)
    except BaseException as exc:
        summary = {"error": f"{type(exc).__name__}: {exc}", "worker_tail": tail[-20:]}
        if proc is not None and proc.poll() is None:
            kill_group(proc)
        raise
    finally:
        try:
            rec.stop(summary)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            if offload_dir is not None and offload_dir.exists() and not any(offload_dir.iterdir()):
                offload_dir.rmdir()
    return trace


def _summary(res: dict[str, Any], t0u: float, offload: str, batch: int, prompt_len: int, new_tokens: int,
             rounds: int, shape: LlamaShape, wdtype: str, device: str, disk_page_cache: str) -> dict[str, Any]:
    tms = res["timings"]
    n_req = batch * rounds
    ttft_ms = [t["ttft_s"] * 1e3 for t in tms for _ in range(batch)]
    tpot_ms = [t["tpot_s"] * 1e3 for t in tms for _ in range(batch)] if new_tokens > 1 else []
    return {
        "requests": n_req,
        "prompt_tokens": n_req * prompt_len,
        "generated_tokens": n_req * new_tokens,
        "duration_s": float(sum(t["t_end"] - t["t_start"] for t in tms)),
        "latency": {"ttft_ms": latency_stats(ttft_ms), "tpot_ms": latency_stats(tpot_ms)},
        "transformers": {
            "offload": offload, "batch_size": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "rounds": rounds, "layers": shape.layers, "shape": shape.name, "params": shape.params(),
            "weight_bytes": res["weight_bytes"], "offloaded_layers": res["offloaded_layers"],
            "offloaded_bytes": res["offloaded_bytes"], "offload_target": res["offload_target"],
            "offload_write_s": res["offload_write_s"],
            "disk_page_cache": disk_page_cache if offload == "disk" else None,
            "kv_bytes_per_token": shape.kv_bytes_per_token(DTYPE_BYTES.get(wdtype, 2)),
            "build_s": res["build_s"], "peak_gpu_memory_bytes": res["peak_gpu_memory_bytes"], "device": device,
            "devices": res.get("devices", [device]),
            "rounds_detail": [{"t_start_s": t["t_start"] - t0u, "t_first_s": t["t_first"] - t0u,
                               "t_last_s": t["t_last"] - t0u, "t_end_s": t["t_end"] - t0u,
                               "ttft_s": t["ttft_s"], "tpot_s": t["tpot_s"]} for t in tms],
            "versions": res.get("versions", {}),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m storagecarbon.engines.hf_transformers SPEC.json``."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m storagecarbon.engines.hf_transformers SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    res = run_worker(spec)
    _write_json_atomic(Path(spec["result"]), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
