"""The LMCache tap's counters page: the one place for the tap's counter names and the page's layout.

Next to its JSON tap file (``lmcache-<pid>.json``: counters and metadata, rewritten at most every 0.1 s while
they change), the engine process keeps ``lmcache-<pid>.counters``: a fixed 104-byte little-endian record that
it updates in place through a shared mapping. The recorder maps the same file once and reads it on every look
without a system call: a look at a tap that did not change compares one integer (the JSON path costs a
``stat``, an ``open``, a ``read`` and a JSON parse, ~0.3 ms of CPU a look on the project's 2-vCPU VM, because
every look starts with cold caches).

Layout: :data:`MAGIC` (8 B), ``seq`` (u64), ``meta`` (u64), then one f64 per counter of :data:`KEYS`, in that
order. ``seq`` is odd while the writer updates the values and even once they are stable (a sequence lock):
a reader that sees an odd ``seq``, or a ``seq`` that moved while it copied the values, leaves them for its
next look (``busy`` counts such looks: the recorder goes back to the JSON after three, as a writer that died in
the middle of a write leaves the page odd for good; the JSON is written before the page). ``meta`` goes up when
the JSON's metadata (LMCache's disk path, chunk size) changed, so the reader reads the JSON again only then.
Stdlib only: the engine process imports it.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Sequence

KEYS = (
    "cpu_bytes_written", "cpu_bytes_read", "disk_bytes_written", "disk_bytes_read",
    "remote_bytes_written", "remote_bytes_read", "bytes_d2h", "bytes_h2d",
    "stored_tokens", "hit_tokens",
)
"""The tap's cumulative counters, per process (docs/engines.md has what each counts)."""
MAGIC = b"SCTAP\x00\x01\x00"
_HEAD = struct.Struct("<8sQQ")
_SEQ = struct.Struct("<Q")
_VALS = struct.Struct(f"<{len(KEYS)}d")
SIZE = _HEAD.size + _VALS.size
SUFFIX = ".counters"


def page_path(json_path: str) -> str:
    """The counters page next to a tap's JSON file."""
    return (json_path[:-5] if json_path.endswith(".json") else json_path) + SUFFIX


class PageWriter:
    """The engine's side: creates the page (zeros) and updates it in place."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, SIZE)
            self._mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.path = path
        self._seq = 0
        _HEAD.pack_into(self._mm, 0, MAGIC, 0, 0)

    def write(self, values: Sequence[float], meta: int) -> None:
        mm = self._mm
        self._seq += 1
        _SEQ.pack_into(mm, 8, self._seq)            # odd: being written
        _SEQ.pack_into(mm, 16, meta)
        _VALS.pack_into(mm, _HEAD.size, *values)
        self._seq += 1
        _SEQ.pack_into(mm, 8, self._seq)            # even: stable

    def close(self) -> None:
        self._mm.close()


class PageReader:
    """The recorder's side: maps a page read-only; :meth:`read` answers new values or ``None``."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size < SIZE:
                raise ValueError(f"{path}: shorter than a counters page")
            self._mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        if self._mm[:8] != MAGIC:
            self._mm.close()
            raise ValueError(f"{path}: not a counters page")
        self.seq = -1
        self.busy = 0   # consecutive looks that found the page being written

    def read(self) -> tuple[int, tuple[float, ...]] | None:
        """``(meta, values in KEYS order)`` when the page changed since the last answer and is stable; else
        ``None`` (unchanged, or being written: the next look takes it)."""
        mm = self._mm
        seq = _SEQ.unpack_from(mm, 8)[0]
        if seq == self.seq:
            self.busy = 0
            return None
        if seq & 1:
            self.busy += 1   # a writer that died in the middle of a write leaves it odd for good
            return None
        meta = _SEQ.unpack_from(mm, 16)[0]
        vals = _VALS.unpack_from(mm, _HEAD.size)
        if _SEQ.unpack_from(mm, 8)[0] != seq:
            self.busy += 1
            return None
        self.seq, self.busy = seq, 0
        return meta, vals

    def close(self) -> None:
        self._mm.close()
