"""What each NVML query the recorder makes costs, in thread CPU and wall time, on the GPU box.

    python benchmarks/gpu/nvml_cost.py [--n 40] [--gap-s 0.1] [--out F.json]

Each query is called ``--n`` times, ``--gap-s`` apart (a tick's cold start, as the recorder sees it), and timed
with ``time.thread_time()`` (the clock of the recorder's own ``sample_cpu_s_mean``) and ``time.perf_counter()``.
Reports the median and the max per query, for GPU 0.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--gap-s", type=float, default=0.1)
    ap.add_argument("--out")
    a = ap.parse_args()
    import pynvml as nv
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    queries = {
        "TotalEnergyConsumption": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h),
        "PowerUsage": lambda: nv.nvmlDeviceGetPowerUsage(h),
        "MemoryInfo": lambda: nv.nvmlDeviceGetMemoryInfo(h),
        "UtilizationRates": lambda: nv.nvmlDeviceGetUtilizationRates(h),
        "PcieThroughput_TX": lambda: nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_TX_BYTES),
        "PcieThroughput_RX": lambda: nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_RX_BYTES),
        "FieldValues_energy_power": lambda: nv.nvmlDeviceGetFieldValues(
            h, [nv.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, nv.NVML_FI_DEV_POWER_INSTANT]),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in queries.items():
        cpu, wall = [], []
        for _ in range(a.n):
            time.sleep(a.gap_s)
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - an unsupported query is reported, not fatal
                out[name] = {"error": repr(exc)}
                break
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        else:
            out[name] = {"cpu_us_median": statistics.median(cpu) * 1e6, "cpu_us_max": max(cpu) * 1e6,
                         "wall_us_median": statistics.median(wall) * 1e6, "wall_us_max": max(wall) * 1e6}
        print(f"{name:26s} {json.dumps({k: round(v) if isinstance(v, float) else v for k, v in out[name].items()})}")
    out["_meta"] = {"driver": str(nv.nvmlSystemGetDriverVersion()), "gpu": str(nv.nvmlDeviceGetName(h)),
                    "n": a.n, "gap_s": a.gap_s}
    nv.nvmlShutdown()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
