"""Many traces reported together; the Hive-partitioned dataset; DuckDB queries over it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pds
import pytest

from storagecarbon.cli import main
from storagecarbon.fleet.synthetic import write_node_trace
from storagecarbon.trace import DeviceEntry, TraceHeader, TraceWriter, make_channels

MIDNIGHT = 1.7795e9 - (1.7795e9 % 86400)  # a UTC midnight


@pytest.fixture(scope="module")
def nopower_db(tmp_path_factory):
    """The tests' device_db with the traces' drive (samsung-pm9a3-7.68tb) stripped of its power figures,
    so that a figure is really missing in these reports."""
    import shutil

    import yaml

    from storagecarbon.devicedb import default_db_dir

    d = tmp_path_factory.mktemp("db")
    for f in default_db_dir().glob("*.yaml"):
        shutil.copy(f, d / f.name)
    doc = yaml.safe_load((d / "storage.yaml").read_text())
    for rec in doc["devices"]:
        if rec["key"] == "samsung-pm9a3-7.68tb":
            rec.pop("active_w", None)
            rec.pop("idle_w", None)
    (d / "storage.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three 2-minute traces at 10 Hz: two runs on node-a (the second crosses midnight UTC), one on node-b."""
    root = tmp_path_factory.mktemp("fleet")
    specs = [("node-a", "run1", MIDNIGHT - 7200), ("node-a", "run2", MIDNIGHT - 60), ("node-b", "run1", MIDNIGHT + 600)]
    for i, (node, run, t0) in enumerate(specs):
        p = root / "traces" / f"{node}-{run}" / "trace.arrows"
        p.parent.mkdir(parents=True)
        write_node_trace(p, node=node, t0_unix=t0, duration_s=120, hz=10, seed=i)
    return root


