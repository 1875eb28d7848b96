"""`storagecarbon env`: which sensors and engines this machine has, and why not."""

from __future__ import annotations

from typing import Any


def probe_all() -> dict[str, Any]:
    sensors: dict[str, dict[str, Any]] = {}
    try:
        from .sensors import all_sensor_classes
    except ImportError as exc:  # pragma: no cover - only while the package is incomplete
        sensors["all"] = {"available": False, "reason": f"sensor package not importable: {exc}"}
    else:
        for name, cls in all_sensor_classes().items():
            try:
                p = cls.probe_static() if hasattr(cls, "probe_static") else cls().probe()
                sensors[name] = {"available": bool(p.available), "reason": p.reason}
            except Exception as exc:  # a probe must never crash `env`
                sensors[name] = {"available": False, "reason": f"probe failed: {exc.__class__.__name__}: {exc}"}
    engines: dict[str, dict[str, Any]] = {}
    from .engines.vllm_cpu import engine_available

    ok, why = engine_available()
    engines["vllm+lmcache (CPU)"] = {"available": ok, "reason": why}
    try:
        from .engines.hf_transformers import transformers_available

        ok, why = transformers_available()
    except ImportError as exc:
        ok, why = False, f"transformers engine module missing: {exc}"
    engines["transformers (GPU)"] = {"available": ok, "reason": why}
    engines["model"] = {"available": True, "reason": "the performance model runs anywhere (MODELED)"}
    return {"sensors": sensors, "engines": engines}
