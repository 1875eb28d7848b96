"""The project's load generator for a served vLLM (OpenAI-compatible ``/v1/completions``).

    python -m storagecarbon.engines.loadgen [options] -- vllm serve MODEL --port 8011 ...
    python -m storagecarbon.engines.loadgen [options] --url http://127.0.0.1:8011   # a server already up

With a server command after ``--`` it starts the server (its own process group), waits for
``/health``, sends the load, then stops the server (SIGTERM to it, SIGKILL to its group after ``--stop-grace``) and
exits with the load's status (the server stays up ``--linger`` s after the load, so a recorder's
last scrape of ``/metrics`` sees the final counters): 0 when every request succeeded, 1 when some failed, 3 when the server
died or never became ready. Under ``storagecarbon record`` it marks, through
``$STORAGECARBON_MARKERS`` (:func:`storagecarbon.record.recorder.emit_marker`), the serving phases the
report uses: ``server_ready`` (``/health`` answered), ``load_start`` / ``load_end`` (first request
sent / last answer received, after vLLM's request counter has caught up; ``bench_end`` after ``vllm bench serve``)
and ``server_stop``. The recorder reads every source again after ``load_end`` / ``bench_end`` (it reads markers
within 1.2 s), so ``--linger`` (2 s) must stay above that for the final counters to be scraped.

Prompts are token ids (exact lengths): ``--shared-prefix`` tokens common to every request, then
``--prompt-tokens - shared`` distinct ones (the same generator as the offline engine runs,
:func:`storagecarbon.engines.vllm_worker.generate_prompt_token_ids`), ``--output-tokens`` generated
with ``ignore_eos`` at temperature 0, ``--concurrency`` requests in flight. ``--passes 2
--reset-prefix-cache`` replays the same prompts after resetting vLLM's own prefix cache (``POST
/reset_prefix_cache``, needs ``VLLM_SERVER_DEV_MODE=1`` on the server), so a KV connector
(LMCache, offloading) serves the second pass. Only loopback URLs are accepted.

``--bench "ARGS"`` sends vLLM's own benchmark instead (``vllm bench serve --base-url URL --model M
ARGS``, e.g. ``--bench "--dataset-name random --random-input-len 128 --num-prompts 16"``); its exit
code is the load's, and the serving window comes from the engine's activity instead of markers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from ..record.recorder import emit_marker
from ..record.launch import kill_group, start_group

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
EXIT_FAILED_REQUESTS = 1
EXIT_SERVER = 3


def _post(url: str, body: dict[str, Any] | None, timeout_s: float) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _get(url: str, timeout_s: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_ready(base: str, timeout_s: float, alive: Any = None) -> float | None:
    """Poll ``base/health`` until 200; the time it answered, or None (timeout or ``alive()`` False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if _get(f"{base}/health", 1.0) == 200:
            return time.time()
        if alive is not None and not alive():
            return None
        time.sleep(0.2)
    return None


def served_model(base: str) -> str:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())["data"][0]["id"]


def vocab_size(model: str) -> int:
    """Vocabulary size from a local model directory's config.json (32000 when unknown)."""
    try:
        with open(os.path.join(model, "config.json")) as f:
            return int(json.load(f)["vocab_size"])
    except (OSError, ValueError, KeyError):
        return 32000


def _requests_done(base: str) -> float | None:
    from ..record.sensors.vllm_metrics import NOT_SERVED, REQUESTS_METRIC, metric_sum, parse_prometheus

    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:  # noqa: S310 - loopback only
            s = parse_prometheus(r.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return metric_sum(s, REQUESTS_METRIC, exclude={"finished_reason": NOT_SERVED})


def run_load(base: str, *, requests: int, prompt_tokens: int, shared_prefix: int, output_tokens: int,
             concurrency: int, passes: int = 1, reset_prefix_cache: bool = False, seed: int = 0,
             timeout_s: float = 120.0) -> dict[str, Any]:
    from .vllm_worker import generate_prompt_token_ids

    model = served_model(base)
    prompts = generate_prompt_token_ids({"num_requests": requests, "shared_prefix_tokens": shared_prefix,
                                         "suffix_tokens": max(0, prompt_tokens - shared_prefix), "seed": seed},
                                        vocab_size(model))

    def one(ids: list[int]) -> dict[str, Any]:
        t0 = time.monotonic()
        body = {"model": model, "prompt": ids, "max_tokens": output_tokens, "temperature": 0.0,
                "ignore_eos": True}
        try:
            code, raw = _post(f"{base}/v1/completions", body, timeout_s)
        except (urllib.error.URLError, OSError) as e:
            return {"ok": False, "error": str(e), "latency_s": time.monotonic() - t0}
        if code != 200:
            return {"ok": False, "error": f"HTTP {code}: {raw[:200]!r}", "latency_s": time.monotonic() - t0}
        usage = json.loads(raw).get("usage") or {}
        return {"ok": True, "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"), "latency_s": time.monotonic() - t0}

    before = _requests_done(base)
    out: dict[str, Any] = {"model": model, "passes": []}
    emit_marker("load_start", f"{requests}x{passes}")
    t_start = time.time()
    for p in range(passes):
        if p > 0 and reset_prefix_cache:
            code, raw = _post(f"{base}/reset_prefix_cache", None, 30)
            if code != 200:
                raise RuntimeError(f"POST /reset_prefix_cache answered HTTP {code} (start the server with "
                                   f"VLLM_SERVER_DEV_MODE=1): {raw[:120]!r}")
        tp = time.time()
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex:
            res = list(ex.map(one, prompts))
        out["passes"].append({"start_unix": tp, "end_unix": time.time(), "ok": sum(r["ok"] for r in res),
                              "failed": sum(not r["ok"] for r in res),
                              "errors": sorted({r["error"] for r in res if not r["ok"]})[:3],
                              "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in res),
                              "completion_tokens": sum(r.get("completion_tokens") or 0 for r in res)})
    # vLLM updates its counters after the answer is sent: wait (<= 5 s) until they show every request
    sent_ok = sum(p["ok"] for p in out["passes"])
    if before is not None:
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            now = _requests_done(base)
            if now is not None and now - before >= sent_ok:
                break
            time.sleep(0.05)
    t_end = time.time()
    emit_marker("load_end", f"{sent_ok} ok")
    out.update({"start_unix": t_start, "end_unix": t_end, "ok": sent_ok,
                "failed": sum(p["failed"] for p in out["passes"])})
    return out


