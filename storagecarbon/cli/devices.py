"""``devices``: the sourced device database."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import StoragecarbonError
from .app import DbOpt, _db, _print_json, devices_app, out


# ------------------------------------------------------------------------------------ devices
def _range(low: float | None, best: float | None, high: float | None) -> str:
    """``best [low–high]``; an absent bound reads ``?``, a figure with only a best has no range."""
    from ..report.units import MISSING, num

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
    from ..report.terminal import table
    from ..report.units import count, num

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

    from ..report.terminal import kv_grid

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
    from ..report.terminal import table

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