def run_json(args: list[str], capsys) -> dict:
    assert main(args + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_many_traces_sum_to_their_single_reports(fleet, nopower_db, capsys):
    # GIVEN three traces, WHEN reported together from their directory
    rep = run_json(["report", str(fleet / "traces"), "--jobs", "1", "--db", str(nopower_db)], capsys)
    assert rep["traces"] == 3 and rep["nodes"] == ["node-a", "node-b"]
    # THEN each node's energy and bytes are the sums of the single-trace reports of its runs
    singles: dict[str, list[dict]] = {}
    for d in sorted((fleet / "traces").iterdir()):
        r = run_json(["report", str(d / "trace.arrows"), "--db", str(nopower_db)], capsys)
        singles.setdefault(d.name.rsplit("-", 1)[0], []).append(r)
    for row in rep["by_node"]:
        rs = singles[row["node"]]
        assert row["app_bytes_written"] == pytest.approx(sum(t["app_bytes_written"] for r in rs for t in r["tiers"]))
    for row in (r for r in rep["by_node_tier"] if r["tier"] == "hbm"):
        # measured GPU energy has no range: the single reports' band is a point, and the node's sum is theirs
        rs = singles[row["node"]]
        assert row["energy_j_best"] == pytest.approx(sum(t["energy_j"]["p50"] for r in rs for t in r["tiers"]
                                                         if t["tier"] == "hbm"), rel=1e-9)
    # AND tiers, nodes and devices are three views of the same total
    def g(r: dict) -> float:  # a missing figure (None) adds nothing
        return (r["embodied_best_g"] or 0.0) + (r["operational_best_g"] or 0.0)

    tot = sum(g(r) for r in rep["by_device"])
    for view in ("by_node", "by_tier", "by_node_tier"):
        assert sum(g(r) for r in rep[view]) == pytest.approx(tot, rel=1e-12)
    t = rep["totals"]["total_gco2e"]
    assert 0 < t["p5"] <= t["p50"] <= t["p95"]
    # AND the drive's missing power figure is reported as missing, not hidden in a zero
    ssd = next(r for r in rep["by_tier"] if r["tier"] == "ssd")
    assert {"ssd0 on node-a: energy missing in 2/2 runs", "ssd0 on node-b: energy missing in 1/1 runs"} <= set(ssd["missing"])


def test_files_globs_and_directories_name_the_same_traces(fleet, capsys):
    by_dir = run_json(["report", str(fleet / "traces"), "--jobs", "1"], capsys)
    by_glob = run_json(["report", str(fleet / "traces" / "*" / "trace.arrows"), "--jobs", "1"], capsys)
    files = sorted(str(p) for p in (fleet / "traces").rglob("trace.arrows"))
    by_files = run_json(["report", *files, files[0], "--jobs", "2"], capsys)  # a repeated file counts once
    assert by_dir["totals"] == by_glob["totals"] == by_files["totals"]
    assert main(["report", str(fleet / "nothing-*.arrows")]) != 0
    err = capsys.readouterr().err
    assert "pattern matches no trace file" in err


def test_dataset_is_hive_partitioned_and_queryable(fleet, nopower_db, capsys, tmp_path):
    ds = tmp_path / "ds"
    rep = run_json(["report", str(fleet / "traces"), "--dataset", str(ds), "--interval", "10", "--jobs", "1",
                    "--db", str(nopower_db)], capsys)
    parts = sorted(str(p.relative_to(ds).parent) for p in ds.rglob("*.parquet"))
    day = np.datetime_as_string(np.datetime64(int(MIDNIGHT), "s"), unit="D")
    eve = np.datetime_as_string(np.datetime64(int(MIDNIGHT) - 60, "s"), unit="D")
    # THEN node=…/date=… folders; the run that crosses midnight is in both days
    assert parts == sorted([f"node=node-a/date={eve}", f"node=node-a/date={eve}", f"node=node-a/date={day}",
                            f"node=node-b/date={day}"])
    # AND pyarrow reads it as a Hive dataset (as Spark and Trino do), partition columns included
    t = pds.dataset(ds, format="parquet", partitioning="hive").to_table()
    assert set(t.column("node").to_pylist()) == {"node-a", "node-b"}
    # AND DuckDB over it gives the report's per-node carbon (intervals conserve each device's total)
    assert main(["query", "--dataset", str(ds), "--json",
                 "SELECT node, sum(embodied_gco2e) AS e, sum(operational_gco2e) AS o, count(DISTINCT run) AS runs "
                 "FROM intervals GROUP BY node ORDER BY node"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["runs"] for r in rows] == [2, 1]
    for r, n in zip(rows, rep["by_node"]):
        assert r["node"] == n["node"]
        assert r["e"] == pytest.approx(n["embodied_best_g"], rel=1e-9)
        assert r["o"] == pytest.approx(n["operational_best_g"], rel=1e-9)
    # AND the SSD, whose power is missing in device_db, has null energy rows (never 0)
    assert main(["query", "--dataset", str(ds), "--json",
                 "SELECT count(*) AS n, count(energy_j) AS with_energy FROM intervals WHERE tier = 'ssd'"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["n"] > 0 and r["with_energy"] == 0
    ssd = next(r for r in rep["by_tier"] if r["tier"] == "ssd")
    assert ssd["energy_j_best"] is None and ssd["operational_gco2e"] is None and ssd["embodied_gco2e"]["p50"] > 0


def test_query_errors_are_one_line(tmp_path, capsys):
    assert main(["query", "--dataset", str(tmp_path / "none"), "SELECT 1"]) != 0
    assert "does not exist" in capsys.readouterr().err
    h = TraceHeader(source="replayed", devices=[DeviceEntry("ssd0", "ssd", None)],
                    channels=make_channels([("ssd0", "bytes_written", "t")]), t0_unix=MIDNIGHT)
    with TraceWriter(tmp_path / "t.arrows", h, fsync=False) as w:
        w.samples(np.array([0.0, 1.0]), np.array([0, 0]), np.array([0.0, 5.0]))
    assert main(["report", str(tmp_path / "t.arrows"), "--dataset", str(tmp_path / "ds"), "--json"]) == 0
    capsys.readouterr()
    assert main(["query", "--dataset", str(tmp_path / "ds"), "SELECT nope FROM intervals"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "query:" in err
