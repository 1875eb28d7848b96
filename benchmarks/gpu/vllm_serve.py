"""`storagecarbon record -- vllm serve` on the GPU machine: the serving recipe of docs/serving.md with real vLLM.

    python benchmarks/gpu/vllm_serve.py --out DIR --runs l8b-native,l8b-lmcache [--lanes "0;1"] \
        [--requests 48 --prompt 2048 --prefix 1536 --output 64 --concurrency 16]

A *run* is ``<shape>-<mode>`` as in :mod:`vllm_matrix` (same scenarios: 12 GB of HBM KV for the offload modes,
vLLM's native CPU offload or LMCache CPU + disk). Each run writes ``DIR/<run>/scenario.yaml`` and records

    python -m storagecarbon record --scenario scenario.yaml --hz 20 --out DIR/<run>/trace.arrows -- \
      python -m storagecarbon.engines.loadgen --passes 2 --reset-prefix-cache ... -- \
      python -m vllm.entrypoints.cli.main serve MODEL --port P ... (flags from engine_settings)

so the stat-logger plugin (entry point ``vllm.stat_logger_plugins``), vLLM's ``/metrics`` and the load
generator's markers give the serving window, requests, tokens, TTFT/TPOT and per-tier KV bytes. Reports are
made afterwards, anywhere: ``storagecarbon report DIR/<run>/trace.arrows``. ``--lanes "0;1"`` runs two queues
side by side, one GPU each (``CUDA_VISIBLE_DEVICES``). ``DIR/serve.json``: every run's command, exit code, wall.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from vllm_matrix import instance_scenario, machine, scenario_for_workload  # noqa: E402


def run_one(name: str, out: Path, gpu: str, port: int, a: argparse.Namespace) -> dict[str, Any]:
    from storagecarbon.engines.vllm_gpu import serve_argv
    from storagecarbon.scenario import Scenario

    d = out / (name + a.tag)
    d.mkdir(parents=True, exist_ok=True)
    base = instance_scenario(name, len(gpu.split(",")))
    w = {"max_tokens": a.output, "passes": 2, "generator": {"num_requests": a.requests,
                                                             "shared_prefix_tokens": a.prefix,
                                                             "suffix_tokens": a.prompt - a.prefix, "seed": 0}}
    sd = scenario_for_workload(base, w)
    sd["name"] = f"serve-{name}"
    (d / "scenario.yaml").write_text(yaml.safe_dump(sd, sort_keys=False))
    scn = Scenario.model_validate(sd)
    server, env = serve_argv(scn, d / "work", port=port, python=sys.executable)
    server += a.serve_extra.split()
    load = [sys.executable, "-m", "storagecarbon.engines.loadgen", "--requests", str(a.requests),
            "--prompt-tokens", str(a.prompt), "--shared-prefix", str(a.prefix), "--output-tokens", str(a.output),
            "--concurrency", str(a.concurrency), "--passes", "2", "--reset-prefix-cache", "--ready-timeout", "400",
            "--result", str(d / "load.json"), "--"]
    cmd = [sys.executable, "-m", "storagecarbon", "record", "--scenario", str(d / "scenario.yaml"), "--hz", str(a.hz),
           "--out", str(d / "trace.arrows"), "--disk-path", str(d), "--timeout", str(a.timeout), "--"] + load + server
    env = {**os.environ, **env, "CUDA_VISIBLE_DEVICES": gpu}
    t0 = time.time()
    with open(d / "log.txt", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d,
                            timeout=a.timeout + 120).returncode
    return {"name": name, "gpu": gpu, "port": port, "rc": rc, "wall_s": time.time() - t0, "command": cmd,
            "env": {k: v for k, v in env.items() if k.startswith(("VLLM_", "CUDA_VISIBLE"))}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--runs", default="l8b-native,l8b-lmcache")
    ap.add_argument("--hz", type=float, default=20.0, help="the recorder's sampling rate")
    ap.add_argument("--lanes", default="0;1")
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--prefix", type=int, default=1536)
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=420)
    ap.add_argument("--serve-extra", default="", help="extra flags for vllm serve, e.g. '--enforce-eager'")
    ap.add_argument("--port-base", type=int, default=8011)
    ap.add_argument("--tag", default="", help="suffix of each run's folder name (variants of one run)")
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    lanes = a.lanes.split(";")
    names = [n for n in a.runs.split(",") if n]
    res: list[dict[str, Any]] = []

    def lane(k: int) -> None:
        for j, n in enumerate(names[k::len(lanes)]):
            try:
                res.append(run_one(n, out, lanes[k], a.port_base + k + 10 * j, a))
            except Exception as exc:  # noqa: BLE001
                res.append({"name": n, "error": f"{type(exc).__name__}: {exc}"})

    ths = [threading.Thread(target=lane, args=(k,)) for k in range(len(lanes))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    (out / "serve.json").write_text(json.dumps({"machine": machine(), "runs": res, "command": " ".join(sys.argv)},
                                               indent=1))
    for r in res:
        print(r.get("name"), r.get("rc"), round(r.get("wall_s", 0)), r.get("error", ""))
    return 0 if all(r.get("rc") == 0 for r in res) else 1


if __name__ == "__main__":
    raise SystemExit(main())
