"""LMCache on the vLLM CPU backend: a paged-KV connector shim plus exact per-tier byte taps.

This module is the ``vllm.general_plugins`` entry point ``storagecarbon_lmcache_cpu``
(declared in pyproject.toml). vLLM calls :func:`register` in every process it starts
(driver, EngineCore, workers). It does nothing unless ``STORAGECARBON_LMCACHE_CPU=1``.

When enabled it installs a *lazy* ``sys.meta_path`` hook. Importing lmcache eagerly from
``register()`` breaks vLLM worker start (see docs/engines.md), so the hook only acts when
vLLM itself imports these lmcache modules:

* ``lmcache.v1.gpu_connector``: ``CreateGPUConnector`` is wrapped. LMCache 0.5.6 has no
  connector for ``torch_device_type == "cpu"`` and raises ``No supported cpu connector
  found``; in that case the wrapper returns :class:`CPUPagedConnector` (built on LMCache's
  ``MockGPUConnector``), which gathers/scatters KV between LMCache ``KV_2LTD`` memory
  objects ``[2, layers, tokens, kv_heads*head_size]`` and vLLM-CPU's paged cache through
  ``slot_mapping``.
* ``lmcache.v1.storage_backend.local_cpu_backend`` / ``local_disk_backend``: byte taps.

vLLM-CPU paged KV layout (per layer): ``[num_blocks, kv_heads, block_size, 2*head_size]``.
For one (block, head) the ``2*block_size*head_size`` elements hold K *transposed*
(``[head_size, block_size]``, element (tok, d) at ``d*block_size + tok``) followed by V as
rows (``[block_size, head_size]``, at ``block_size*head_size + tok*head_size + d``); this was
measured with ``vllm._custom_ops.cpu_attn_reshape_and_cache`` (ISA "vec"). The connector does
not hard-code it: at first use it probes the layout by running that same vLLM op on a scratch
block, so it follows whatever the installed kernel writes.

Byte taps (cumulative, per process; :data:`COUNTERS`):
``cpu_bytes_written``/``cpu_bytes_read`` (LocalCPUBackend admits / serves a chunk),
``disk_bytes_written``/``disk_bytes_read`` (``LocalDiskBackend.write_file``/``read_file``;
exact buffer lengths), ``remote_bytes_*`` (always 0: no remote tier is tapped yet),
``bytes_d2h``/``bytes_h2d`` (bytes copied out of / into the paged cache by the connector),
``stored_tokens`` (tokens gathered for storing, as LMCache's ``Stored N tokens``) and
``hit_tokens`` (tokens LMCache retrieved into vLLM, as ``Retrieved N tokens``).
If ``STORAGECARBON_TAP_DIR`` is set they are published to
``$STORAGECARBON_TAP_DIR/lmcache-<pid>.json`` (tmp file + ``os.replace``) at most every
0.1 s while they change, and at exit; the counters also go to ``lmcache-<pid>.counters``, a page updated
in place that the recorder reads without a system call (:mod:`storagecarbon.engines.tap_page`).
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
import threading
import time
from typing import Any

from . import tap_page

ENV_ENABLE = "STORAGECARBON_LMCACHE_CPU"
ENV_TAP_DIR = "STORAGECARBON_TAP_DIR"
# Test-only negative control: overwrite every KV chunk LMCache loads with noise.
ENV_CORRUPT = "STORAGECARBON_LMCACHE_CPU_CORRUPT_LOADS"
TAP_SCHEMA_KEYS = tap_page.KEYS
PUBLISH_INTERVAL_S = 0.1


def _info(msg: str, *args) -> None:
    """One-line notices on stderr (vLLM/LMCache logs go there too; no logging setup needed)."""
    try:
        sys.stderr.write(f"[storagecarbon pid={os.getpid()}] " + (msg % args if args else msg) + "\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------------------
# Counters + publisher
# --------------------------------------------------------------------------------------
class TapCounters:
    """Thread-safe cumulative counters with a throttled JSON publisher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: dict[str, int] = {k: 0 for k in TAP_SCHEMA_KEYS}
        self.disk_path: str | None = None
        self.chunk_size: int | None = None
        self._dirty = False
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()  # serialises snapshot + replace (no stale overwrite)
        self._atexit = False
        self._page: tap_page.PageWriter | None = None   # lmcache-<pid>.counters (this process's)
        self._meta = 0                                   # metadata generation (disk path, chunk size)
        self._page_failed = False

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._c = {k: 0 for k in TAP_SCHEMA_KEYS}
        self._dirty = False
        self._thread = None
        self._atexit = False
        self._page = None   # the parent's page stays the parent's: this process writes its own
        self._meta = 0
        self._page_failed = False

    def add(self, name: str, n: int) -> None:
        if n == 0:
            return
        with self._lock:
            self._c[name] += int(n)
            self._dirty = True
        self._ensure_publisher()

    def set_info(self, *, disk_path: str | None = None, chunk_size: int | None = None) -> None:
        with self._lock:
            if disk_path is not None:
                self.disk_path = disk_path
            if chunk_size is not None:
                self.chunk_size = int(chunk_size)
            self._meta += 1
            self._dirty = True
        self._ensure_publisher()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"pid": os.getpid(), "time_unix": time.time(), "counters": dict(self._c),
                    "disk_path": self.disk_path, "chunk_size": self.chunk_size}

    def reset(self) -> None:
        with self._lock:
            self._c = {k: 0 for k in TAP_SCHEMA_KEYS}
            self._dirty = True

    # -- publishing -------------------------------------------------------------------
    @staticmethod
    def tap_path() -> str | None:
        d = os.environ.get(ENV_TAP_DIR)
        return os.path.join(d, f"lmcache-{os.getpid()}.json") if d else None

    def flush(self, force: bool = False) -> str | None:
        """Write the snapshot now (if a tap dir is configured and this process recorded
        anything, or ``force``); return the path written."""
        path = self.tap_path()
        if path is None or not (force or self._thread is not None):
            return None
        with self._write_lock:
            with self._lock:
                self._dirty = False
            snap = self.snapshot()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(snap, f, sort_keys=True)
            os.replace(tmp, path)
            if not self._page_failed:
                try:   # after the JSON: a reader that finds the page's metadata new reads a JSON at least as new
                    if self._page is None or self._page.path != tap_page.page_path(path):
                        self._page = tap_page.PageWriter(tap_page.page_path(path))
                    self._page.write([float(snap["counters"][k]) for k in TAP_SCHEMA_KEYS], self._meta)
                except (OSError, ValueError) as exc:   # the JSON still carries the counters
                    self._page_failed = True
                    _info("tap counters page not written (the JSON tap still is): %s", exc)
        return path

    def _ensure_publisher(self) -> None:
        if self._thread is not None or not os.environ.get(ENV_TAP_DIR):
            return
        with self._lock:
            if self._thread is not None:
                return
            t = threading.Thread(target=self._run, name="storagecarbon-tap", daemon=True)
            self._thread = t
            if not self._atexit:
                atexit.register(self._flush_quiet)
                self._atexit = True
        t.start()

    def _flush_quiet(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - never raise at exit
            pass

    def _run(self) -> None:
        while True:
            time.sleep(PUBLISH_INTERVAL_S)
            if self._dirty:
                self._flush_quiet()


COUNTERS = TapCounters()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=COUNTERS._reset_after_fork)


