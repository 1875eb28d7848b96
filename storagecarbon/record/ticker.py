"""The recorder's native ticker (``ticker.c``): per-tick counter-file reads off the Python interpreter.

The recorder samples at ``hz`` (10 by default), but only a few sources must be read on every tick: the disk
counters (``/sys/class/block/<disk>/stat``) and RAPL's energy counters, which move with every IO and every joule;
everything else is read at its own lower rate (``Every`` in ``sensors/base.py``). On the KVM guests measured, a
Python thread that wakes ten times a second spends 45-90 µs of CPU per wake-up before reading anything, and each
cold Python code path costs 5-20x its warm figure, so a Python loop could not get under 200 µs a tick
(``benchmarks/results/recorder_cost.md``). The ticker reads those files in C on the tick, keeps the ticks whose
numbers changed in a ring, and wakes the Python thread (through a pipe) when the marker file grows; the Python
thread wakes only when one of its own sources is due, or once a second to flush, and drains the ring then.

Built on first use with the system's C compiler (``$CC``, else ``cc``) into the user's cache
(``$STORAGECARBON_CACHE``, else ``$XDG_CACHE_HOME/storagecarbon``, else ``~/.cache/storagecarbon``), keyed by
the source's hash; ``scripts/setup.sh`` builds it ahead. Without a compiler, or with ``STORAGECARBON_NATIVE=0``,
the recorder samples in Python as before (:func:`available` says why); the trace's contract is the same.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NATIVE_ENV = "STORAGECARBON_NATIVE"
SOURCE = Path(__file__).with_name("ticker.c")
MAXV = 20   # numbers parsed per file (ticker.c SC_MAXV)

_lib: Any = None
_why: str | None = None


def cache_dir() -> Path:
    d = os.environ.get("STORAGECARBON_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "storagecarbon")
    return Path(d)


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"libsc_ticker-{digest}.so"


def build(force: bool = False) -> Path:
    """Compile ``ticker.c`` into the cache (atomic rename; a concurrent build is harmless). Raises on failure."""
    out = library_path()
    if out.exists() and not force:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (set $CC or install cc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE), "-lpthread"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cc} failed: {' '.join(r.stderr.split())[:300]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load() -> Any:
    global _lib, _why
    if _lib is not None or _why is not None:
        return _lib
    if os.environ.get(NATIVE_ENV, "") == "0":
        _why = f"off (${NATIVE_ENV}=0)"
        return None
    if not sys.platform.startswith("linux"):
        _why = "Linux only"
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _why = f"not built: {' '.join(str(exc).split())[:200]}"
        return None
    vp, c_int, c_double = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    lib.sc_ticker_new.restype = vp
    lib.sc_ticker_new.argtypes = [c_double, c_double, c_int, ctypes.POINTER(c_int), ctypes.c_char_p, c_int, c_int]
    lib.sc_ticker_start.argtypes = [vp, c_double]
    lib.sc_ticker_stop.argtypes = [vp]
    lib.sc_ticker_free.argtypes = [vp]
    lib.sc_ticker_drain.restype = c_int
    lib.sc_ticker_drain.argtypes = [vp, vp, vp, vp, vp, c_int, vp]
    lib.sc_ticker_cpu.restype = c_double
    lib.sc_ticker_cpu.argtypes = [vp]
    if lib.sc_ticker_maxv() != MAXV:
        _why = "ticker.c and ticker.py disagree on MAXV"
        return None
    _lib = lib
    return lib


def available() -> tuple[bool, str]:
    """Whether the native ticker can run here, and if not why (for ``env`` and the trace header)."""
    lib = _load()
    return (lib is not None, "native ticker (C, ticker.c)" if lib is not None else str(_why))


IN_MODIFY = 0x2


def watch_file(path: str | os.PathLike[str]) -> int:
    """An inotify descriptor (non-blocking) readable when ``path`` is written to, or -1 where inotify is not
    available: the recorder's Python thread sleeps in ``poll()`` on it, so a marker wakes it at once and no
    thread stats the marker file on every tick."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return -1
    if fd < 0:
        return -1
    if libc.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY) < 0:
        os.close(fd)
        return -1
    return int(fd)


