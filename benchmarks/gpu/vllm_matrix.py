"""The measured vLLM GPU matrix: real vLLM (0.26 pack) with KV and weight offload, recorded per workload.

    python benchmarks/gpu/vllm_matrix.py --out DIR --instances l8b-hbm,l70b40-native ... \
        [--lanes 0;1] [--budget-s 500]

An *instance* is one engine start (model shape x offload mode, :data:`MODES`); it runs the
workloads of :data:`WORKLOADS` (batch x prompt x shared prefix x output, two passes: the second
after ``reset_prefix_cache()``, so that the shared prefixes come back from the offload tier and not
from HBM; LMCache instances run a third pass after dropping the page cache: cold disk reads).
Each workload is one trace (``DIR/traces/<instance>__<workload>.arrows.gz``), each engine start
its own (``...__load.arrows.gz``). ``--lanes "0;1"`` runs two queues of instances side by side,
one per GPU (``"0,1"``: one lane with both GPUs, for tensor parallelism); an instance is started
only while ``--budget-s`` seconds remain (the rest is listed as not run). ``DIR/matrix.json``:
every instance (settings, wall, errors) and the machine.
"""

from __future__ import annotations

import argparse
import copy
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BASE = {
    "hardware": {"gpu": {"device": "h200-sxm-141gb", "count": 1},
                 "host": {"device": "server-base-generic", "count": 1},
                 "dram": {"device": "ddr5-rdimm-per-gb", "count": 128},
                 "ssd": {"device": "virtio-disk-standin", "count": 1}},
    "model": {"preset": "llama-3-8b", "weight_dtype": "bf16", "kv_dtype": "bf16"},
    "placement": {"gpu_memory_utilization": 0.90},
    "workload": {"requests": 1, "prompt_tokens": {"mean": 512}, "output_tokens": {"mean": 64}, "seed": 0},
    "engine": {"kind": "vllm", "max_num_seqs": 128, "max_num_batched_tokens": 8192, "block_size": 16,
               "max_model_len": 10240, "sample_hz": 20, "timeout_s": 900},
    "carbon": {"region": "world", "pue": "hyperscale", "allocation": "max", "draws": 500, "seed": 0},
}
SHAPES = {
    "l8b": {"preset": "llama-3-8b"},
    "l70b40": {"preset": "llama-3-70b", "truncated_layers": 40},
    "l70b80": {"preset": "llama-3-70b"},
}
HBM_KV_GB = 12.0   # offload modes: HBM KV (and prefix cache) capped, so shared prefixes overflow it
MODES: dict[str, dict[str, Any]] = {
    "hbm": {},
    "native": {"kv": {"hbm_gb": HBM_KV_GB, "backend": "native", "local_cpu": {"size_gb": 48}}},
    "lmcache": {"kv": {"hbm_gb": HBM_KV_GB, "backend": "lmcache", "chunk_size": 256,
                       "local_cpu": {"size_gb": 4}, "local_disk": {"size_gb": 80, "path": "lmcache-disk"}}},
    "weights": {"weights": {"l8b": 0.25, "l70b40": 0.10, "l70b80": 0.05}},
}
# (label, batch, prompt, shared prefix, output)
WORKLOADS = [("b1_p512", 1, 512, 0, 128), ("b8_p2048", 8, 2048, 1536, 64), ("b32_p1024", 32, 1024, 768, 64),
             ("b128_p512", 128, 512, 384, 32), ("b4_p8192", 4, 8192, 6144, 32)]


def instance_scenario(name: str, n_gpu: int) -> dict[str, Any]:
    shape, mode = name.split("-", 1)
    d = copy.deepcopy(BASE)
    d["name"] = name
    d["model"].update(SHAPES[shape])
    d["hardware"]["gpu"]["count"] = n_gpu
    m = MODES[mode]
    if "kv" in m:
        d["placement"]["kv"] = copy.deepcopy(m["kv"])
    if "weights" in m:
        f = m["weights"][shape]
        d["placement"]["weights"] = {"hbm": round(1 - f, 6), "dram": f}
    return d


def workloads_for(name: str) -> list[dict[str, Any]]:
    mode = name.split("-", 1)[1]
    out = []
    for label, b, p, pre, o in WORKLOADS:
        if mode == "weights":
            o = min(o, 32)
        w = {"label": label, "max_tokens": o, "passes": 3 if mode == "lmcache" else 2,
             "reset_between_passes": True, "generator": {"num_requests": b, "shared_prefix_tokens": pre,
                                                         "suffix_tokens": p - pre, "seed": 0}}
        if mode == "lmcache":
            w["drop_cache_before"] = [3]
        out.append(w)
    return out


