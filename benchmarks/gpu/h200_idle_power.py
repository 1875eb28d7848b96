"""H200 idle power from the committed vLLM load traces: NVML energy over each engine start's `import`
phase (vLLM and torch being imported: no CUDA context on the GPU yet, so the GPU idles).

    python benchmarks/gpu/h200_idle_power.py
"""
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from storagecarbon.trace import read_trace  # noqa: E402

out = []
for p in sorted((ROOT / "benchmarks/gpu/results/2026-11-30-vllm/traces").glob("*__load.arrows.gz")):
    with tempfile.NamedTemporaryFile(suffix=".arrows") as f:
        f.write(gzip.open(p).read())
        f.flush()
        t = read_trace(f.name)
    m = {(ev, name): ts for ts, ev, name in t.markers}
    t0, t1 = m.get(("phase_start", "import")), m.get(("phase_end", "import"))
    for d in t.header.devices:
        if d.tier != "hbm" or t0 is None or t1 is None:
            continue
        s = t.series(d.id, "energy_j")
        if s is None or len(s[0]) < 2:
            continue
        w = (np.interp(t1, *s) - np.interp(t0, *s)) / (t1 - t0)
        out.append(w)
        print(f"{p.name:40s} {d.id} import {t1 - t0:5.1f} s  idle {w:6.1f} W")
a = np.asarray(out)
print(f"n={a.size} min {a.min():.1f} median {np.median(a):.1f} max {a.max():.1f} W")
