"""`storagecarbon env`: which sensors and engines this machine has, and why not."""

from __future__ import annotations

from typing import Any


def vllm_command_runs(timeout_s: float = 120.0) -> tuple[bool, str]:
    """Run ``vllm --version`` (the console script next to this interpreter, else on PATH) in a
    subprocess: the same entry point ``vllm serve`` and ``vllm bench serve`` go through."""
    import os
    import shutil
    import subprocess
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "vllm")
    exe = here if os.path.exists(here) else shutil.which("vllm")
    if exe is None:
        return False, "no `vllm` command next to this Python or on PATH"
    env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1",
           "LMCACHE_TRACK_USAGE": "false"}
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout_s, env=env,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`vllm --version` did not run: {exc}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1][:200]
        hint = " (run python -m storagecarbon.engines.vllm_dist_shim)" if "PackageNotFoundError" in r.stderr else ""
        return False, f"`vllm --version` failed with exit code {r.returncode}: {last}{hint}"
    return True, f"`vllm --version` ran: {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else '?'}"


def probe_all() -> dict[str, Any]:
    sensors: dict[str, dict[str, Any]] = {}
    import os

    from .record.sensors import DiskstatsSensor, LMCacheTapSensor, MemorySensor, NvmlSensor, ProcIOSensor, ProcTree, RaplSensor
    from .record.tiermap import block_info

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
    from .record.ticker import available as ticker_available

    ok, why = ticker_available()
    sensors["native ticker"] = {"available": ok, "reason": why if not ok else
                                f"{why}: disk and RAPL counters read at the sampling rate in C"}
    sensors["tier map"] = {"available": bool(blocks), "reason": f"{os.getcwd()} is on {here.block or '?'}"
                           f" ({getattr(here, 'model', None) or 'no vendor model string'}"
                           f"{', virtual disk' if getattr(here, 'virtual', False) else ''})"}
    engines: dict[str, dict[str, Any]] = {}
    from .engines.vllm_cpu import engine_available

    ok, why = engine_available()
    if ok:  # what the metadata says is installed must also run
        ok, ran = vllm_command_runs()
        why = f"{why}; {ran}"
    engines["vllm+lmcache (CPU)"] = {"available": ok, "reason": why}
    from .engines.vllm_serve import stat_logger_installed

    plug = stat_logger_installed()
    engines["vllm stat-logger plugin"] = {
        "available": plug, "reason": "entry point vllm.stat_logger_plugins -> storagecarbon.engines.stat_logger "
                                     "(loaded by `vllm serve`)" if plug else
        "storagecarbon's vllm.stat_logger_plugins entry point is not installed (pip install -e .)"}
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
