"""What one trace flush costs, piece by piece, per Arrow memory pool (the recorder flushes once a second).

    python benchmarks/gpu/arrow_flush_cost.py [--n 20] [--rows 30] [--out F.json]

Each flush (after a 0.1 s sleep, as in the recorder): build the four columns from Python lists (``pa.array``),
the record batch, ``write_batch`` to an IPC stream on a file, and the file's ``flush``; each timed with
``time.thread_time()``. Repeated for every memory pool pyarrow has here (jemalloc, mimalloc, system).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storagecarbon.trace import SCHEMA  # noqa: E402


def one_pool(pool: pa.MemoryPool, n: int, rows: int) -> dict[str, float]:
    pa.set_memory_pool(pool)
    parts: dict[str, list[float]] = {"arrays": [], "batch": [], "write_batch": [], "file_flush": []}
    with tempfile.TemporaryDirectory() as d:
        f = open(os.path.join(d, "t.arrows"), "wb")
        w = pa.ipc.new_stream(f, SCHEMA)
        for k in range(n):
            time.sleep(0.1)
            t = [k + 0.01 * i for i in range(rows)]
            c = list(range(rows))
            v = [float(i) for i in range(rows)]
            lab = [None] * rows
            c0 = time.thread_time()
            arrs = [pa.array(t, pa.float64()), pa.array(c, pa.int32()), pa.array(v, pa.float64()),
                    pa.array(lab, pa.string())]
            c1 = time.thread_time()
            b = pa.record_batch(arrs, schema=SCHEMA)
            c2 = time.thread_time()
            w.write_batch(b)
            c3 = time.thread_time()
            f.flush()
            c4 = time.thread_time()
            for key, x in zip(parts, (c1 - c0, c2 - c1, c3 - c2, c4 - c3)):
                parts[key].append(x)
        w.close()
        f.close()
    return {k: round(statistics.median(v) * 1e6, 1) for k, v in parts.items()} | {
        "total_median_us": round(statistics.median([sum(x) for x in zip(*parts.values())]) * 1e6, 1),
        "total_max_us": round(max(sum(x) for x in zip(*parts.values())) * 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--out")
    a = ap.parse_args()
    out: dict[str, object] = {"pyarrow": pa.__version__, "default_pool": pa.default_memory_pool().backend_name,
                              "cpu_count": pa.cpu_count(), "io_thread_count": pa.io_thread_count()}
    pools = {"default": pa.default_memory_pool()}
    for name in ("jemalloc_memory_pool", "mimalloc_memory_pool", "system_memory_pool"):
        try:
            pools[name.replace("_memory_pool", "")] = getattr(pa, name)()
        except Exception as exc:  # noqa: BLE001 - a pool this build lacks
            out[name] = f"unavailable: {exc}"
    for name, pool in pools.items():
        out[name] = one_pool(pool, a.n, a.rows)
        print(name, json.dumps(out[name]), flush=True)
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict)}))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
