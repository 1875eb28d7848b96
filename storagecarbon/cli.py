"""Command line: ``storagecarbon profile | record | report | compare | plan | calibrate | devices | env | export | query``.

Every user error is a one-line message on stderr and a non-zero exit; no tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from .errors import StoragecarbonError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="What LLM serving with KV-cache and weight offloading costs the planet: embodied and "
                       "operational gCO2e per storage tier, measured where the hardware is present, modeled "
                       "(and labelled so) where it is not.")
devices_app = typer.Typer(no_args_is_help=True, help="The sourced device database (device_db/).")
scenario_app = typer.Typer(no_args_is_help=True, help="Scenario files.")
app.add_typer(devices_app, name="devices")
app.add_typer(scenario_app, name="scenario")

out = Console()
err = Console(stderr=True)

LOOPBACK_ENV = {"VLLM_HOST_IP": "127.0.0.1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1",
                "LMCACHE_TRACK_USAGE": "false"}


def _db(db_dir: Optional[Path]):
    from .devicedb import DeviceDB

    return DeviceDB.load(db_dir)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


DbOpt = typer.Option(None, "--db", help="device_db directory (default: $STORAGECARBON_DEVICE_DB if set, else the one shipped with storagecarbon)")
SCOPE_HELP = ("dedicated: charge every device in hardware, whole, for the run's time; shared: DRAM/SSD/HDD by "
              "occupancy (default: the scenario's carbon.scope)")


def _check_scope(scope: Optional[str]) -> None:
    if scope is not None and scope not in ("dedicated", "shared"):
        raise StoragecarbonError(f"--scope: {scope!r} is not one of dedicated, shared")


# ------------------------------------------------------------------------------------ profile
@app.command()
def profile(
    scenario: Path = typer.Argument(..., help="scenario YAML"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="report directory (default reports/<scenario>)"),
    as_json: bool = typer.Option(False, "--json", help="print report.json to stdout instead of the terminal report"),
    mode: str = typer.Option("auto", "--mode", help="auto: measure when the scenario's hardware is here, else model; "
                                                   "or force 'modeled' / 'measured'"),
    region: Optional[str] = typer.Option(None, "--region", help="override the scenario's grid region"),
    draws: Optional[int] = typer.Option(None, "--draws", help="Monte Carlo draws (default: scenario, 2000)"),
    html: Optional[Path] = typer.Option(None, "--html", "-o", help="also write a self-contained HTML report"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also print every source, note and sensor"),
    scope: Optional[str] = typer.Option(None, "--scope", help=SCOPE_HELP),
    db_dir: Optional[Path] = DbOpt,
) -> None:
    """Run (or model) a scenario and attribute its carbon per tier, phase, request and 1k tokens."""
    from .pipeline import profile as run_profile

    if mode not in ("auto", "modeled", "measured"):
        raise StoragecarbonError(f"--mode: {mode!r} is not one of auto, modeled, measured")
    _check_scope(scope)
    from .report.progress import progress

    db = _db(db_dir)
    with progress(err, "profile") as step:
        res = run_profile(scenario, db=db, out_dir=out_dir, mode=mode, region=region, draws=draws, scope=scope,
                          progress=step)
    if html is not None:
        from .report.html import write_html

        write_html(html, profile=res.report, trace_path=res.trace_path)
    if as_json:
        _print_json(res.report)
        return
    from .report.terminal import render

    render(res.report, out, verbose=verbose)
    out.print(f"[dim]files in {res.out_dir}/: report.json, trace.arrows, intervals.parquet, device_phase.parquet"
              f"{'; html ' + str(html) if html else ''}[/]", highlight=False)


# ------------------------------------------------------------------------------------- report
@app.command()
def report(
    traces: list[str] = typer.Argument(..., help="a trace file (trace.arrows) written by profile or record; or many "
                                                 "(files, directories, globs: one per node or run) to report together"),
    region: Optional[str] = typer.Option(None, "--region", help="re-attribute with this grid region"),
    gco2e_per_kwh: Optional[float] = typer.Option(None, "--gco2e-per-kwh", help="re-attribute with this intensity"),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="map the trace's devices to this scenario's "
                                                                     "hardware and take its carbon settings and SLO"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="write report files here"),
    as_json: bool = typer.Option(False, "--json", help="print the report JSON"),
    draws: Optional[int] = typer.Option(None, "--draws"),
    html: Optional[Path] = typer.Option(None, "--html", "-o", help="also write a self-contained HTML report"),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="also write per-interval attribution as a "
                                           "Hive-partitioned Parquet dataset (node=…/date=…) for `query`"),
    interval: Optional[float] = typer.Option(None, "--interval", help="dataset interval in s (default 10)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="traces attributed in parallel (default: the CPUs)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also print every source, note and sensor"),
    scope: Optional[str] = typer.Option(None, "--scope", help=SCOPE_HELP + " (re-attributes the saved trace)"),
    db_dir: Optional[Path] = DbOpt,
) -> None:
    """Re-attribute a saved trace (another grid region, intensity or scope, or mapped to a scenario's hardware)
    and print the report; with many traces (or --dataset), report them together per node, tier and device."""
    from .pipeline import attribute_trace
    from .scenario import load_scenario

    _check_scope(scope)
    if len(traces) > 1 or dataset is not None or Path(traces[0]).is_dir() or any(c in traces[0] for c in "*?["):
        from .fleet.cli import report_many

        if html is not None or out_dir is not None or gco2e_per_kwh is not None or scope is not None:
            raise StoragecarbonError("report: --html, --out, --scope and --gco2e-per-kwh take one trace file")
        return report_many(traces, db_dir=db_dir, region=region, scenario=scenario, draws=draws, dataset=dataset,
                           interval=interval, jobs=jobs, as_json=as_json)
    trace = Path(traces[0])
    db = _db(db_dir)
    scn = load_scenario(scenario, db) if scenario else None
    name = scenario.stem if scenario else trace.parent.name or trace.stem
    res = attribute_trace(trace, db, scn.carbon if scn else None, scenario=name, region=region, draws=draws,
                          out_dir=out_dir, gco2e_per_kwh=gco2e_per_kwh, scope=scope, hardware=scn,
                          slo=scn.slo.model_dump() if scn else None)
    if html is not None:
        from .report.html import write_html

        write_html(html, profile=res.report, trace_path=trace)
    if as_json:
        _print_json(res.report)
    else:
        from .report.terminal import render

        render(res.report, out, verbose=verbose)


# ------------------------------------------------------------------------------------- record
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def record(
    ctx: typer.Context,
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="scenario whose hardware maps tiers to devices"),
    out_file: Path = typer.Option(Path("reports/record/trace.arrows"), "--out", help="trace file to write"),
    hz: float = typer.Option(10.0, "--hz", help="sampling rate"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="kill the command's process group after this many s"),
    disk_path: Optional[Path] = typer.Option(None, "--disk-path", help="a directory on the disk the run writes to "
                                                                       "(default: the current directory)"),
    vllm_url: Optional[str] = typer.Option(None, "--vllm-url", help="a served vLLM's metrics URL on loopback, e.g. "
                                                                    "http://127.0.0.1:8000/metrics (default: from the "
                                                                    "command's `vllm serve --host/--port`)"),
    window: Optional[str] = typer.Option(None, "--window", help="serving window START:END in s after the command "
                                                                "started (default: load markers, else vLLM activity)"),
    prometheus: Optional[str] = typer.Option(None, "--prometheus", help="serve live counters (J, gCO2e, bytes per "
                                             "device and tier) for Prometheus on HOST:PORT while recording"),
    prometheus_linger: float = typer.Option(0.0, "--prometheus-linger", help="keep serving the final counters this "
                                            "many s after the command ends (one scrape interval or more)"),
    db_dir: Optional[Path] = DbOpt,
) -> None:
    """Record any command: [bold]storagecarbon record --scenario S -- vllm serve …[/]. Then `storagecarbon report TRACE`.

    Before the run it says what the report will have and miss (hardware mapping, metrics endpoint,
    stat-logger plugin, LMCache taps); a served vLLM's run is split into start-up, serving window and
    shutdown (docs/serving.md).
    """
    from .engines.vllm_serve import finalize_serving, parse_window, preflight
    from .record.recorder import record_command
    from .scenario import load_scenario

    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise StoragecarbonError("record: give the command after --, e.g. storagecarbon record -- python serve.py")
    win = parse_window(window)
    scn = load_scenario(scenario, _db(db_dir)) if scenario else None
    env_now = {**os.environ, **LOOPBACK_ENV}
    pf = preflight(argv, scenario=scn, scenario_path=scenario, vllm_url=vllm_url, env=env_now,
                   config_dir=out_file.parent.resolve())
    for line in pf.ok:
        err.print(f"[green]record: ok[/] {line}", highlight=False, soft_wrap=True)
    for line in pf.missing:
        err.print(f"[yellow]record: missing[/] {line}", highlight=False, soft_wrap=True)
    server = exporter = None
    if prometheus:
        from .fleet.export import LiveExporter, parse_listen

        host, port = parse_listen(prometheus)
        exporter = LiveExporter(_db(db_dir), carbon=scn.carbon if scn else None)
        server = exporter.serve(host, port)
        err.print(f"[dim]Prometheus metrics on http://{host}:{server.port}/metrics[/]")
    try:
        rc = record_command(argv, out_file, scenario=scn, hz=hz, timeout_s=timeout, env={**LOOPBACK_ENV, **pf.env},
                            disk_path=disk_path, vllm_url=pf.metrics_url, db=_db(db_dir), notes=pf.notes(),
                            lmcache=True if pf.lmcache and scn is not None else None,
                            vllm_stats=pf.served is not None and pf.plugin,
                            listeners=[exporter.on_tick] if exporter else ())
        if server is not None and prometheus_linger > 0:
            __import__("time").sleep(prometheus_linger)
    finally:
        if server is not None:
            server.close()
    if pf.served is not None or pf.metrics_url or win is not None:
        info = finalize_serving(out_file, slo=scn.slo.model_dump() if scn else None, window=win)
        w = info.get("window")
        if w:
            err.print(f"record: serving window {w['start_s']:.1f}–{w['end_s']:.1f} s after start "
                      f"({info['window_source']}); start-up {info.get('startup_s', 0):.1f} s")
        elif info:
            err.print(f"[yellow]record: no serving window[/] ({info['window_source']}); per-request figures cover the "
                      "whole run")
    _print_record_outcome(out_file, rc, "" if scn else " --scenario S")
    raise typer.Exit(rc)


def _print_record_outcome(out_file: Path, rc: int, hint: str = "") -> None:
    """How the recorded command ended (from the trace footer) and where the trace is."""
    from .trace import read_trace

    status = ""
    try:
        status = str(read_trace(out_file).summary.get("command_status") or "")
    except StoragecarbonError:
        pass
    if status.startswith("failed"):
        err.print(f"[red]the recorded command {status}[/] (exit code {rc}); the trace is closed and complete up to its end")
    err.print(f"trace written to {out_file} (command exit code {rc}); next: storagecarbon report {out_file}{hint}")


# ------------------------------------------------------------------------------------ devices
def _range(low: float | None, best: float | None, high: float | None) -> str:
    """``best [low–high]``; an absent bound reads ``?``, a figure with only a best has no range."""
    from .report.units import MISSING, num

    if best is None and low is None and high is None:
        return MISSING
    mid = num(best) if best is not None else "?"
    if (low is None and high is None) or low == best == high:
        return mid
    return f"{mid} [{'?' if low is None else num(low)}–{'?' if high is None else num(high)}]"


@devices_app.command("list")
def devices_list(kind: Optional[str] = typer.Option(None, "--kind", help="gpu | dram | ssd | hdd | host | cpu"),
                 as_json: bool = typer.Option(False, "--json"),
                 verbose: bool = typer.Option(False, "--verbose", "-v", help="also list the source of each embodied figure"),
                 db_dir: Optional[Path] = DbOpt) -> None:
    """List device records: capacity, embodied carbon (best [low–high]), power; sources with --verbose."""
    from .report.terminal import table
    from .report.units import count, num

    db = _db(db_dir)
    devs = db.of_kind(kind)
    if kind is not None and not devs:
        raise StoragecarbonError(f"--kind: no devices of kind {kind!r} (kinds: gpu, dram, ssd, hdd, host, cpu)")
    if as_json:
        _print_json([d.model_dump(mode="json") for d in devs])
        return
    order = {k: i for i, k in enumerate(("gpu", "cpu", "host", "dram", "ssd", "hdd"))}
    devs = sorted(devs, key=lambda d: (order.get(d.kind, 9), d.key))
    t = table(f"{len(devs)} devices" + (f" of kind {kind}" if kind else ""))
    t.add_column("key", no_wrap=True)
    t.add_column("GB", justify="right", no_wrap=True)
    t.add_column("embodied\nkgCO2e", justify="right", no_wrap=True)
    t.add_column("per", no_wrap=True)
    t.add_column("power W\nidle/active", justify="right", no_wrap=True)
    if verbose:
        t.add_column("embodied source")
    last = None
    for d in devs:
        e = d.embodied_kgco2e
        idle = d.idle_w.central if d.idle_w else None
        act = d.active_w.central if d.active_w else None
        power = "—" if idle is None and act is None else f"{'—' if idle is None else num(idle)}/{'—' if act is None else num(act)}"
        if d.kind != last:
            if last is not None:
                t.rows[-1].end_section = True
            t.add_row(f"[bold]{d.kind}[/]", *[""] * (len(t.columns) - 1))
            last = d.kind
        cells = [d.key, "—" if d.capacity_gb is None else count(d.capacity_gb),
                 "missing" if e is None else _range(e.low, e.best, e.high), e.per if e else "", power]
        if verbose:
            cells.append(e.source if e else "")
        t.add_row(*cells)
    t.caption = ("embodied: best \\[low–high] per unit or per GB of capacity (? = bound not published); power: "
                 "idle/active, — where device_db has none (missing, not zero). Sources: --verbose, or "
                 "storagecarbon devices show KEY")
    out.print(t)


@devices_app.command("show")
def devices_show(key: str = typer.Argument(..., help="device key or exact vendor alias"),
                 as_json: bool = typer.Option(False, "--json"), db_dir: Optional[Path] = DbOpt) -> None:
    """Show one device record with every figure and its source."""
    from rich.markup import escape

    from .report.terminal import kv_grid

    d = _db(db_dir).get(key)
    rec = d.model_dump(mode="json", exclude_none=True)
    if as_json:
        _print_json(rec)
        return
    g = kv_grid()

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, list):
            g.add_row(prefix, escape(", ".join(str(x) for x in v)))
        else:
            g.add_row(prefix, escape(str(v)))

    walk("", rec)
    out.print(g)


@devices_app.command("check")
def devices_check(db_dir: Optional[Path] = DbOpt) -> None:
    """Validate every device_db file; an error names the file, the record and the field."""
    db = _db(db_dir)
    missing = [d.key for d in db.devices.values() if d.embodied_kgco2e is None]
    out.print(f"device_db OK: {len(db.devices)} devices, {len(db.regions)} grid regions, {len(db.pue)} PUE presets")
    if missing:
        out.print(f"[yellow]no embodied figure (missing, not zero):[/] {', '.join(missing)}")


@devices_app.command("regions")
def devices_regions(as_json: bool = typer.Option(False, "--json"),
                    verbose: bool = typer.Option(False, "--verbose", "-v", help="also list each figure's source"),
                    db_dir: Optional[Path] = DbOpt) -> None:
    """List grid regions (gCO2e/kWh, year, source) and PUE presets."""
    db = _db(db_dir)
    if as_json:
        _print_json({"regions": [r.model_dump(mode="json") for r in db.regions.values()],
                     "pue": [p.model_dump(mode="json") for p in db.pue.values()]})
        return
    from .report.terminal import table

    t = table(f"{len(db.regions)} grid regions")
    t.add_column("key", no_wrap=True)
    t.add_column("name")
    t.add_column("year", no_wrap=True)
    t.add_column("gCO2e/kWh", justify="right", no_wrap=True)
    if verbose:
        t.add_column("source")
    for r in db.regions.values():
        f = r.gco2e_per_kwh
        cells = [r.key, r.name, str(r.year), _range(f.low, f.best, f.high)]
        t.add_row(*(cells + [f.source] if verbose else cells))
    out.print(t)
    p = table("PUE presets")
    p.add_column("key", no_wrap=True)
    p.add_column("PUE", justify="right", no_wrap=True)
    p.add_column("what")
    for k, v in db.pue.items():
        p.add_row(k, _range(v.value.low, v.value.best, v.value.high), v.name)
    out.print(p)
    out.print("[dim]gCO2e/kWh and PUE: best \\[low–high] (? = bound not published); sources: --verbose[/]",
              highlight=False)


# ----------------------------------------------------------------------------------- scenario
@scenario_app.command("check")
def scenario_check(files: list[Path] = typer.Argument(..., help="scenario YAML files"),
                   db_dir: Optional[Path] = DbOpt) -> None:
    """Validate scenario files (errors read FILE:LINE: field: problem)."""
    from .scenario import load_scenario

    db = _db(db_dir)
    for f in files:
        s = load_scenario(f, db)
        out.print(f"{f}: OK ({s.model.dims().name}, {s.workload.num_requests()} requests, engine {s.engine.kind})")


@scenario_app.command("schema")
def scenario_schema() -> None:
    """Print the scenario JSON Schema (for editors: yaml-language-server, VS Code)."""
    from .scenario_doc import json_schema

    _print_json(json_schema())


@scenario_app.command("reference")
def scenario_reference(write: Optional[Path] = typer.Option(None, "--write", help="write the Markdown here "
                                                                                  "(docs/scenario-reference.md)")) -> None:
    """Print (or write) the scenario reference: every field with its type, unit, default and meaning."""
    from .scenario_doc import render_reference, undocumented

    missing = undocumented()
    if missing:
        raise StoragecarbonError(f"scenario fields without a meaning: {', '.join(missing)} "
                                 "(add a description in scenario.py or an entry in scenario_doc.FIELD_DOCS)")
    text = render_reference()
    if write is None:
        sys.stdout.write(text)
        return
    write.write_text(text, encoding="utf-8")
    out.print(f"wrote {write}")


# ---------------------------------------------------------------------------------------- env
@app.command()
def env(as_json: bool = typer.Option(False, "--json")) -> None:
    """Which sensors and engines are available on this machine, and why not."""
    from .environment import probe_all

    info = probe_all()
    if as_json:
        _print_json(info)
        return
    from rich.table import Table

    t = Table(title="sensors and engines on this machine")
    t.add_column("name")
    t.add_column("available")
    t.add_column("why / detail", overflow="fold")
    for section in ("sensors", "engines"):
        for name, st in info[section].items():
            t.add_row(f"{section[:-1]} {name}", "[green]yes[/]" if st["available"] else "[red]no[/]", st["reason"])
    out.print(t)


def _register_optional() -> None:
    """Commands implemented in their own modules (compare, plan, calibrate)."""
    for mod in ("storagecarbon.plan.cli", "storagecarbon.calibrate", "storagecarbon.fleet.cli"):
        try:
            m = __import__(mod, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        m.register(app)


_register_optional()


def main(argv: list[str] | None = None) -> int:
    for k, v in LOOPBACK_ENV.items():
        os.environ.setdefault(k, v)
    try:
        rc = app(args=argv, prog_name="storagecarbon", standalone_mode=False)
        if isinstance(rc, int):
            return rc
    except StoragecarbonError as exc:
        err.print(f"[red]storagecarbon: error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    except _CLICK_ERRORS as exc:
        exc.show()   # a usage error: one line and the command's usage, exit 2
        return int(getattr(exc, "exit_code", 2))
    return 0


def _click_errors() -> tuple[Any, ...]:
    """Click's exception base, and the copy of Click that Typer >= 0.24 vendors (``typer._click``): a usage
    error from either is a clean message, not a traceback."""
    import click

    out: list[Any] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as Vendored  # type: ignore[import-not-found]

        out.append(Vendored)
    except ImportError:
        pass
    return tuple(out)


_CLICK_ERRORS = _click_errors()


if __name__ == "__main__":
    sys.exit(main())
