"""CPU of one wait of a 10-Hz sampling thread: what a recorder pays per tick before it reads anything.

    python benchmarks/recorder_wake_cost.py [--burners 2] [--n 100]

Times ``time.thread_time()`` over ``n`` waits of 0.1 s with each primitive the recorder could sleep in, while
``--burners`` busy processes keep the cores loaded (as a serving engine does). The recorder sleeps with
``time.sleep`` when its next tick is at most ``recorder.SLEEP_MAX_S`` away (storagecarbon/record/recorder.py).
"""
from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    burn = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.burners)]
    ev, lk = threading.Event(), threading.Lock()
    lk.acquire()
    r, _w = os.pipe()
    waits = {"time.sleep": time.sleep, "Lock.acquire": lambda d: lk.acquire(True, d), "Event.wait": ev.wait,
             "select": lambda d: select.select([r], [], [], d)}
    try:
        print(f"{os.cpu_count()} CPUs, {a.burners} busy processes, {a.n} waits of 0.1 s each:")
        for name, fn in waits.items():
            c0 = time.thread_time()
            for _ in range(a.n):
                fn(0.1)
            print(f"  {name:14s} {(time.thread_time() - c0) / a.n * 1e6:6.1f} µs of CPU per wait")
    finally:
        for p in burn:
            p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
