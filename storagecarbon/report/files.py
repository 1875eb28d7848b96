"""Files of a report: report.json, the trace, and Parquet tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..carbon.attribute import Attribution
from .build import interval_table


def _table(cols: dict[str, Any]) -> pa.Table:
    """Columns to a table with NaN as null (a missing figure is null, never 0)."""
    return pa.table({k: pa.array(v, from_pandas=True) for k, v in cols.items()})


def write_report_files(out_dir: Path, report: Mapping[str, Any], attr: Attribution, trace_path: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    if trace_path.resolve() != (out_dir / "trace.arrows").resolve():
        shutil.copyfile(trace_path, out_dir / "trace.arrows")
    files["trace"] = str(out_dir / "trace.arrows")
    table = _table(interval_table(attr))
    pq.write_table(table, out_dir / "intervals.parquet")
    files["intervals"] = str(out_dir / "intervals.parquet")
    # per device x phase at central values and draw percentiles
    rows: dict[str, list] = {"device": [], "tier": [], "phase": [], "embodied_gco2e_best": [],
                             "operational_gco2e_best": [], "energy_j_best": []}
    for i, d in enumerate(attr.devices):
        for j, p in enumerate(attr.phases):
            rows["device"].append(d.id)
            rows["tier"].append(d.tier)
            rows["phase"].append(p)
            rows["embodied_gco2e_best"].append(float(attr.embodied_best_g[i, j]))
            rows["operational_gco2e_best"].append(float(attr.operational_best_g[i, j]))
            rows["energy_j_best"].append(float(attr.energy_best_j[i, j]))
    pq.write_table(_table(rows), out_dir / "device_phase.parquet")
    files["device_phase"] = str(out_dir / "device_phase.parquet")
    report = {**report, "files": {**files, "report": str(out_dir / "report.json")}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    files["report"] = str(out_dir / "report.json")
    return files