def run_bench(base: str, args: str) -> int:
    """``vllm bench serve`` against ``base``; its exit code. No load markers: the benchmark spends
    seconds importing before its first request, so the serving window comes from the engine's own
    activity (the stat-logger plugin's first and last step with tokens, or vLLM's counters)."""
    import shlex
    import shutil

    here = os.path.join(os.path.dirname(sys.executable), "vllm")
    exe = here if os.path.exists(here) else (shutil.which("vllm") or "vllm")
    cmd = [exe, "bench", "serve", "--base-url", base, "--model", served_model(base), *shlex.split(args)]
    return subprocess.call(cmd, stdin=subprocess.DEVNULL)


def _check_loopback(url: str) -> str:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"loadgen: refusing non-loopback URL {url} (only 127.0.0.1/::1/localhost)")
    return url.rstrip("/")


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM to the server alone (vLLM then shuts its engine down in order), SIGKILL to its whole
    group after ``grace_s``."""
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return kill_group(proc)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server_cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_cmd = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m storagecarbon.engines.loadgen",
                                 description="Load a served vLLM through /v1/completions; see the module docstring.")
    ap.add_argument("--url", help="server base URL (default: from the server command's --host/--port)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--shared-prefix", type=int, default=0, help="tokens common to every prompt")
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--reset-prefix-cache", action="store_true", help="reset vLLM's prefix cache between passes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="s to wait for /health")
    ap.add_argument("--stop-grace", type=float, default=20.0, help="s between SIGTERM and SIGKILL of the server")
    ap.add_argument("--linger", type=float, default=2.0,
                    help="s to keep the server up after the load, so a recorder scrapes its final counters")
    ap.add_argument("--result", help="write the load's result JSON here")
    ap.add_argument("--bench", metavar="ARGS", help="run `vllm bench serve --base-url URL --model M ARGS` as the load")
    a = ap.parse_args(argv)
    if a.url:
        base = _check_loopback(a.url)
    elif server_cmd:
        from .vllm_serve import find_served

        served = find_served(server_cmd)
        if served is None:
            print("loadgen: no `vllm serve` in the server command; pass --url", file=sys.stderr)
            return 2
        base = _check_loopback(served.base_url)
    else:
        ap.error("give --url or a server command after --")
    proc = None
    if server_cmd:
        proc = start_group(server_cmd)
    rc = 0
    try:
        if wait_ready(base, a.ready_timeout, alive=(lambda: proc.poll() is None) if proc else None) is None:
            why = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None \
                else f"not ready after {a.ready_timeout:g} s"
            print(f"loadgen: server at {base} {why}", file=sys.stderr)
            return EXIT_SERVER
        emit_marker("server_ready", base)
        if a.bench is not None:
            rc = run_bench(base, a.bench)
            emit_marker("bench_end", f"exit {rc}")   # a phase marker: a recorder reads every source again
            return rc
        res = run_load(base, requests=a.requests, prompt_tokens=a.prompt_tokens, shared_prefix=a.shared_prefix,
                       output_tokens=a.output_tokens, concurrency=a.concurrency, passes=a.passes,
                       reset_prefix_cache=a.reset_prefix_cache, seed=a.seed)
        if a.result:
            with open(a.result, "w") as f:
                json.dump(res, f, indent=1)
        print(f"loadgen: {res['ok']} requests ok, {res['failed']} failed in {res['end_unix'] - res['start_unix']:.2f} s",
              file=sys.stderr)
        if res["failed"]:
            for p in res["passes"]:
                for e in p["errors"]:
                    print(f"loadgen: error: {e}", file=sys.stderr)
            rc = EXIT_FAILED_REQUESTS
        if proc is not None and proc.poll() is not None:
            print(f"loadgen: the server exited early with {proc.returncode}", file=sys.stderr)
            rc = EXIT_SERVER
    except RuntimeError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        rc = EXIT_SERVER
    finally:
        if proc is not None and proc.poll() is None:
            time.sleep(max(0.0, a.linger))
            emit_marker("server_stop", "SIGTERM")
            _stop(proc, a.stop_grace)
    return rc


if __name__ == "__main__":
    sys.exit(main())