def snapshot() -> dict[str, Any]:
    """Cumulative counters of this process (the tap-file schema)."""
    return COUNTERS.snapshot()


def flush(force: bool = False) -> str | None:
    return COUNTERS.flush(force)


# --------------------------------------------------------------------------------------
# vLLM-CPU paged-KV layout
# --------------------------------------------------------------------------------------
def _analytic_positions(block_size: int, head_size: int):
    """Element offsets inside one (block, head) region, ISA "vec" layout (measured)."""
    import torch

    tok = torch.arange(block_size, dtype=torch.long)[:, None]
    d = torch.arange(head_size, dtype=torch.long)[None, :]
    pos_k = d * block_size + tok
    pos_v = block_size * head_size + tok * head_size + d
    return pos_k, pos_v


def _probe_positions(block_size: int, head_size: int, dtype, isa: str):
    """Run vLLM's own cache-write op on one scratch block and read back where each
    (token, dim) element of K and V lands. Returns (pos_k, pos_v), each [block_size, head_size]."""
    import torch
    from vllm import _custom_ops as ops

    N, D = block_size, head_size
    region = 2 * N * D
    # Encode (kind, tok, d) as a flat id < region; write it base-64 digit by digit (exact in
    # bf16/fp16), one kernel call per digit.
    ids_k = (torch.arange(N)[:, None] * D + torch.arange(D)[None, :])  # [N, D], < N*D
    ids_v = ids_k + N * D
    ndig = 1
    while 64 ** ndig < region:
        ndig += 1
    decoded = torch.zeros(region, dtype=torch.long)
    slots = torch.arange(N, dtype=torch.long)
    for dig in range(ndig):
        cache = torch.full((1, 1, N, 2 * D), -1.0, dtype=dtype)
        kc, vc = cache.view(1, 1, 2 * N, D).chunk(2, dim=2)
        key = ((ids_k // 64 ** dig) % 64).to(dtype)[:, None, :]  # [N, 1, D]
        val = ((ids_v // 64 ** dig) % 64).to(dtype)[:, None, :]
        ops.cpu_attn_reshape_and_cache(key, val, kc, vc, slots, isa,
                                       k_scale=1.0, v_scale=1.0, kv_cache_dtype="auto")
        flat = cache.reshape(-1).to(torch.float32)
        if bool((flat < 0).any()):
            raise RuntimeError("layout probe: some cache elements were not written")
        decoded += flat.to(torch.long) * 64 ** dig
    if not torch.equal(torch.sort(decoded).values, torch.arange(region)):
        raise RuntimeError("layout probe: cache region is not a permutation of K/V elements")
    inv = torch.empty(region, dtype=torch.long)
    inv[decoded] = torch.arange(region)
    pos_k = inv[ids_k]
    pos_v = inv[ids_v]
    return pos_k, pos_v


def _attn_isa(dtype, block_size: int, head_size: int) -> str:
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    return _get_attn_isa(dtype, block_size, head_size)


# --------------------------------------------------------------------------------------
# The connector
# --------------------------------------------------------------------------------------
def _make_connector_class():
    """Build the connector class lazily (its base class lives in lmcache)."""
    import torch
    from lmcache.v1.gpu_connector.mock_gpu_connector import MockGPUConnector
    from lmcache.v1.memory_management import MemoryFormat

    class CPUPagedConnector(MockGPUConnector):
        """LMCache GPU-connector interface over vLLM-CPU's paged KV cache (non-MLA, non-layerwise).

        Memory objects are ``KV_2LTD``: ``tensor[0]`` = K, ``tensor[1]`` = V, each
        ``[num_layers, num_tokens, kv_heads*head_size]``.
        """

        def __init__(self, kv_shape: tuple, kv_dtype=None):
            super().__init__(kv_shape=tuple(kv_shape))
            # kv_shape: (num_layers, 2, chunk_size, num_kv_heads, head_size)
            self.num_kv_heads = int(kv_shape[3])
            self.head_size = int(kv_shape[4])
            self.hidden_dim_size = self.num_kv_heads * self.head_size
            self.kv_dtype = kv_dtype
            self._layout_key: tuple | None = None
            self._pos_k = self._pos_v = None
            self.kvcaches = None

        # LMCache's base would permute "HND" tensors; vLLM-CPU tensors are used as-is.
        def initialize_kvcaches_ptr(self, **kwargs):
            if kwargs.get("kvcaches") is not None:
                self.kvcaches = kwargs["kvcaches"]

        def get_shape(self, num_tokens=None):
            if num_tokens is None:
                num_tokens = self.kv_shape[2]
            return torch.Size([2, self.num_layers, num_tokens, self.hidden_dim_size])

        # -- layout ---------------------------------------------------------------------
        def _layout(self):
            kv = self.kvcaches
            if kv is None or len(kv) == 0:
                raise RuntimeError("CPUPagedConnector: kvcaches were not provided")
            t0 = kv[0]
            if t0.dim() != 4:
                raise RuntimeError(f"CPUPagedConnector: unexpected KV tensor shape {tuple(t0.shape)}")
            nb, nh, bs, two_d = t0.shape
            key = (tuple(t0.shape), t0.dtype, len(kv))
            if key == self._layout_key:
                return self._pos_k, self._pos_v
            if len(kv) != self.num_layers or nh != self.num_kv_heads or two_d != 2 * self.head_size:
                raise RuntimeError(
                    f"CPUPagedConnector: KV tensors {len(kv)}x{tuple(t0.shape)} do not match "
                    f"LMCache kv_shape {self.kv_shape}")
            isa = "vec"
            try:
                isa = _attn_isa(t0.dtype, bs, self.head_size)
                pos_k, pos_v = _probe_positions(bs, self.head_size, t0.dtype, isa)
                source = f"probed (isa={isa})"
            except Exception as e:  # noqa: BLE001
                if isa != "vec":
                    raise RuntimeError(f"CPUPagedConnector: cannot determine the KV layout "
                                       f"for isa={isa}: {e}") from e
                pos_k, pos_v = _analytic_positions(bs, self.head_size)
                source = f"analytic (probe failed: {e})"
            ak, av = _analytic_positions(bs, self.head_size)
            _info("CPUPagedConnector: KV layout %s, %d layers, tensor %s, "
                     "matches measured vec layout: %s", source, len(kv), tuple(t0.shape),
                     bool(torch.equal(ak, pos_k) and torch.equal(av, pos_v)))
            self._pos_k, self._pos_v = pos_k, pos_v
            self._layout_key = key
            return pos_k, pos_v

        def _index(self, slots):
            """Advanced-index tuples into a [num_blocks, heads, 2*bs*hd] view for these slots."""
            pos_k, pos_v = self._layout()
            bs = self.kvcaches[0].shape[2]
            slots = slots.to(device="cpu", dtype=torch.long)
            b = torch.div(slots, bs, rounding_mode="floor")
            o = slots - b * bs
            h = torch.arange(self.num_kv_heads, dtype=torch.long)
            bi = b[:, None, None]
            hi = h[None, :, None]
            return (bi, hi, pos_k[o][:, None, :]), (bi, hi, pos_v[o][:, None, :])

        @staticmethod
        def _flat(t):
            nb, nh, bs, two_d = t.shape
            return t.view(nb, nh, bs * two_d)

        def _check(self, memory_obj, start, end, kwargs):
            assert memory_obj.tensor is not None
            self.initialize_kvcaches_ptr(**kwargs)
            if "slot_mapping" not in kwargs:
                raise ValueError("'slot_mapping' should be provided in kwargs.")
            slots = kwargs["slot_mapping"][start:end]
            if slots.numel() and int(slots.min()) < 0:
                raise ValueError("CPUPagedConnector: slot_mapping contains -1 inside [start, end)")
            return slots

        # -- transfers ------------------------------------------------------------------
        @torch.inference_mode()
        def from_gpu(self, memory_obj, start: int, end: int, **kwargs):
            """Paged cache -> memory object (store path, 'D2H')."""
            slots = self._check(memory_obj, start, end, kwargs)
            n = end - start
            (kidx, vidx) = self._index(slots)
            out = memory_obj.tensor
            for layer, cache in enumerate(self.kvcaches):
                flat = self._flat(cache)
                out[0, layer, :n].copy_(flat[kidx].reshape(n, self.hidden_dim_size))
                out[1, layer, :n].copy_(flat[vidx].reshape(n, self.hidden_dim_size))
            memory_obj.metadata.fmt = MemoryFormat.KV_2LTD
            elem = out.element_size()
            COUNTERS.add("bytes_d2h", 2 * self.num_layers * n * self.hidden_dim_size * elem)
            COUNTERS.add("stored_tokens", n)

        @torch.inference_mode()
        def to_gpu(self, memory_obj, start: int, end: int, **kwargs):
            """Memory object -> paged cache (retrieve path, 'H2D')."""
            if memory_obj.metadata.fmt != MemoryFormat.KV_2LTD:
                raise ValueError("CPUPagedConnector needs KV_2LTD memory objects")
            self.initialize_kvcaches_ptr(**kwargs)
            if "slot_mapping" not in kwargs:
                raise ValueError("'slot_mapping' should be provided in kwargs.")
            # Tokens vLLM already holds (its own prefix cache) are not overwritten,
            # like LMCache's CUDA connector (skip_prefix_n_tokens).
            vllm_cached = int(kwargs.get("vllm_cached_tokens", 0) or 0)
            skip = min(end - start, max(0, vllm_cached - start))
            COUNTERS.add("hit_tokens", end - start)
            if skip >= end - start:
                return
            s0 = start + skip
            slots = kwargs["slot_mapping"][s0:end]
            if slots.numel() and int(slots.min()) < 0:
                raise ValueError("CPUPagedConnector: slot_mapping contains -1 inside [start, end)")
            n = end - s0
            src = memory_obj.tensor
            (kidx, vidx) = self._index(slots)
            corrupt = os.environ.get(ENV_CORRUPT) == "1"
            for layer, cache in enumerate(self.kvcaches):
                flat = self._flat(cache)
                k = src[0, layer, skip:skip + n].reshape(n, self.num_kv_heads, self.head_size)
                v = src[1, layer, skip:skip + n].reshape(n, self.num_kv_heads, self.head_size)
                if corrupt:  # negative control: loaded KV replaced by noise
                    k, v = torch.randn_like(k, dtype=torch.float32), torch.randn_like(v, dtype=torch.float32)
                flat.index_put_(kidx, k.to(flat.dtype))
                flat.index_put_(vidx, v.to(flat.dtype))
            COUNTERS.add("bytes_h2d", 2 * self.num_layers * n * self.hidden_dim_size
                         * src.element_size())

        def batched_from_gpu(self, memory_objs, starts, ends, **kwargs):
            for m, s, e in zip(memory_objs, starts, ends, strict=False):
                self.from_gpu(m, s, e, **kwargs)

        def batched_to_gpu(self, memory_objs=None, starts=None, ends=None, **kwargs):
            for m, s, e in zip(memory_objs, starts, ends, strict=False):
                self.to_gpu(m, s, e, **kwargs)

    return CPUPagedConnector


_CONNECTOR_CLS = None


def connector_class():
    global _CONNECTOR_CLS
    if _CONNECTOR_CLS is None:
        _CONNECTOR_CLS = _make_connector_class()
    return _CONNECTOR_CLS


# --------------------------------------------------------------------------------------
# Patches applied when lmcache modules are imported
# --------------------------------------------------------------------------------------
def _patch_gpu_connector(mod) -> None:
    orig = mod.CreateGPUConnector
    if getattr(orig, "_storagecarbon", False):
        return

    def CreateGPUConnector(config, metadata, engine, layout_hints=None):  # noqa: N802
        try:
            return orig(config, metadata, engine, layout_hints=layout_hints)
        except RuntimeError as e:
            if "No supported cpu connector" not in str(e):
                raise
        if getattr(config, "use_layerwise", False) or getattr(metadata, "use_mla", False):
            raise RuntimeError("storagecarbon CPUPagedConnector supports neither layerwise "
                               "mode nor MLA")
        cls = connector_class()
        COUNTERS.set_info(chunk_size=getattr(config, "chunk_size", None))
        _info("using CPUPagedConnector for LMCache on the vLLM CPU backend "
                 "(kv_shape=%s, dtype=%s)", metadata.kv_shape, metadata.kv_dtype)
        return cls(metadata.kv_shape, metadata.kv_dtype)

    CreateGPUConnector._storagecarbon = True  # type: ignore[attr-defined]
    CreateGPUConnector.__wrapped__ = orig  # type: ignore[attr-defined]
    mod.CreateGPUConnector = CreateGPUConnector


def _nbytes(buf) -> int:
    try:
        return memoryview(buf).nbytes
    except TypeError:
        return len(buf)


def _obj_size(mo) -> int:
    try:
        return int(mo.get_size())
    except Exception:  # noqa: BLE001
        return 0


def _patch_local_disk(mod) -> None:
    cls = mod.LocalDiskBackend
    if getattr(cls, "_storagecarbon", False):
        return
    orig_init, orig_write, orig_read = cls.__init__, cls.write_file, cls.read_file

    def __init__(self, *a, **kw):  # noqa: N807
        orig_init(self, *a, **kw)
        COUNTERS.set_info(disk_path=os.path.abspath(str(self.path)))

    def write_file(self, buffer, path):
        orig_write(self, buffer, path)
        COUNTERS.add("disk_bytes_written", _nbytes(buffer))

    def read_file(self, key, buffer, path):
        # read_file swallows FileNotFoundError; count only a read that can happen.
        try:
            size = os.path.getsize(path)
        except OSError:
            size = None
        orig_read(self, key, buffer, path)
        if size is not None:
            COUNTERS.add("disk_bytes_read", min(size, _nbytes(buffer)))

    cls.__init__, cls.write_file, cls.read_file = __init__, write_file, read_file
    cls._storagecarbon = True


def _patch_local_cpu(mod) -> None:
    cls = mod.LocalCPUBackend
    if getattr(cls, "_storagecarbon", False):
        return
    orig_put, orig_get = cls.submit_put_task, cls.get_blocking
    orig_get_nb = cls.batched_get_non_blocking

    def submit_put_task(self, key, memory_obj, *a, **kw):
        before = self.hot_cache.get(key) if hasattr(self, "hot_cache") else None
        r = orig_put(self, key, memory_obj, *a, **kw)
        if before is None and getattr(self, "hot_cache", {}).get(key) is memory_obj:
            COUNTERS.add("cpu_bytes_written", _obj_size(memory_obj))
        return r

    def get_blocking(self, key):
        mo = orig_get(self, key)
        if mo is not None:
            COUNTERS.add("cpu_bytes_read", _obj_size(mo))
        return mo

    async def batched_get_non_blocking(self, lookup_id, keys, transfer_spec=None):
        mos = await orig_get_nb(self, lookup_id, keys, transfer_spec)
        COUNTERS.add("cpu_bytes_read", sum(_obj_size(m) for m in mos if m is not None))
        return mos

    cls.submit_put_task = submit_put_task
    cls.get_blocking = get_blocking
    cls.batched_get_non_blocking = batched_get_non_blocking
    cls._storagecarbon = True


def _patch_connector_stats(mod) -> None:
    from .stat_logger import patch_lmcache_connector  # tap counters as kv_connector_stats

    patch_lmcache_connector(mod)


_PATCHES = {
    "lmcache.v1.gpu_connector": _patch_gpu_connector,
    "lmcache.v1.storage_backend.local_disk_backend": _patch_local_disk,
    "lmcache.v1.storage_backend.local_cpu_backend": _patch_local_cpu,
    "vllm.distributed.kv_transfer.kv_connector.v1.lmcache_connector": _patch_connector_stats,
}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self._inner = inner
        self._patch = patch

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            self._patch(module)
        except Exception:  # noqa: BLE001
            _info("patching %s failed:\n%s", module.__name__, __import__("traceback").format_exc())
            raise

    def __getattr__(self, name):  # get_code, get_source, is_package, ...
        return getattr(self._inner, name)


class _LMCacheHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


_INSTALLED = False


def install() -> None:
    """Install the import hook (and patch modules already imported). Idempotent."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    if not any(isinstance(f, _LMCacheHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _LMCacheHook())
    for name, patch in _PATCHES.items():
        mod = sys.modules.get(name)
        if mod is not None:
            patch(mod)


def enabled() -> bool:
    return os.environ.get(ENV_ENABLE, "").strip().lower() in ("1", "true", "yes", "on")


def register() -> None:
    """vLLM general-plugin entry point. No-op unless STORAGECARBON_LMCACHE_CPU=1."""
    if not enabled():
        return
    install()
