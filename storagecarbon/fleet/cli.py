"""Commands ``export`` (Prometheus) and ``query`` (DuckDB), and the many-trace form of ``report``."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from ..errors import StoragecarbonError

out = Console()
err = Console(stderr=True)


def _g(p: dict[str, float] | None) -> str:
    if p is None:
        return "missing"
    return f"{p['p50']:.4g} ({p['p5']:.3g}–{p['p95']:.3g})"


def _bytes(x: float | None) -> str:
    if x is None:
        return "—"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= f:
            return f"{x / f:.3g} {unit}"
    return f"{x:.0f} B"


def render_fleet(rep: dict[str, Any], console: Console = out) -> None:
    from rich.table import Table

    t = rep["totals"]
    console.print(f"[bold]{rep['traces']} traces, {len(rep['nodes'])} nodes[/]: total "
                  f"{_g(t['total_gco2e'] if t else None)} gCO2e (P50, P5–P95); embodied {_g(t['embodied_gco2e'] if t else None)}, "
                  f"operational {_g(t['operational_gco2e'] if t else None)}; {rep['requests']} requests, "
                  f"{rep['generated_tokens']} generated tokens")
    for title, names, rows in (("per node", ("node",), rep["by_node"]), ("per tier", ("tier",), rep["by_tier"]),
                               ("per node, tier and device", ("node", "tier", "device"), rep["by_device"])):
        tab = Table(title=title)
        for n in names:
            tab.add_column(n)
        for c in ("energy J", "read / written (block)", "app read / written", "embodied gCO2e", "operational gCO2e",
                  "missing"):
            tab.add_column(c, overflow="fold")
        for r in rows:
            tab.add_row(*[str(r[n]) for n in names],
                        "missing" if r["energy_j_best"] is None else f"{r['energy_j_best']:.4g}",
                        f"{_bytes(r['bytes_read'])} / {_bytes(r['bytes_written'])}",
                        f"{_bytes(r['app_bytes_read'])} / {_bytes(r['app_bytes_written'])}",
                        _g(r["embodied_gco2e"]), _g(r["operational_gco2e"]), "; ".join(r["missing"][:3]))
        console.print(tab)
    if rep["warnings"]:
        console.print(f"[yellow]{len(rep['warnings'])} warnings[/] (first: {rep['warnings'][0]})")


def report_many(traces: list[str], *, db_dir: Optional[Path], region: Optional[str], scenario: Optional[Path],
                draws: Optional[int], dataset: Optional[Path], interval: Optional[float], jobs: Optional[int],
                as_json: bool) -> None:
    """``report`` over many traces (files, directories, globs)."""
    from .multi import attribute_many, default_jobs, expand_traces

    paths = expand_traces(traces)
    carbon = None
    if scenario is not None:
        from ..devicedb import DeviceDB
        from ..scenario import load_scenario

        carbon = load_scenario(scenario, DeviceDB.load(db_dir)).carbon.model_dump(mode="json")
    kw: dict[str, Any] = {"db_dir": str(db_dir) if db_dir else None, "region": region, "draws": draws, "carbon": carbon,
          "interval_s": interval if interval is not None else (10.0 if dataset is not None else None),
          "dataset_dir": str(dataset) if dataset is not None else None}
    if as_json:
        tot = attribute_many(paths, jobs=jobs or default_jobs(), **kw)
    else:
        with err.status(f"attributing {len(paths)} traces…") as st:
            tot = attribute_many(paths, jobs=jobs or default_jobs(),
                                 progress=lambda i, n: st.update(f"attributing traces: {i}/{n}"), **kw)
    rep = tot.report()
    if dataset is not None:
        rep["dataset"] = str(dataset)
    if as_json:
        sys.stdout.write(json.dumps(rep, indent=2, default=str) + "\n")
    else:
        render_fleet(rep)
        if dataset is not None:
            out.print(f"[dim]dataset written to {dataset}/ (node=…/date=…); next: storagecarbon query --dataset "
                      f"{dataset} \"SELECT node, tier, sum(embodied_gco2e) FROM intervals GROUP BY ALL\"[/]")


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        trace: Path = typer.Argument(..., help="a trace file, finished or still being written"),
        listen: Optional[str] = typer.Option(None, "--listen", help="serve /metrics for Prometheus on HOST:PORT "
                                                                    "(follows the trace as it grows)"),
        textfile: Optional[Path] = typer.Option(None, "--textfile", help="write one exposition to this file and exit "
                                                                         "(node_exporter's textfile collector)"),
        poll: float = typer.Option(1.0, "--poll", help="seconds between reads of a growing trace"),
        linger: Optional[float] = typer.Option(None, "--linger", help="after the trace ends, keep serving this many "
                                                                      "s (default: until interrupted)"),
        region: Optional[str] = typer.Option(None, "--region", help="grid region (default: the trace's scenario, else world)"),
        scenario: Optional[Path] = typer.Option(None, "--scenario", help="take carbon settings from this scenario"),
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Export a trace's joules, gCO2e and bytes per device and tier as Prometheus metrics (live while it grows).

        While recording, [bold]record --prometheus HOST:PORT[/] does the same from inside the recorder."""
        from ..devicedb import DeviceDB
        from .export import LiveExporter, TraceFollower, follow, parse_listen

        if (listen is None) == (textfile is None):
            raise StoragecarbonError("export: give exactly one of --listen HOST:PORT or --textfile FILE")
        db = DeviceDB.load(db_dir)
        carbon = None
        if scenario is not None:
            from ..scenario import load_scenario

            carbon = load_scenario(scenario, db).carbon
        exporter = LiveExporter(db, carbon=carbon, region=region)
        if textfile is not None:
            TraceFollower(trace, exporter).poll()
            textfile.parent.mkdir(parents=True, exist_ok=True)
            tmp = textfile.with_name(textfile.name + ".tmp")
            tmp.write_text(exporter.text())
            tmp.replace(textfile)  # atomic: the collector never reads half a file
            err.print(f"written {textfile}")
            return
        assert listen is not None
        host, port = parse_listen(listen)
        TraceFollower(trace, exporter)  # fails early on a file that is not a trace
        server = exporter.serve(host, port)
        err.print(f"[dim]Prometheus metrics on http://{host}:{server.port}/metrics (following {trace})[/]")
        stop = threading.Event()
        try:
            ended = follow(trace, exporter, poll_s=poll, stop=stop)
            if ended:
                err.print("[dim]trace ended; serving its final counters[/]")
                stop.wait(linger) if linger is not None else stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()

    @app.command()
    def query(
        sql: str = typer.Argument(..., help="SQL over the view 'intervals' (DuckDB dialect)"),
        dataset: Path = typer.Option(..., "--dataset", help="dataset directory written by report --dataset"),
        as_json: bool = typer.Option(False, "--json", help="rows as JSON objects"),
        csv: bool = typer.Option(False, "--csv", help="rows as CSV"),
    ) -> None:
        """Run SQL (embedded DuckDB) over a fleet dataset written by [bold]report TRACES… --dataset DIR[/]."""
        from .query import run_query

        cols, rows = run_query(dataset, sql)
        if as_json:
            sys.stdout.write(json.dumps([dict(zip(cols, r)) for r in rows], indent=2, default=str) + "\n")
        elif csv:
            import csv as _csv

            w = _csv.writer(sys.stdout)
            w.writerow(cols)
            w.writerows(rows)
        else:
            from rich.table import Table

            t = Table(show_lines=False)
            for c in cols:
                t.add_column(c)
            for r in rows:
                t.add_row(*["null" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r])
            out.print(t)
