"""Fleet report benchmark: many synthetic node traces (1 h at 10 Hz each) reported together.

    python benchmarks/fleet_bench.py [--traces 100] [--counts 10 50 100] [--hours 1] [--hz 10] \
        [--jobs 2] [--workdir /tmp/storagecarbon-fleet] [--out benchmarks/results/fleet_bench.json]

Writes ``--traces`` traces with :func:`storagecarbon.fleet.synthetic.write_node_trace` (15 channels
of a GPU serving node: NVML energy/power/HBM, process CPU time, DRAM resident bytes, diskstats,
LMCache bytes and KV file size, token and request counters; ~540k rows, 13 MB each) unless they are
already there, then for each count N runs ``storagecarbon report TRACE... --json --jobs J`` on the
first N traces as a child process, with and without ``--dataset``, and records its wall time and
the peak resident memory of its whole process tree (the report process and its workers, summed,
sampled every 50 ms with psutil). Target (issue 13): 100 traces aggregated in under 60 s on 2 cores,
memory flat in the number of traces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def make_traces(root: Path, n: int, hours: float, hz: float) -> list[Path]:
    sys.path.insert(0, str(REPO))
    from storagecarbon.fleet.synthetic import write_node_trace

    paths = []
    t0 = 1.78e9  # 2026-05-28, any fixed instant
    for i in range(n):
        p = root / f"node{i:03d}" / "trace.arrows"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp")
            write_node_trace(tmp, node=f"node{i:03d}", t0_unix=t0 + 37 * i, duration_s=hours * 3600, hz=hz, seed=i)
            tmp.replace(p)
        paths.append(p)
    return paths


def run_report(paths: list[Path], jobs: int, dataset: Path | None) -> dict:
    cmd = [sys.executable, "-m", "storagecarbon", "report", *map(str, paths), "--json", "--jobs", str(jobs)]
    if dataset is not None:
        shutil.rmtree(dataset, ignore_errors=True)
        cmd += ["--dataset", str(dataset)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=REPO)
        peak_tree = peak_one = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak_tree = max(peak_tree, sum(rss))
                peak_one = max(peak_one, max(rss, default=0))
            except psutil.Error:
                pass
            time.sleep(0.05)
        wall = time.monotonic() - t0
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"report failed ({proc.returncode}): {err[-2000:]}")
        out.seek(0)
        rep = json.loads(out.read())
    assert rep["traces"] == len(paths), rep["traces"]
    return {"traces": len(paths), "wall_s": wall, "peak_tree_rss_mb": peak_tree / 1e6, "peak_process_rss_mb": peak_one / 1e6,
            "total_gco2e_p50": rep["totals"]["total_gco2e"]["p50"], "dataset": dataset is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=100)
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/storagecarbon-fleet"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/fleet_bench.json")
    a = ap.parse_args(argv)
    t = time.monotonic()
    paths = make_traces(a.workdir / "traces", a.traces, a.hours, a.hz)
    gen_s = time.monotonic() - t
    size = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} traces ready ({size / 1e9:.2f} GB; {gen_s:.0f} s to make)", file=sys.stderr)
    runs = []
    for n in sorted(set(c for c in a.counts if c <= len(paths))):
        for ds in (None, a.workdir / "dataset"):
            r = run_report(paths[:n], a.jobs, ds)
            runs.append(r)
            print(f"{n:4d} traces{' + dataset' if ds else '          '}: {r['wall_s']:6.1f} s, peak RSS "
                  f"{r['peak_tree_rss_mb']:.0f} MB (process tree), {r['peak_process_rss_mb']:.0f} MB (largest process)",
                  file=sys.stderr)
    out = {"host": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "traces": {"count": len(paths), "hours": a.hours, "hz": a.hz, "bytes": size,
                      "rows_per_trace": int(a.hours * 3600 * a.hz + 1) * 15},
           "jobs": a.jobs, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
