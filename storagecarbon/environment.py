"""`storagecarbon env`: which sensors and engines this machine has, and why not."""

from __future__ import annotations

from typing import Any


def probe_all() -> dict[str, Any]:
    sensors: dict[str, dict[str, Any]] = {}
    import os

    from .sensors import DiskstatsSensor, LMCacheTapSensor, MemorySensor, NvmlSensor, ProcIOSensor, ProcTree, RaplSensor
    from .tiermap import block_info

    tree = ProcTree(os.getpid())
    here = block_info(os.getcwd())
    blocks = {"disk": [here.block]} if getattr(here, "block", None) else {}
    candidates = {
        "nvml": lambda: NvmlSensor(),
        "diskstats": lambda: DiskstatsSensor(blocks),
        "procio": lambda: ProcIOSensor(tree, disk_device="disk"),
        "memory": lambda: MemorySensor(tree),
        "rapl": lambda: RaplSensor(),
        "lmcache_tap": lambda: LMCacheTapSensor(os.environ.get("STORAGECARBON_TAP_DIR") or "/tmp/storagecarbon-env-tap"),
    }
    for name, make in candidates.items():
        try:
            p = make().probe()
            sensors[name] = {"available": bool(p.available), "reason": p.reason}
        except Exception as exc:  # a probe must never crash `env`
            sensors[name] = {"available": False, "reason": f"probe failed: {exc.__class__.__name__}: {exc}"}
    sensors["tier map"] = {"available": bool(blocks), "reason": f"{os.getcwd()} is on {here.block or '?'}"
                           f" ({getattr(here, 'model', None) or 'no vendor model string'}"
                           f"{', virtual disk' if getattr(here, 'virtual', False) else ''})"}
    engines: dict[str, dict[str, Any]] = {}
    from .engines.vllm_cpu import engine_available

    ok, why = engine_available()
    engines["vllm+lmcache (CPU)"] = {"available": ok, "reason": why}
    from .engines.vllm_gpu import gpu_engine_available

    ok, why = gpu_engine_available()
    engines["vllm (GPU)"] = {"available": ok, "reason": why}
    try:
        from .engines.hf_transformers import transformers_available

        ok, why = transformers_available()
    except ImportError as exc:
        ok, why = False, f"transformers engine module missing: {exc}"
    engines["transformers (GPU)"] = {"available": ok, "reason": why}
    engines["model"] = {"available": True, "reason": "the performance model runs anywhere (MODELED)"}
    return {"sensors": sensors, "engines": engines}
