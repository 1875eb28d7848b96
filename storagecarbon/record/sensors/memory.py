"""DRAM occupancy of a run: resident bytes of its process tree.

The DRAM tier's embodied share follows the bytes the run holds: the resident set of the process
tree (weights mapped from the page cache, the LMCache CPU buffer, pinned staging buffers, Python
heaps). ``mode="rss"`` (default) sums RSS from ``/proc/<pid>/stat``: cheap, but pages shared by
several members (fork copy-on-write, shared memory between vLLM's engine core and workers) are
counted once per member, an upper bound. ``mode="pss"`` reads ``Pss`` from
``/proc/<pid>/smaps_rollup`` instead (shared pages split between sharers, exact for the tree but
costs a page-table walk per member per sample; use a lower rate on large processes).

System-wide used memory is not a channel: it is not the run's. The footer summary records the
host's total and used memory at the first and last sample for context.
"""

from __future__ import annotations

import math
from typing import Any

from .base import ChannelSpec, Probe, Row, SensorBase
from .procio import ProcTree


def parse_smaps_rollup_pss(text: str) -> int:
    """``Pss:`` of ``/proc/<pid>/smaps_rollup`` in bytes."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            parts = line.split()
            return int(parts[1]) * (1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1)
    raise ValueError("no Pss line in smaps_rollup")


class MemorySensor(SensorBase):
    """``resident_bytes`` of a process tree on ``device`` (the DRAM tier device, ``dram``)."""

    name = "memory"

    def __init__(self, tree: ProcTree, *, device: str = "dram", mode: str = "rss"):
        if mode not in ("rss", "pss"):
            raise ValueError("mode must be 'rss' or 'pss'")
        self.tree = tree
        self.device = device
        self.mode = mode
        self.peak_bytes = 0.0
        self._host: dict[str, Any] = {}
        self._version = -1

    def probe(self) -> Probe:
        stat = self.tree.proc_root / "self" / "stat"
        if not stat.exists():
            return Probe(False, f"{stat} does not exist (not Linux procfs)")
        if self.mode == "pss" and not (self.tree.proc_root / "self" / "smaps_rollup").exists():
            return Probe(False, "smaps_rollup missing (Linux < 4.14); use mode='rss'")
        return Probe(True, f"{self.mode.upper()} of the process tree")

    def channels(self) -> list[ChannelSpec]:
        return [(self.device, "resident_bytes", self.name)]

    def _host_memory(self, when: str) -> None:
        try:
            import psutil

            vm = psutil.virtual_memory()
            self._host[when] = {"total_bytes": vm.total, "used_bytes": vm.total - vm.available}
        except Exception:  # noqa: BLE001 - context only
            pass

    def read(self) -> list[Row]:
        if self.tree.root_pid is None:
            return []
        members = self.tree.members()
        if self.tree.version == self._version:
            return []  # the members were not read again since the last row: nothing new to say
        self._version = self.tree.version
        if self.mode == "rss":
            total = float(sum(m.rss_bytes for m in members))
        else:
            total = 0.0
            for m in members:
                try:
                    total += parse_smaps_rollup_pss((self.tree.proc_root / str(m.pid) / "smaps_rollup").read_text())
                except (OSError, ValueError):
                    total += m.rss_bytes
        self.peak_bytes = max(self.peak_bytes, total)
        if "first" not in self._host:
            self._host_memory("first")
        return [(self.device, "resident_bytes", total)]

    @property
    def next_read_s(self) -> float:
        """Nothing new before the tree's next ``stat`` read (recorder protocol, see base)."""
        if self.tree.root_pid is None or self.tree.version != self._version:
            return -math.inf   # the members were read again (by another sensor of the tree): a new total
        return self.tree.next_stat_s

    def refresh(self) -> None:
        self.tree.invalidate()

    def close(self) -> None:
        self._host_memory("last")

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "peak_resident_bytes": self.peak_bytes, "host_memory": self._host}