class Ticker:
    """One native ticker thread: ``files`` (open descriptors) preaded each tick; ``marker_path`` watched, with a
    byte written to ``wake_fd`` when it grows. :meth:`drain` returns the kept ticks as ``(t, t_prev, per_file)``
    where ``per_file[k]`` is the tuple of numbers of file ``k`` (``None`` when its read failed) and ``t_prev`` the
    time of the tick before (-1 for the first), plus the latest tick's time."""

    def __init__(self, files: list[int], period_s: float, hold_s: float, marker_path: str | None = None,
                 wake_fd: int = -1, capacity: int = 256):
        lib = _load()
        if lib is None:
            raise RuntimeError(f"native ticker unavailable: {_why}")
        self._lib = lib
        self.nfiles = len(files)
        self.capacity = capacity
        arr = (ctypes.c_int * max(1, self.nfiles))(*files)
        h = lib.sc_ticker_new(period_s, hold_s, self.nfiles, arr,
                              marker_path.encode() if marker_path else None, wake_fd, capacity)
        if not h:
            raise MemoryError("sc_ticker_new")
        self._h = ctypes.c_void_p(h)
        n = max(1, self.nfiles)
        self._t = (ctypes.c_double * capacity)()
        self._tp = (ctypes.c_double * capacity)()
        self._vals = (ctypes.c_uint64 * (capacity * n * MAXV))()
        self._nums = (ctypes.c_int32 * (capacity * n))()
        self._out = (ctypes.c_double * 8)()
        self._ptrs = (ctypes.addressof(self._t), ctypes.addressof(self._tp), ctypes.addressof(self._vals),
                      ctypes.addressof(self._nums), ctypes.addressof(self._out))
        self.last_cpu_s = 0.0
        self.running = False
        self._cpu_closed = 0.0

    def start(self, first_deadline: float) -> None:
        if self._lib.sc_ticker_start(self._h, first_deadline) != 0:
            raise RuntimeError("pthread_create failed")
        self.running = True

    def drain(self) -> tuple[list[tuple[float, float, list[tuple[int, ...] | None]]], float]:
        """The kept ticks since the last drain, and the latest tick's time (-1: unknown); one C call, which also
        refreshes :attr:`last_cpu_s` and :meth:`stats`."""
        if not self._h:
            return [], -1.0
        t, tp, vals, nums, out = self._ptrs
        n = self._lib.sc_ticker_drain(self._h, t, tp, vals, nums, self.capacity, out)
        o = self._out
        self.last_cpu_s = o[1]
        if not n:
            return [], o[0]
        nf = self.nfiles
        v, k_ = self._vals, self._nums
        slots = []
        for s in range(n):
            per: list[tuple[int, ...] | None] = []
            for f in range(nf):
                m = k_[s * nf + f]
                base = (s * nf + f) * MAXV
                per.append(None if m < 0 else tuple(v[base:base + m]))
            slots.append((self._t[s], self._tp[s], per))
        return slots, o[0]

    def cpu_s(self) -> float:
        """The ticker thread's CPU so far (s), sleeps and wake-ups included."""
        if not self._h:
            return self._cpu_closed
        return float(self._lib.sc_ticker_cpu(self._h))

    def stats(self) -> dict[str, int]:
        if self._h:
            self._lib.sc_ticker_drain(self._h, *self._ptrs[:4], 0, self._ptrs[4])
        o = [int(x) for x in self._out[2:8]]
        return {"ticks": o[0], "overruns": o[1], "kept": o[2], "dropped": o[3], "read_errors": o[4],
                "marker_wakes": o[5]}

    @property
    def ticks(self) -> int:
        """Ticks so far, as of the last drain."""
        return int(self._out[2])

    def stop(self) -> None:
        if self.running:
            self._lib.sc_ticker_stop(self._h)
            self.running = False

    def close(self) -> None:
        if self._h:
            self.stop()
            self._cpu_closed = self.cpu_s()
            self.stats()
            self._lib.sc_ticker_free(self._h)
            self._h = ctypes.c_void_p()
            self.running = False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":   # python -m storagecarbon.record.ticker: build it (scripts/setup.sh)
    ok, why = available()
    print(f"storagecarbon native ticker: {library_path() if ok else why}", file=sys.stderr)
    sys.exit(0)
