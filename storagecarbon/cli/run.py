"""``profile``, ``report`` and ``record``: run or record a workload and report its carbon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import StoragecarbonError
from .app import DbOpt, LOOPBACK_ENV, SCOPE_HELP, _check_scope, _db, _print_json, app, err, out


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
    from ..pipeline import profile as run_profile

    if mode not in ("auto", "modeled", "measured"):
        raise StoragecarbonError(f"--mode: {mode!r} is not one of auto, modeled, measured")
    _check_scope(scope)
    from ..report.progress import progress

    db = _db(db_dir)
    with progress(err, "profile") as step:
        res = run_profile(scenario, db=db, out_dir=out_dir, mode=mode, region=region, draws=draws, scope=scope,
                          progress=step)
    if html is not None:
        from ..report.html import write_html

        write_html(html, profile=res.report, trace_path=res.trace_path)
    if as_json:
        _print_json(res.report)
        return
    from ..report.terminal import render

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
    from ..pipeline import attribute_trace
    from ..scenario import load_scenario

    _check_scope(scope)
    if len(traces) > 1 or dataset is not None or Path(traces[0]).is_dir() or any(c in traces[0] for c in "*?["):
        from ..fleet.cli import report_many

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
        from ..report.html import write_html

        write_html(html, profile=res.report, trace_path=trace)
    if as_json:
        _print_json(res.report)
    else:
        from ..report.terminal import render

        render(res.report, out, verbose=verbose)


# ------------------------------------------------------------------------------------- record
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def record(
    ctx: typer.Context,
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="scenario whose hardware maps tiers to devices"),
    out_file: Path = typer.Option(Path("reports/record/trace.arrows"), "--out", help="trace file to write"),
    hz: float = typer.Option(10.0, "--hz", help="sampling rate"),
    hold_s: float = typer.Option(1.0, "--hold-s", help="an unchanged reading is written at least this often "
                                 "(a run of equal readings keeps its first and last row); 0 writes every reading"),
    full_rate: bool = typer.Option(False, "--full-rate", help="read every source on every tick, NVML's energy "
                                   "counter too (default: every 5 s and at each phase marker; it costs ~3.4 ms of CPU "
                                   "per GPU and read on an H200): for short benchmark runs with sub-second phases"),
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
    from ..engines.vllm_serve import parse_window, preflight, serving_finish
    from ..record.recorder import record_command
    from ..scenario import load_scenario

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
        from ..fleet.export import LiveExporter, parse_listen

        host, port = parse_listen(prometheus)
        exporter = LiveExporter(_db(db_dir), carbon=scn.carbon if scn else None)
        server = exporter.serve(host, port)
        err.print(f"[dim]Prometheus metrics on http://{host}:{server.port}/metrics[/]")
    finish, info = (serving_finish(slo=scn.slo.model_dump() if scn else None, window=win)
                    if pf.served is not None or pf.metrics_url or win is not None else (None, {}))
    try:
        rc = record_command(argv, out_file, scenario=scn, hz=hz, hold_s=hold_s, timeout_s=timeout, env={**LOOPBACK_ENV, **pf.env},
                            disk_path=disk_path, vllm_url=pf.metrics_url, db=_db(db_dir), notes=pf.notes(),
                            lmcache=True if pf.lmcache and scn is not None else None,
                            vllm_stats=pf.served is not None and pf.plugin,
                            listeners=[exporter.on_tick] if exporter else (), finish=finish, full_rate=full_rate)
        if server is not None and prometheus_linger > 0:
            __import__("time").sleep(prometheus_linger)
    finally:
        if server is not None:
            server.close()
    if finish is not None:
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
    from ..trace import read_trace

    status = ""
    try:
        status = str(read_trace(out_file).summary.get("command_status") or "")
    except StoragecarbonError:
        pass
    if status.startswith("failed"):
        err.print(f"[red]the recorded command {status}[/] (exit code {rc}); the trace is closed and complete up to its end")
    err.print(f"trace written to {out_file} (command exit code {rc}); next: storagecarbon report {out_file}{hint}")
