"""Run every GPU scenario (scenarios/gpu/*.yaml, engine: transformers) measured, in one go.

    python benchmarks/gpu/run_matrix.py --out DIR [--scenarios scenarios/gpu] [--only SUBSTR ...]

Each scenario runs in its own subprocess (``--one``), through
``storagecarbon.pipeline.profile(path, mode="measured")``: the project's recorder samples NVML,
diskstats, the process's IO and memory while transformers generates, then the run is attributed
like any other. Kept per run, small: ``DIR/traces/<name>.arrows.gz`` (gzip -9) and
``DIR/reports/<name>.json``; the bulky Parquet tables are dropped (``storagecarbon report`` makes
them again from the trace).

Independent NVML cross-check: for every run, this (parent) process polls
``nvmlDeviceGetTotalEnergyConsumption`` of every GPU every 20 ms in a plain thread, outside the
recorder and outside the run's process, and compares the energy over the recorder's own sample
window (first to last energy sample of the trace) with the recorder's figure:
``DIR/crosscheck.json``. ``DIR/matrix.json`` lists every run (wall time, TTFT, TPOT, GPU energy
per generated token, errors) and the machine (nvidia-smi, CPU, memory, versions).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ independent poller
class EnergyPoller:
    """A plain NVML poll of every GPU's energy counter (mJ) and power (mW), in its own thread.

    Two independent figures per window: the energy counter read by other code at other times
    (checks the recorder's pipeline: units, channel mapping, timestamps, counter handling) and
    the trapezoidal integral of the power readings (a second measurement method)."""

    def __init__(self, period_s: float = 0.02):
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.period_s = period_s
        self.samples: list[tuple[float, list[int]]] = []
        self.power: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            try:
                e = [int(self.nv.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]
                self.samples.append((t, e))
                p = [int(self.nv.nvmlDeviceGetPowerUsage(h)) for h in self.handles]
                self.power.append((time.time(), p))
            except Exception:  # noqa: BLE001 - a missed poll is a gap
                pass
            self._stop.wait(self.period_s)

    def start(self) -> "EnergyPoller":
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def energy_j(self, gpu: int, t0: float, t1: float) -> float | None:
        import numpy as np

        if len(self.samples) < 2:
            return None
        ts = np.array([s[0] for s in self.samples])
        es = np.array([s[1][gpu] for s in self.samples], dtype=float) / 1000.0
        if t0 < ts[0] or t1 > ts[-1]:
            return None
        return float(np.interp(t1, ts, es) - np.interp(t0, ts, es))

    def power_integral_j(self, gpu: int, t0: float, t1: float) -> float | None:
        import numpy as np

        if len(self.power) < 2:
            return None
        ts = np.array([s[0] for s in self.power])
        ps = np.array([s[1][gpu] for s in self.power], dtype=float) / 1000.0
        if t0 < ts[0] or t1 > ts[-1]:
            return None
        m = (ts > t0) & (ts < t1)
        tt = np.concatenate([[t0], ts[m], [t1]])
        pp = np.concatenate([[np.interp(t0, ts, ps)], ps[m], [np.interp(t1, ts, ps)]])
        return float(np.sum((pp[1:] + pp[:-1]) / 2 * np.diff(tt)))


def crosscheck(trace_path: Path, poller: EnergyPoller) -> dict[str, Any]:
    """Recorder energy of each GPU over its own window vs the poller over the same unix window."""
    from storagecarbon.trace import read_trace

    tr = read_trace(trace_path)
    out: dict[str, Any] = {}
    for d in tr.header.devices:
        if d.tier != "hbm" or not d.id.startswith("gpu"):
            continue
        s = tr.series(d.id, "energy_j")
        if s is None or len(s[0]) < 2:
            out[d.id] = {"error": "no energy_j channel"}
            continue
        t, e = s
        t0u, t1u = tr.header.t0_unix + float(t[0]), tr.header.t0_unix + float(t[-1])
        rec_j = float(e[-1] - e[0])
        ind_j = poller.energy_j(int(d.id[3:]), t0u, t1u)
        row: dict[str, Any] = {"window_s": t1u - t0u, "recorder_j": rec_j, "independent_j": ind_j,
                               "recorder_samples": int(len(t)),
                               "poller_samples": len(poller.samples), "poller_period_s": poller.period_s}
        if ind_j:
            row["diff_j"] = rec_j - ind_j
            row["diff_pct"] = 100.0 * (rec_j - ind_j) / ind_j
        pw_j = poller.power_integral_j(int(d.id[3:]), t0u, t1u)
        row["independent_power_integral_j"] = pw_j
        if pw_j:
            row["power_integral_diff_pct"] = 100.0 * (rec_j - pw_j) / pw_j
        out[d.id] = row
    return out


# ------------------------------------------------------------------------------- one scenario
def run_one(scenario: Path, out_dir: Path) -> int:
    from storagecarbon.pipeline import profile

    t0 = time.time()
    try:
        res = profile(scenario, out_dir=out_dir, mode="measured", progress=lambda s: print(f"  [{scenario.stem}] {s}", flush=True))
    except Exception as exc:  # noqa: BLE001 - reported in matrix.json, the matrix goes on
        traceback.print_exc()
        (out_dir / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1
    print(f"  [{scenario.stem}] done in {time.time() - t0:.1f} s: {res.mode_reason}", flush=True)
    return 0


# ------------------------------------------------------------------------------------ machine
def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as exc:  # noqa: BLE001
        return f"({argv[0]} failed: {exc})"


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = {}
    for mod in ("torch", "transformers", "accelerate", "pynvml", "pyarrow", "numpy", "pydantic"):
        try:
            vers[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001
            vers[mod] = None
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "nvidia_smi": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,pcie.link.gen.max,"
                                          "pcie.link.width.max,clocks.max.sm,clocks.max.mem", "--format=csv"]),
        "nvidia_smi_L": _cmd(["nvidia-smi", "-L"]),
        "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "versions": vers,
        "memory": _cmd(["free", "-g"]), "disks": _cmd(["lsblk", "-d", "-o", "NAME,SIZE,ROTA,MODEL"]),
    }


def _summary_row(name: str, report_path: Path, trace_path: Path) -> dict[str, Any]:
    from storagecarbon.trace import read_trace
    from storagecarbon.carbon.usage import aggregate

    tr = read_trace(trace_path)
    s = tr.summary
    u = aggregate(trace_path)
    gpu_idx = [i for i, d in enumerate(u.header.devices) if d.tier == "hbm"]
    work = [u.phases.index(p) for p in ("prefill", "decode") if p in u.phases]
    e_work = float(sum(u.by_phase["energy_j"][i, j] for i in gpu_idx for j in work))
    gen = s.get("generated_tokens") or 0
    lat = s.get("latency") or {}
    return {"name": name, "requests": s.get("requests"), "generated_tokens": gen,
            "ttft_ms_mean": (lat.get("ttft_ms") or {}).get("mean"), "tpot_ms_mean": (lat.get("tpot_ms") or {}).get("mean"),
            "gpu_energy_prefill_decode_j": e_work, "gpu_j_per_token": e_work / gen if gen else None,
            "trace_duration_s": tr.duration_s, "truncated": tr.truncated,
            "recorder": s.get("recorder", {}), "offload": (s.get("transformers") or {}).get("offload")}


# ----------------------------------------------------------------------------------- matrix
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scenarios", type=Path, default=ROOT / "scenarios" / "gpu")
    ap.add_argument("--only", nargs="*", default=None, help="run only scenarios whose name contains one of these")
    ap.add_argument("--one", nargs=2, metavar=("SCENARIO", "OUT_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=300.0, help="per scenario, seconds")
    a = ap.parse_args(argv)
    if a.one:
        return run_one(Path(a.one[0]), Path(a.one[1]))

    from storagecarbon.scenario import load_scenario

    out: Path = a.out
    (out / "traces").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    work = out / "work"
    scen = []
    for p in sorted(a.scenarios.glob("*.yaml")):
        s = load_scenario(p)
        if s.engine.kind != "transformers":
            continue
        if a.only and not any(x in p.stem for x in a.only):
            continue
        scen.append(p)
    info = machine_info()
    (out / "machine.json").write_text(json.dumps(info, indent=2))
    print(info["nvidia_smi"], flush=True)
    poller = None
    try:
        poller = EnergyPoller().start()
    except Exception as exc:  # noqa: BLE001
        print(f"independent NVML poller unavailable: {exc}", flush=True)
    rows, checks = [], {}
    t_all = time.time()
    for p in scen:
        name = p.stem
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        print(f"== {name}", flush=True)
        t0 = time.time()
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
        try:
            rc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--one", str(p), str(d)],
                                env=env, timeout=a.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        wall = time.time() - t0
        row: dict[str, Any] = {"name": name, "rc": rc, "wall_s": wall}
        trace = d / "trace.arrows"
        if trace.exists():
            with open(trace, "rb") as fi, gzip.open(out / "traces" / f"{name}.arrows.gz", "wb", compresslevel=9) as fo:
                shutil.copyfileobj(fi, fo)
            try:
                row.update(_summary_row(name, d / "report.json", trace))
            except Exception as exc:  # noqa: BLE001
                row["summary_error"] = repr(exc)
            if poller is not None:
                try:
                    checks[name] = crosscheck(trace, poller)
                except Exception as exc:  # noqa: BLE001
                    checks[name] = {"error": repr(exc)}
        if (d / "report.json").exists():
            shutil.copyfile(d / "report.json", out / "reports" / f"{name}.json")
        if (d / "error.txt").exists():
            row["error"] = (d / "error.txt").read_text()[:4000]
        rows.append(row)
        print(f"== {name}: rc {rc}, {wall:.1f} s, TTFT {row.get('ttft_ms_mean')}, TPOT {row.get('tpot_ms_mean')}, "
              f"J/token {row.get('gpu_j_per_token')}; cross-check {json.dumps(checks.get(name))}", flush=True)
        (out / "matrix.json").write_text(json.dumps({"machine": info, "runs": rows, "total_wall_s": time.time() - t_all},
                                                    indent=2, default=str))
        (out / "crosscheck.json").write_text(json.dumps(checks, indent=2))
        shutil.rmtree(d, ignore_errors=True)
    if poller is not None:
        poller.stop()
    shutil.rmtree(work, ignore_errors=True)
    bad = [r["name"] for r in rows if r["rc"] != 0]
    print(f"matrix: {len(rows) - len(bad)}/{len(rows)} runs OK in {time.time() - t_all:.0f} s" + (f"; failed: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
