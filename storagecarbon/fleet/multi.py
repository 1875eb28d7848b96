"""Many traces (one per node or run) reported together, per node, tier and device.

Traces are attributed one at a time (``jobs`` worker processes, each holding one trace), so
memory stays flat in the number of traces: what is kept per group (node x tier x device) is the
per-draw carbon sums (``draws`` floats) and a few totals. Each trace is attributed as ``report``
attributes one (:func:`storagecarbon.carbon.usage.aggregate`, then the public attribution API); the
per-interval rows for ``--dataset`` come from :func:`storagecarbon.report.build.interval_table`.

Summing bands across traces: every trace is attributed with the same seed, so draw *k* of every
trace uses the same quantile of each shared input (grid intensity, PUE, a device model's
embodied figure). That is right for inputs the fleet shares (one grid, one device model) and
conservative (wider) for inputs that would vary independently between nodes.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import StoragecarbonError

TRACE_SUFFIXES = (".arrows",)


def expand_traces(args: Iterable[str | Path]) -> list[Path]:
    """Trace files from files, directories (every ``*.arrows`` below) and glob patterns, in order,
    without duplicates. A pattern or directory that matches nothing is an error naming it."""
    out: list[Path] = []
    seen: set[Path] = set()
    for a in args:
        s = str(a)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in TRACE_SUFFIXES)
            if not found:
                raise StoragecarbonError(f"{p}: directory holds no trace files (*.arrows)")
        elif p.is_file():
            found = [p]
        elif any(ch in s for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
            if not found:
                raise StoragecarbonError(f"{s}: pattern matches no trace file")
        else:
            raise StoragecarbonError(f"{p}: trace file does not exist")
        for q in found:
            r = q.resolve()
            if r not in seen:
                seen.add(r)
                out.append(q)
    return out


def run_id(path: Path) -> str:
    """A short stable id of a trace for file names: its parent folder and name, and a hash of the path."""
    h = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    stem = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return f"{safe}-{h}"


def node_of(header: Any, path: Path) -> str:
    """The node a trace was recorded on: the recorder's hostname, else the trace's folder name."""
    host = (header.host or {}).get("hostname")
    return str(host) if host else (path.parent.name or path.stem)


@dataclass
class TraceResult:
    """What one trace contributes (small: no samples)."""

    path: str
    node: str
    run: str
    source: str
    duration_s: float
    truncated: bool
    rows: list[dict[str, Any]]                      # per device: ids, figures, per-draw carbon
    warnings: list[str]
    requests: int
    generated_tokens: int
    dataset_files: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=4)
def _load_db(db_dir: str | None) -> Any:
    """device_db, parsed once per process (worker) and directory: it is read-only data, and
    parsing its YAML costs more than attributing an hour-long trace."""
    from ..devicedb import DeviceDB

    return DeviceDB.load(Path(db_dir) if db_dir else None)


def attribute_one(path: str, *, db_dir: str | None = None, region: str | None = None, draws: int | None = None,
                  carbon: dict | None = None, interval_s: float | None = None,
                  dataset_dir: str | None = None) -> TraceResult:
    """Attribute one trace (runs in a worker process); optionally write its dataset rows."""
    from ..scenario import Carbon
    from ..carbon.usage import aggregate
    from .export import attribute_now, carbon_inputs

    p = Path(path)
    db = _load_db(db_dir)
    usage = aggregate(p, interval_s=interval_s)
    inputs = carbon_inputs(db, carbon=Carbon.model_validate(carbon) if carbon else None, header=usage.header,
                           region=region, draws=draws)
    attr = attribute_now(usage, db, inputs)
    node = node_of(usage.header, p)
    rid = run_id(p)
    rows = []
    for i, b in enumerate(attr.devices):
        q = usage.by_phase

        def measured(name: str) -> float | None:  # no channel: missing, not 0
            return float(q[name][i].sum()) if usage.has.get((b.id, name)) else None

        rows.append({
            "node": node, "device": b.id, "tier": b.tier, "db_key": b.db_key, "count": b.count,
            "energy_basis": b.energy, "occupancy_basis": b.occupancy,
            "energy_missing": not b.energy or b.energy.startswith("missing"),
            "embodied_missing": b.embodied_unit_kg is None or b.occupancy.startswith("missing"),
            "energy_j_best": None if not b.energy or b.energy.startswith("missing") else float(attr.energy_best_j[i].sum()),
            "bytes_read": measured("bytes_read"), "bytes_written": measured("bytes_written"),
            "app_bytes_read": measured("app_bytes_read"), "app_bytes_written": measured("app_bytes_written"),
            "embodied_best_g": None if b.embodied_unit_kg is None or b.occupancy.startswith("missing")
            else float(attr.embodied_best_g[i].sum()),
            "operational_best_g": None if not b.energy or b.energy.startswith("missing")
            else float(attr.operational_best_g[i].sum()),
            # a missing figure (NaN cells) is left out of the sums; the row's best is None and the
            # totals list it under "missing" (what the total excludes), never a 0 standing in for it
            "embodied_draws": _known_draws(attr.embodied_g[i]),
            "operational_draws": _known_draws(attr.operational_g[i]),
        })
    files: list[str] = []
    if dataset_dir is not None:
        from .dataset import write_trace_intervals

        files = write_trace_intervals(Path(dataset_dir), attr, node=node, run=rid, trace_path=p)
    summ = usage.summary or {}
    return TraceResult(path=str(p), node=node, run=rid, source=usage.header.source, duration_s=usage.duration_s,
                       truncated=usage.truncated, rows=rows, warnings=list(attr.warnings),
                       requests=int(summ.get("requests") or usage.workload.get("requests_done")
                                    or usage.requests_from_markers or 0),
                       generated_tokens=int(summ.get("generated_tokens") or usage.workload.get("generated_tokens") or 0),
                       dataset_files=files)


def _add(a: float | None, b: float | None) -> float | None:
    """Sum where missing stays missing: None only when every part is None (the ``missing`` list
    says which parts lacked the figure)."""
    if a is None:
        return b
    return a if b is None else a + b


def _known_draws(cells: np.ndarray) -> np.ndarray:
    """Per-draw sum over phases of one device's cells, leaving out missing (NaN) cells."""
    return np.nansum(cells, axis=0)


