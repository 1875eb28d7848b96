"""Per-interval attribution of many traces as one Hive-partitioned Parquet dataset.

Layout (Hive style, read unchanged by DuckDB, Spark, Trino/Hive, pyarrow, polars)::

    DIR/node=<node>/date=<YYYY-MM-DD>/<run>-<i>.parquet

One row per trace x device x interval, from :func:`storagecarbon.report.build.interval_table`
(central values; the interval's share of each device's embodied and operational gCO2e follows its
usage driver), plus the columns below. ``node`` and ``date`` live in the folder names only (the
partition columns); a run that crosses midnight (UTC) writes into both days. Re-writing a run
replaces its files (file names carry the run id). Missing figures are null, never 0: a device
without a device_db record or whose energy or occupancy the attribution marks missing has null
energy / carbon columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

COLUMNS = {
    "run": "trace id (folder, name and a hash of its path)",
    "trace": "trace file path",
    "source": "measured | modeled | replayed",
    "interval": "interval index within the run",
    "interval_s": "interval length, s",
    "t_start_s": "interval start, s after the trace's t0",
    "ts": "interval start, UTC timestamp (microseconds)",
    "device": "device id in the trace", "tier": "hbm | host | dram | ssd | hdd | remote",
    "db_key": "device_db key (null: unknown hardware)",
    "bytes_read": "block-level bytes read (B)", "bytes_written": "block-level bytes written (B)",
    "app_bytes_read": "bytes the run's processes / LMCache read (B)",
    "app_bytes_written": "bytes the run's processes / LMCache wrote (B)",
    "busy_s": "device busy unit-seconds", "resident_byte_s": "occupancy, byte-seconds",
    "energy_j": "energy, J (null: missing)", "embodied_gco2e": "embodied gCO2e, central (null: missing)",
    "operational_gco2e": "operational gCO2e, central (null: missing)",
}


def intervals_table(attr: Any, *, node: str, run: str, trace_path: Path) -> pa.Table:
    """The dataset rows of one attributed trace (partition columns ``node`` and ``date`` included)."""
    from ..report.build import interval_table

    cols = interval_table(attr)
    u = attr.usage
    n = len(cols["interval"])
    t0_unix = float(u.header.t0_unix)
    t_abs = t0_unix + np.asarray(cols["t_start_s"], dtype=np.float64)
    ts = (t_abs * 1e6).astype("int64")
    dates = np.datetime_as_string(ts.astype("datetime64[us]"), unit="D")
    by_dev = {b.id: b for b in attr.devices}
    dev = [str(x) for x in cols["device"]]
    energy_missing = np.array([by_dev[d].energy.startswith("missing") or not by_dev[d].energy for d in dev], dtype=bool)
    emb_missing = np.array([by_dev[d].embodied_unit_kg is None or by_dev[d].occupancy.startswith("missing")
                            for d in dev], dtype=bool)

    def masked(a: Any, miss: np.ndarray) -> pa.Array:
        return pa.array(np.asarray(a, dtype=np.float64), mask=miss if len(miss) else None)

    return pa.table({
        "run": pa.array([run] * n, pa.string()),
        "trace": pa.array([str(trace_path)] * n, pa.string()),
        "source": pa.array([u.header.source] * n, pa.string()),
        "interval": pa.array(np.asarray(cols["interval"], dtype=np.int32)),
        "interval_s": pa.array(np.full(n, u.interval_s)),
        "t_start_s": pa.array(np.asarray(cols["t_start_s"], dtype=np.float64)),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "device": pa.array(dev, pa.string()),
        "tier": pa.array([str(x) for x in cols["tier"]], pa.string()),
        "db_key": pa.array([by_dev[d].db_key for d in dev], pa.string()),
        **{q: pa.array(np.asarray(cols[q], dtype=np.float64)) for q in
           ("bytes_read", "bytes_written", "app_bytes_read", "app_bytes_written", "busy_s", "resident_byte_s")},
        "energy_j": masked(cols["energy_j"], energy_missing),
        "embodied_gco2e": masked(cols["embodied_gco2e"], emb_missing),
        "operational_gco2e": masked(cols["operational_gco2e"], energy_missing),
        "node": pa.array([node] * n, pa.string()),
        "date": pa.array(list(dates), pa.string()),
    })


def write_trace_intervals(root: Path, attr: Any, *, node: str, run: str, trace_path: Path) -> list[str]:
    """Write one trace's rows under ``root`` (Hive partitions ``node``, ``date``); returns the files."""
    import pyarrow.dataset as ds

    table = intervals_table(attr, node=node, run=run, trace_path=trace_path)
    root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    ds.write_dataset(
        table, root, format="parquet",
        partitioning=ds.partitioning(pa.schema([("node", pa.string()), ("date", pa.string())]), flavor="hive"),
        basename_template=f"{run}-{{i}}.parquet", existing_data_behavior="overwrite_or_ignore",
        file_visitor=lambda f: written.append(f.path),
    )
    return written
