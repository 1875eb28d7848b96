"""Which LMCache methods move KV on the GPU path? A probe for the byte taps of storagecarbon.engines.lmcache_cpu.

    python benchmarks/gpu/lmcache_probe.py OUT.json [--graphs]   # on the GPU box, environment from box_env.sh

``--graphs``: CUDA graphs and torch.compile on (vLLM's default, as in the matrix and ``vllm serve``) instead of
``enforce_eager``. ``VLLM_USE_V2_MODEL_RUNNER=0`` in the environment selects vLLM's V1 GPU model runner.

Runs vLLM's offline engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: scheduler and worker here) on
a small Llama shape with dummy weights and LMCache (CPU + disk tiers), two passes of shared-prefix prompts with
``reset_prefix_cache()`` between them (pass 2 must come from LMCache), and counts every call of every method of
LMCache's engine, storage manager and CPU/disk backends. Writes the counts, the taps' counters and vLLM's
connector hit counters to OUT.json.
"""
from __future__ import annotations

import collections
import functools
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CALLS: collections.Counter = collections.Counter()
CLASSES = [("lmcache.v1.cache_engine", "LMCacheEngine"),
           ("lmcache.integration.vllm.vllm_v1_adapter", "LMCacheConnectorV1Impl"),
           ("lmcache.v1.storage_backend.storage_manager", "StorageManager"),
           ("lmcache.v1.storage_backend.local_cpu_backend", "LocalCPUBackend"),
           ("lmcache.v1.storage_backend.local_disk_backend", "LocalDiskBackend")]


def wrap(cls: type) -> None:
    for name, fn in list(vars(cls).items()):
        if name.startswith("__") or isinstance(fn, (staticmethod, classmethod, property)) or not callable(fn):
            continue
        key = f"{cls.__name__}.{name}"
        if inspect.iscoroutinefunction(fn):
            async def aw(*a, __fn=fn, __k=key, **kw):
                CALLS[__k] += 1
                return await __fn(*a, **kw)
            setattr(cls, name, functools.wraps(fn)(aw))
        elif inspect.isgeneratorfunction(fn):
            def gw(*a, __fn=fn, __k=key, **kw):
                CALLS[__k] += 1
                return (yield from __fn(*a, **kw))
            setattr(cls, name, functools.wraps(fn)(gw))
        else:
            def w(*a, __fn=fn, __k=key, **kw):
                CALLS[__k] += 1
                return __fn(*a, **kw)
            setattr(cls, name, functools.wraps(fn)(w))


LOADS: collections.Counter = collections.Counter()


def watch_loads(impl: type) -> None:
    """What LMCache's worker sees when vLLM asks it to load: the forward context's attention metadata and
    the requests that carry a load spec (LMCache returns early, loading nothing, without attention metadata)."""
    orig = impl.start_load_kv

    def start_load_kv(self, forward_context, **kw):
        meta = self._parent._get_connector_metadata()
        loads = [r for r in getattr(meta, "requests", []) if getattr(r, "load_spec", None) is not None
                 and r.load_spec.can_load]
        LOADS["calls"] += 1
        LOADS["requests_to_load"] += len(loads)
        if getattr(forward_context, "attn_metadata", None) is None:
            LOADS["calls_without_attn_metadata"] += 1
            LOADS["requests_to_load_without_attn_metadata"] += len(loads)
        return orig(self, forward_context, **kw)

    impl.start_load_kv = start_load_kv


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    graphs = "--graphs" in sys.argv[1:]
    out = Path(args[0] if args else "lmcache_probe.json")
    work = Path(tempfile.mkdtemp(prefix="lmc-probe-"))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["STORAGECARBON_LMCACHE_CPU"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ["STORAGECARBON_TAP_DIR"] = str(work / "taps")
    (work / "taps").mkdir()
    from storagecarbon.engines import lmcache_cpu
    from storagecarbon.engines.vllm_gpu import write_model_dir
    from storagecarbon.engines.vllm_worker import generate_prompt_token_ids, write_lmcache_config
    from storagecarbon.scenario import ModelSpec

    os.environ["LMCACHE_CONFIG_FILE"] = str(write_lmcache_config(
        {"chunk_size": 256, "local_cpu": True, "max_local_cpu_size_gb": 4.0,
         "local_disk_path": str(work / "disk"), "max_local_disk_size_gb": 8.0}, work / "lmcache.yaml"))
    lmcache_cpu.register()
    import importlib
    for mod, cls in CLASSES:
        wrap(getattr(importlib.import_module(mod), cls))
    watch_loads(importlib.import_module(CLASSES[1][0]).LMCacheConnectorV1Impl)
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig

    model = write_model_dir(ModelSpec(preset="llama-3-8b").dims(), work / "model")
    llm = LLM(model=str(model), load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16",
              gpu_memory_utilization=float(os.environ.get("PROBE_GPU_UTIL", "0.5")), num_gpu_blocks_override=4096, max_model_len=4096, block_size=16,
              enable_prefix_caching=True, disable_log_stats=False, enforce_eager=not graphs,
              kv_transfer_config=KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both"))
    ids = generate_prompt_token_ids({"num_requests": 8, "shared_prefix_tokens": 1536, "suffix_tokens": 512,
                                     "seed": 0}, 128256)
    sp = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    res: dict = {"graphs": graphs, "v2_model_runner_env": os.environ.get("VLLM_USE_V2_MODEL_RUNNER"),
                 "passes": []}
    for i in range(2):
        before = dict(CALLS)
        LOADS.clear()
        t0 = time.time()
        llm.generate([{"prompt_token_ids": p} for p in ids], sp, use_tqdm=False)
        time.sleep(2.0)   # asynchronous LMCache stores finish
        res["passes"].append({"pass": i + 1, "s": time.time() - t0,
                              "calls": {k: v - before.get(k, 0) for k, v in CALLS.items() if v - before.get(k, 0)},
                              "taps": lmcache_cpu.snapshot(), "start_load_kv": dict(LOADS)})
        llm.reset_prefix_cache()
    try:
        res["metrics"] = {m.name: getattr(m, "value", None) for m in llm.get_metrics()
                          if "prefix_cache" in m.name or "kv_offload" in m.name}
    except Exception as exc:  # noqa: BLE001
        res["metrics"] = str(exc)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
