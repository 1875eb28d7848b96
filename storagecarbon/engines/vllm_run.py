"""Launcher recorded by `profile` (engine vllm): runs one workload through
:func:`storagecarbon.engines.vllm_cpu.run_vllm_workload`, which owns the engine's process group,
timeout and cleanup, and publishes LMCache taps where the recorder looks for them.

    python -m storagecarbon.engines.vllm_run --spec SPEC.json --result RESULT.json --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..errors import EngineError
from .vllm_cpu import run_vllm_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storagecarbon.engines.vllm_run")
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    env = {}
    if os.environ.get("STORAGECARBON_TAP_DIR"):
        env["STORAGECARBON_TAP_DIR"] = os.environ["STORAGECARBON_TAP_DIR"]
    try:
        res = run_vllm_workload(json.loads(a.spec.read_text()), a.workdir, timeout_s=a.timeout, env=env)
    except EngineError as exc:
        print(f"storagecarbon: error: {exc}", file=sys.stderr)
        return 3
    produced = a.workdir / "result.json"
    if produced.resolve() != a.result.resolve():
        shutil.copyfile(produced, a.result)
    del res
    return 0


if __name__ == "__main__":
    sys.exit(main())