class FleetTotals:
    """Running sums per (node, tier, device) group; constant memory per group."""

    KEYS = ("energy_j_best", "bytes_read", "bytes_written", "app_bytes_read", "app_bytes_written",
            "embodied_best_g", "operational_best_g")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.traces: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def add(self, r: TraceResult) -> None:
        self.traces.append({"path": r.path, "node": r.node, "run": r.run, "source": r.source,
                            "duration_s": r.duration_s, "truncated": r.truncated, "requests": r.requests,
                            "generated_tokens": r.generated_tokens, "dataset_files": len(r.dataset_files)})
        for w in r.warnings:
            line = f"{r.node} ({Path(r.path).name}): {w}"
            if line not in self.warnings and len(self.warnings) < 200:
                self.warnings.append(line)
        for row in r.rows:
            key = (row["node"], row["tier"], row["device"])
            g = self.groups.get(key)
            if g is None:
                g = self.groups[key] = {k: None for k in self.KEYS}
                g.update({"db_keys": set(), "runs": 0, "energy_missing_runs": 0, "embodied_missing_runs": 0,
                          "emb": np.zeros_like(row["embodied_draws"]), "op": np.zeros_like(row["operational_draws"])})
            for k in self.KEYS:
                g[k] = _add(g[k], row[k])
            g["db_keys"].add(row["db_key"])
            g["runs"] += 1
            g["energy_missing_runs"] += int(row["energy_missing"])
            g["embodied_missing_runs"] += int(row["embodied_missing"])
            if len(g["emb"]) == len(row["embodied_draws"]):
                g["emb"] += row["embodied_draws"]
                g["op"] += row["operational_draws"]

    def rollup(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        """Groups summed over the keys not in ``names`` (a subset of node, tier, device)."""
        from ..carbon.attribute import pct

        pos = [("node", "tier", "device").index(n) for n in names]
        acc: dict[tuple, dict[str, Any]] = {}
        for key, g in self.groups.items():
            k = tuple(key[i] for i in pos)
            a = acc.get(k)
            if a is None:
                a = acc[k] = {**{f: None for f in self.KEYS}, "emb": np.zeros_like(g["emb"]),
                              "op": np.zeros_like(g["op"]), "missing": []}
            for f in self.KEYS:
                a[f] = _add(a[f], g[f])
            a["emb"] = a["emb"] + g["emb"]
            a["op"] = a["op"] + g["op"]
            for what in ("energy", "embodied"):
                n_miss = g[f"{what}_missing_runs"]
                if n_miss:
                    a["missing"].append(f"{key[2]} on {key[0]}: {what} missing in {n_miss}/{g['runs']} runs")
        order = {"hbm": 0, "host": 1, "dram": 2, "ssd": 3, "hdd": 4, "remote": 5}
        out = []
        for k, a in sorted(acc.items(), key=lambda kv: tuple(order.get(x, 9) if n == "tier" else x
                                                           for n, x in zip(names, kv[0]))):
            emb, op = a.pop("emb"), a.pop("op")
            out.append({**dict(zip(names, k)), **{f: a[f] for f in self.KEYS},
                        "embodied_gco2e": None if a["embodied_best_g"] is None else pct(emb),
                        "operational_gco2e": None if a["operational_best_g"] is None else pct(op),
                        "total_gco2e": None if a["embodied_best_g"] is None and a["operational_best_g"] is None
                        else pct(emb + op),
                        "missing": a["missing"]})
        return out

    def report(self) -> dict[str, Any]:
        total = self.rollup(())
        return {
            "fleet_report_version": 1,
            "traces": len(self.traces),
            "nodes": sorted({t["node"] for t in self.traces}),
            "requests": sum(t["requests"] for t in self.traces),
            "generated_tokens": sum(t["generated_tokens"] for t in self.traces),
            "totals": total[0] if total else None,
            "by_node": self.rollup(("node",)),
            "by_tier": self.rollup(("tier",)),
            "by_node_tier": self.rollup(("node", "tier")),
            "by_device": self.rollup(("node", "tier", "device")),
            "runs": self.traces,
            "warnings": self.warnings,
            "bands": "P5/P50/P95 over draws; draws summed across traces with a common seed (see storagecarbon.fleet.multi)",
        }


def attribute_many(paths: list[Path], *, jobs: int = 1, progress: Callable[[int, int], None] | None = None,
                   **kw: Any) -> FleetTotals:
    """Attribute ``paths`` (``jobs`` processes, results folded in as they come) into :class:`FleetTotals`."""
    tot = FleetTotals()
    for i, r in enumerate(_results([str(p) for p in paths], jobs, kw)):
        tot.add(r)
        if progress is not None:
            progress(i + 1, len(paths))
    return tot


def _one(args: tuple[str, dict[str, Any]]) -> TraceResult:
    path, kw = args
    return attribute_one(path, **kw)


def _results(paths: list[str], jobs: int, kw: dict[str, Any]) -> Iterator[TraceResult]:
    if jobs <= 1 or len(paths) <= 1:
        for p in paths:
            yield attribute_one(p, **kw)
        return
    import multiprocessing as mp

    # spawn: workers start clean (no inherited threads, no copy of the parent's heap)
    with ProcessPoolExecutor(max_workers=min(jobs, len(paths)), mp_context=mp.get_context("spawn")) as ex:
        yield from ex.map(_one, [(p, kw) for p in paths], chunksize=1)


def default_jobs() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 8))