def scenario_for_workload(base: dict[str, Any], w: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(base)
    g = w["generator"]
    d["workload"] = {"requests": g["num_requests"], "passes": w["passes"],
                     "prompt_tokens": {"mean": g["shared_prefix_tokens"] + g["suffix_tokens"]},
                     "output_tokens": {"mean": w["max_tokens"]},
                     "shared_prefix": {"tokens": g["shared_prefix_tokens"], "fraction": 1.0 if g["shared_prefix_tokens"] else 0.0},
                     "seed": g["seed"]}
    d["engine"] = dict(d["engine"], max_num_seqs=max(g["num_requests"], 1))
    return d


def run_one(name: str, out: Path, gpus: list[int]) -> dict[str, Any]:
    from storagecarbon.devicedb import DeviceDB
    from storagecarbon.engines.vllm_gpu import run_instance
    from storagecarbon.scenario import Scenario

    base = instance_scenario(name, len(gpus))
    base["engine"]["max_num_seqs"] = 128
    scn = Scenario.model_validate(base)
    wls = workloads_for(name)
    t0 = time.time()
    res = run_instance(scn, wls, out / "runs" / name, db=DeviceDB.load(), progress=lambda s: print(f"[{name}] {s}", flush=True),
                       scenario_for=lambda w: Scenario.model_validate(scenario_for_workload(base, w)),
                       gpu_indices=gpus, timeout_s=900)
    tr = out / "traces"
    tr.mkdir(parents=True, exist_ok=True)
    for label, p in res["traces"].items():
        with open(p, "rb") as fi, gzip.open(tr / f"{name}__{label}.arrows.gz", "wb", compresslevel=9) as fo:
            shutil.copyfileobj(fi, fo)
    return {"name": name, "gpus": gpus, "wall_s": time.time() - t0, "traces": sorted(res["traces"]),
            "engine": res["result"].get("engine"), "versions": res["result"].get("versions"),
            "load_s": res["result"].get("load_s"), "scenario": base}


def machine() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception as exc:  # noqa: BLE001
            return f"({exc})"
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(), "platform": platform.platform(),
            "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "nvidia_smi": sh("nvidia-smi --query-gpu=index,name,memory.total,power.limit,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv"),
            "lscpu": sh("lscpu | head -20"), "mem": sh("free -g"), "disks": sh("lsblk -o NAME,SIZE,ROTA,MODEL"),
            "pip": sh(f"{sys.executable} -c 'import vllm,torch; print(vllm.__version__, torch.__version__)'")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--instances", default="")
    ap.add_argument("--lanes", default="0", help='";"-separated GPU sets, e.g. "0;1" or "0,1"')
    ap.add_argument("--budget-s", type=float, default=520)
    ap.add_argument("--one", default=None)
    ap.add_argument("--gpus", default="0")
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if a.one:
        gpus = [int(x) for x in a.gpus.split(",")]
        try:
            r = run_one(a.one, out, gpus)
        except Exception as exc:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            r = {"name": a.one, "gpus": gpus, "error": f"{type(exc).__name__}: {exc}"[:3000]}
        (out / "instances").mkdir(exist_ok=True)
        (out / "instances" / f"{a.one}.json").write_text(json.dumps(r, indent=1))
        return 0 if "error" not in r else 1
    t_end = time.time() + a.budget_s
    lanes = [[int(x) for x in lane.split(",")] for lane in a.lanes.split(";")]
    names = [n for n in a.instances.split(",") if n]
    queues: list[list[str]] = [[] for _ in lanes]
    for i, n in enumerate(names):
        queues[i % len(lanes)].append(n)
    not_run: list[str] = []
    est = {"l8b": 110, "l70b40": 150, "l70b80": 220}

    def lane(k: int) -> None:
        for n in queues[k]:
            if time.time() + est.get(n.split("-")[0], 150) > t_end:
                not_run.append(n)
                continue
            with open(out / f"log_{n}.txt", "w") as log:
                subprocess.run([sys.executable, __file__, "--out", str(out), "--one", n, "--gpus",
                                ",".join(map(str, lanes[k]))], stdout=log, stderr=subprocess.STDOUT,
                               timeout=max(30, t_end - time.time() + 60))
    ths = [threading.Thread(target=lane, args=(k,)) for k in range(len(lanes))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    insts = [json.loads(p.read_text()) for p in sorted((out / "instances").glob("*.json"))] \
        if (out / "instances").exists() else []
    (out / "matrix.json").write_text(json.dumps({"machine": machine(), "instances": insts, "not_run": not_run,
                                                 "command": " ".join(sys.argv)}, indent=1))
    print("not run:", not_run)
    for i in insts:
        print(i["name"], "ERROR " + i["error"][-400:] if "error" in i else f"ok {i['wall_s']:.0f}s load {i.get('load_s', 0):.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
