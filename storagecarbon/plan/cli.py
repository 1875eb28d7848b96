"""``storagecarbon compare`` and ``storagecarbon plan``: rich terminal output over planner results."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..errors import StoragecarbonError
from ..report import units as U
from ..report.terminal import is_wide, kv_grid, mode_badge, slo_lines, table


# ------------------------------------------------------------------------------ compare
def _short_names(opts: list[dict[str, Any]]) -> list[str]:
    return [f"#{i}" for i in range(1, len(opts) + 1)]


def render_compare(res: dict[str, Any], console: Console, *, verbose: bool = False) -> None:
    opts = res["options"]
    modes = {o["mode"] for o in opts}
    mode = modes.pop() if len(modes) == 1 else "MIXED"
    short = _short_names(opts)
    cand = res.get("candidates") or {}
    out_names = {e["name"]: e["reason"] for e in cand.get("excluded", [])}
    g = kv_grid()
    for sn, o in zip(short, opts):
        state = f"[red]out: {escape(out_names[o['name']])}[/]" if o["name"] in out_names else "[green]candidate[/]"
        g.add_row(sn, f"[bold]{o['name']}[/] ({o['mode']}) — {state}")
    rk = cand.get("ranking") or res["ranking"]
    if rk["by_p95"]:
        best = rk["by_p95"][0]
        p_low = (cand.get("p_lowest") or res["p_lowest"]).get(best)
        g.add_row("lowest", f"[bold]{best}[/] by P95 of gCO2e per 1k tokens among candidates; P(lowest) {U.prob(p_low)}"
                  + (f"; by median: {rk['by_p50'][0]}" if rk["by_p50"][0] != best else ""))
    else:
        g.add_row("lowest", "[red]no option meets its SLO[/]")
    g.add_row(mode, f"{res['draws']:,} paired draws, seed {res['seed']}: every option sees the same device, grid and "
                    "PUE draws")
    console.print(Panel(g, title=Text.assemble(mode_badge(mode), "  compare"), title_align="left"))

    stacked = not is_wide(console)
    t = table("Side by side, P50 [P5–P95]" + (" (range below)" if stacked else ""))
    t.add_column("", no_wrap=True)
    for sn, o in zip(short, opts):
        t.add_column(sn + ("" if o["name"] not in out_names else " (out)"), justify="right", no_wrap=True)

    def band_row(label: str, bands: list[Any], unit_ladder: U.Ladder = U.MASS, bold: bool = False) -> None:
        col = U.Column(bands, unit_ladder)
        cells = [col.band(b, stacked) if b is not None else "—" for b in bands]
        if bold:
            cells = [f"[bold]{c}[/]" for c in cells]
        t.add_row(f"{label} ({col.unit})" if not bold else f"[bold]{label} ({col.unit})[/]", *cells)

    band_row("per 1k tokens", [o.get("per_1k_tokens_gco2e") for o in opts], bold=True)
    band_row("per request", [o.get("per_request_gco2e") for o in opts])
    band_row("embodied/run", [o["totals"]["embodied_gco2e"] for o in opts])
    band_row("operational/run", [o["totals"]["operational_gco2e"] for o in opts])
    band_row("total/run", [o["totals"]["total_gco2e"] for o in opts], )
    t.add_row("P(lowest)", *[U.prob((cand.get("p_lowest") or {}).get(o["name"])) if o["name"] not in out_names
                             else "out" for o in opts])
    for key, lab in (("ttft_ms", "TTFT p90"), ("tpot_ms", "TPOT p90")):
        cells = []
        for o in opts:
            v = (o["latency"].get("slo") or {}).get(key) or {}
            st = o["latency"].get(key) or {}
            p90 = v.get("p90", st.get("p90"))
            txt = U.millis(p90)
            if v.get("met") is False:
                txt = f"[red]{txt}[/]"
            cells.append(txt)
        tgt = {((o["latency"].get("slo") or {}).get(key) or {}).get("target") for o in opts} - {None}
        t.add_row(lab + (f" ≤ {U.millis(tgt.pop())}" if len(tgt) == 1 else ""), *cells, end_section=(key == "tpot_ms"))
    for tier in res["tiers"]:
        rows = [next((r for r in o["tiers"] if r["tier"] == tier), None) for o in opts]
        vals = [r.get("total_gco2e") if r and r.get("present") else None for r in rows]
        band_row(f"{tier} total", vals)
    t.add_row("grid", *[o["grid"]["label"].split(":", 1)[-1] for o in opts])
    console.print(t)
    d = table("Hardware")
    d.add_column("", no_wrap=True)
    d.add_column("tier", no_wrap=True)
    d.add_column("devices")
    for sn, o in zip(short, opts):
        for r in o["tiers"]:
            if r.get("present"):
                d.add_row(sn, r["tier"], ", ".join(x.replace(" x ", " × ") for x in r["devices"]))
        d.rows[-1].end_section = True if d.rows else False
    console.print(d)
    p = table("Paired draws: probability that A emits less than B per 1k tokens")
    cols: tuple[tuple[str, JustifyMethod], ...] = (("A", "left"), ("B", "left"), ("P(A<B)", "right"),
                                                   ("A − B", "right"), ("(A − B)/B", "right"))
    for c, j in cols:
        p.add_column(c, justify=j, no_wrap=True)
    col = U.Column([pr["diff_per_1k_gco2e"] for pr in res["pairs"]], U.MASS)
    p.columns[3].header = col.head("A − B")
    idx = {o["name"]: sn for sn, o in zip(short, opts)}
    for pr in res["pairs"]:
        r = pr["rel_diff"]
        p.add_row(idx[pr["a"]], idx[pr["b"]], U.prob(pr["p_a_less"]), col.band(pr["diff_per_1k_gco2e"]),
                  f"{U.share(r['p50'], True)} [{U.share(r['p5'], True)}, {U.share(r['p95'], True)}]")
    console.print(p)
    if verbose:
        _sources(res.get("sources") or {}, console)
    for w in sorted({w for o in opts for w in o["warnings"]}):
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


def _sources(src: dict[str, Any], console: Console) -> None:
    lines = []
    for key, v in src.items():
        if isinstance(v, dict):
            for what, txt in v.items():
                lines.append(f"[bold]{escape(key)}[/] {what}: {escape(str(txt or U.MISSING))}")
        else:
            lines.append(f"[bold]{escape(key)}[/] {escape(str(v))}")
    console.print(Panel("\n".join(lines) or "—", title="Sources", title_align="left"))


# ------------------------------------------------------------------------------ plan
def hw_label(hw: dict[str, Any], engine: bool = True) -> str:
    """A configuration in a few words: ``2× a100-sxm4-80gb · 8× ddr4-rdimm-64gb · KV DRAM 256 GB · util 0.95, seqs 64``."""
    parts = [f"{hw['gpu']['count']}× {hw['gpu']['device']}"]
    for slot in ("dram", "ssd", "hdd"):
        if hw.get(slot):
            parts.append(f"{hw[slot]['count']}× {hw[slot]['device']}")
    w = hw.get("weights") or {}
    if w and w.get("hbm", 0) < 1:
        parts.append("weights " + "/".join(f"{t} {U.share(f)}" for t, f in w.items()))
    kv = hw.get("kv") or {}
    kvs = [f"{lab} {U.count(kv[k])} GB" for k, lab in (("cpu_gb", "DRAM"), ("disk_gb", "disk")) if kv.get(k)]
    if kvs:
        parts.append("KV " + " + ".join(kvs))
    if engine:
        parts.append(f"util {hw.get('gpu_memory_utilization'):g}, seqs {hw.get('max_num_seqs')}")
    return " · ".join(parts)


def _bom_table(bom: dict[str, Any], vs: dict[str, Any] | None) -> Table:
    t = table("What to buy")
    t.add_column("item", no_wrap=True)
    t.add_column("buy")
    t.add_column("base scenario")
    for it in bom["devices"]:
        buy = "none" if not it["device"] else f"{it['count']} × {it['device']}"
        if it.get("capacity_gb_total"):
            buy += f" ({U.nbytes(it['capacity_gb_total'] * 1e9)})"
        b = it["base"]
        base = "none" if not b["device"] else f"{b['count']} × {b['device']}"
        if b["device"] == it["device"] and b["count"] == it["count"]:
            base = "[dim]same[/]"
        if it.get("note"):
            base += " [dim](not swept)[/]"
        t.add_row(it["item"], buy, base)
    kv = bom["kv"]

    def kv_txt(cpu: float, disk: float, dev: str | None = None) -> str:
        parts = ["HBM"] + ([f"DRAM {U.count(cpu)} GB"] if cpu else []) + \
                ([f"disk {U.count(disk)} GB" + (f" on {dev}" if dev else "")] if disk else [])
        return " + ".join(parts)

    bh = (vs or {}).get("base_hardware") or {}
    bkv = bh.get("kv") or {}
    t.add_row("KV cache tiers", kv_txt(kv["cpu_gb"], kv["disk_gb"], kv.get("disk_device")),
              kv_txt(bkv.get("cpu_gb", 0), bkv.get("disk_gb", 0)) if bh else "")
    wtxt = lambda w: ", ".join(f"{U.share(f)} {t_.upper()}" for t_, f in w.items())  # noqa: E731
    t.add_row("weights", wtxt(bom["weights"]), wtxt(bh.get("weights") or {}) if bh else "")
    e = bom["engine"]
    t.add_row("vLLM settings", f"util {e['gpu_memory_utilization']:g}, seqs {e['max_num_seqs']}",
              (f"util {bh.get('gpu_memory_utilization'):g}, seqs {bh.get('max_num_seqs')}" if bh else "")
              + " [dim](settings, not purchases)[/]")
    return t


def _answer_grid(pu: dict[str, Any], res: dict[str, Any]) -> Table:
    pick = pu["pick"]
    g = kv_grid()
    q = pick["per_1k_tokens_gco2e"]
    g.add_row("per 1k tokens", f"[bold]{U.band(q)}[/] (P95 {U.grams(pick['robust_gco2e_per_1k'])}); embodied "
                               f"{U.grams(pick['embodied_per_1k_gco2e']['p50'])}, operational "
                               f"{U.grams(pick['operational_per_1k_gco2e']['p50'])} (P50)")
    vs = pu.get("vs_base") or {}
    if vs.get("same_hardware"):
        g.add_row("vs base", "the base scenario's hardware is already the pick")
    elif vs.get("saving_per_1k_gco2e"):
        sv, sh = vs["saving_per_1k_gco2e"], vs["saving_share"]
        verb = "saves" if sv["p50"] >= 0 else "[red]adds[/]"
        sv_abs = sv if sv["p50"] >= 0 else {k: -v for k, v in sv.items()}
        if sv["p50"] < 0:
            sv_abs = {"p5": sv_abs["p95"], "p50": sv_abs["p50"], "p95": sv_abs["p5"]}
        g.add_row("vs base", f"{verb} [bold]{U.band(sv_abs)}[/] per 1k tokens = [bold]{U.share(abs(sh['p50']))}[/] "
                             f"[{U.share(abs(sh['p5']))}–{U.share(abs(sh['p95']))}] of the base's "
                             f"{U.band(vs['base_per_1k_tokens_gco2e'])}; P(pick lower) {U.prob(vs['p_pick_lower'])}"
                             + ("" if vs.get("base_slo_met", True) else " [yellow](the base misses the SLO)[/]"))
    else:
        g.add_row("vs base", f"not comparable: {vs.get('reason', 'base hardware not evaluated')}")
    slo = {k: {"p90": v["p90"], "target": v["target"], "met": v["met"]} for k, v in (pu.get("slo_headroom") or {}).items()}
    verdict, lines = slo_lines(slo)
    g.add_row("SLO", verdict + ("\n" + "\n".join(lines) if lines else ""))
    return g


def _what_if_table(pu: dict[str, Any]) -> tuple[Table, list[str]]:
    wi = pu["what_if"]
    letters = [chr(ord("A") + i) for i in range(len(wi["lifetimes"]))]
    vals = [x for r in wi["grids"] for c in r["per_1k_tokens_gco2e"] for x in (c["p50"], c["p95"])]
    col = U.Column(vals, U.MASS)
    t = table(f"What if: this hardware on other grids and lifetimes (per 1k tokens, {col.unit}, P50 / P95)")
    t.add_column("grid", no_wrap=True)
    t.add_column("g/kWh", justify="right", no_wrap=True)
    for L in letters:
        t.add_column(f"lifetime {L}", justify="right", no_wrap=True)
    t.add_column("best hardware on that grid")
    for r in wi["grids"]:
        mark = " ◀" if r["grid"] == pu["grid"] else ""
        t.add_row(r["grid"] + mark, U.num(r["gco2e_per_kwh_p50"]),
                  *[f"{col(c['p50'])} / {col(c['p95'])}" for c in r["per_1k_tokens_gco2e"]],
                  "[dim]same[/]" if not r["best_hardware"] else r["best_hardware"])
    legend = [f"lifetime {L}: {n}" for L, n in zip(letters, wi["lifetimes"])]
    return t, legend


def _ranked_table(rows: list[dict[str, Any]], title: str, console: Console) -> Table:
    stacked = not is_wide(console)
    col = U.Column([r["per_1k_tokens_gco2e"] for r in rows], U.MASS)
    t = table(title)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("hardware · KV tiers · vLLM settings")
    t.add_column(f"per 1k tokens\n{col.unit}, P50 [P5–P95]" if stacked else f"per 1k tokens ({col.unit}) P50 [P5–P95]",
                 justify="right", no_wrap=True)
    t.add_column("TPOT\np90" if stacked else "TPOT p90", justify="right", no_wrap=True)
    t.add_column("P(lowest)" if not stacked else "P\n(lowest)", justify="right", no_wrap=True)
    if not stacked:
        t.add_column("TTFT p90", justify="right", no_wrap=True)
        t.add_column("SLO", no_wrap=True)
    for i, r in enumerate(rows, 1):
        lab = hw_label(r["hardware"])
        if r.get("equivalent_configurations"):
            lab += f" [dim](+{r['equivalent_configurations']} alike)[/]"
        tpot = U.millis(r["tpot_p90_ms"])
        cells = [str(i), lab, col.band(r["per_1k_tokens_gco2e"], stacked), tpot if r["slo_met"] else f"[red]{tpot}[/]",
                 U.prob(r["p_lowest"])]
        if not stacked:
            cells += [U.millis(r["ttft_p90_ms"]), "[green]met[/]" if r["slo_met"] else "[red]missed[/]"]
        t.add_row(*cells)
    return t


COLUMN_LEGEND = [
    ("P50 [P5–P95]", "median and 5–95 % band over the paired Monte Carlo draws (device figures, grid, PUE)"),
    ("P95", "the robust ranking metric: the pick has the lowest 95th percentile, so it stays low when the "
            "uncertain inputs turn out badly"),
    ("P(lowest)", "share of draws in which the configuration is the lowest of all candidates on its grid and "
                  "lifetime"),
    ("TTFT, TPOT p90", "time to first token and time per output token, 90th percentile over requests (SLO: at or "
                       "under the target; tight: under 15 % headroom)"),
    ("util, seqs", "vLLM gpu_memory_utilization and max_num_seqs: settings of the configuration, not purchases"),
    ("KV DRAM/disk", "LMCache KV-cache tiers: GB reserved in host DRAM and on the SSD/HDD"),
    ("+N alike", "N more configurations with identical results: they differ only in a device that carries nothing "
                 "(e.g. an SSD with no KV on disk)"),
    ("g/kWh", "grid carbon intensity, P50; ◀ marks the grid the pick was made for"),
]


def render_plan(res: dict[str, Any], console: Console, top: int | None = None, *, verbose: bool = False) -> None:
    c = res["counts"]
    pu = res.get("purchase") or {}
    slo_txt = ", ".join(f"{k.replace('_ms', '').upper()} p90 ≤ {U.millis(v)}" for k, v in (res.get("slo") or {}).items()
                        if v is not None) or "none"
    g = kv_grid()
    g.add_row("swept", f"{U.count(c['hardware'])} hardware configurations × {c['lifetimes']} lifetime assumptions × "
                       f"{c['grids']} grids, {U.count(c['draws'])} paired draws each")
    g.add_row("kept", f"{U.count(c['feasible_hardware'])} run the workload; {U.count(c['slo_met_hardware'])} meet the "
                      f"SLO ({slo_txt}); {U.count(c['eligible_hardware'])} with complete device data are candidates")
    if pu:
        g.add_row("decided on", f"grid {pu['grid']}, lifetime assumption '{pu['lifetime']}' (--grid changes the grid; "
                                "the others are what-ifs below)")
    g.add_row(res.get("mode", "MODELED"), escape(res.get("mode_reason", "")))
    console.print(Panel(g, title=Text.assemble(mode_badge(res.get("mode", "MODELED")), "  plan ",
                                               (res["sweep"]["name"], "bold"), f"  base {res['base_scenario']}"),
                        title_align="left"))
    if not pu or not pu.get("pick"):
        console.print("[red]no configuration meets the SLO with complete device data on the decision grid[/]")
    else:
        console.print(_bom_table(pu["bom"], pu.get("vs_base")))
        console.print(Panel(_answer_grid(pu, res), title=f"The pick on grid {pu['grid']}", title_align="left"))
        wt, legend = _what_if_table(pu)
        wt.caption = "; ".join(legend) + ". The hardware pick stays the same where 'same' is shown."
        console.print(wt)
        rows = (pu.get("top") or [])[: top or None]
        console.print(_ranked_table(rows, f"Top {len(rows)} hardware on grid {pu['grid']}, lifetime A, by P95", console))
    pf = res.get("pareto") or {}
    if pf.get("latency_vs_p95"):
        console.print(_ranked_table(pf["latency_vs_p95"], f"Trade-off: faster costs more (Pareto frontier of TPOT p90 "
                                                          f"and P95, grid {pf['grid']})", console))
    if verbose and pf.get("embodied_vs_operational"):
        console.print(_ranked_table(pf["embodied_vs_operational"], "Pareto frontier, embodied vs operational", console))
    if res.get("infeasible_reasons"):
        console.print("[bold]Not run[/] (hardware that cannot serve the workload):", highlight=False)
        for k, v in res["infeasible_reasons"].items():
            console.print(f"  {U.count(v)} × {escape(k)}", highlight=False)
    for x in res.get("not_ranked", []):
        console.print(f"[yellow]not ranked:[/] {escape(x)}", highlight=False)
    leg = kv_grid()
    for k, v in COLUMN_LEGEND:
        leg.add_row(k, v)
    console.print(Panel(leg, title="Columns", title_align="left", border_style="dim"))
    for w in res.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)


def register(app: typer.Typer) -> None:
    from ..report.progress import progress

    err = Console(stderr=True)

    @app.command()
    def compare(
        inputs: list[Path] = typer.Argument(..., help="scenario YAMLs (modeled), report directories or trace files"),
        as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
        html: Optional[Path] = typer.Option(None, "--html", "-o", help="also write a self-contained HTML report"),
        draws: int = typer.Option(2000, "--draws", help="paired Monte Carlo draws"),
        seed: int = typer.Option(0, "--seed", help="seed of the shared draws"),
        region: Optional[str] = typer.Option(None, "--region", help="put every option on this grid region"),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="keep the modeled reports here (default: a temp dir)"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="also print every source"),
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Compare options side by side per tier, with paired probabilities that one emits less than another."""
        from ..devicedb import DeviceDB
        from .compare import compare as run_compare
        from .options import load_option, option_names

        if len(inputs) < 2:
            raise StoragecarbonError("compare: give at least two scenarios, report directories or traces")
        if draws < 10:
            raise StoragecarbonError("--draws: at least 10")
        db = DeviceDB.load(db_dir)
        tmp = None
        root = out_dir
        if root is None:
            tmp = tempfile.TemporaryDirectory(prefix="storagecarbon-compare-")
            root = Path(tmp.name)
        try:
            with progress(err, "compare") as step:
                names = option_names(inputs)
                opts = [load_option(p, db, out_root=root, region=region, progress=step, name=n)
                        for p, n in zip(inputs, names)]
                step("paired draws")
                res = run_compare(opts, db, draws=draws, seed=seed)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if html is not None:
            from ..report.html import write_html

            write_html(html, compare=res)
        if as_json:
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        console = Console()
        render_compare(res, console, verbose=verbose)
        if html is not None:
            console.print(f"[dim]html: {html}[/]")

    @app.command()
    def plan(
        scenario: Path = typer.Argument(..., help="base scenario: model, workload, KV chunking, PUE, allocation, SLO"),
        sweep: Path = typer.Option(..., "--sweep", help="sweep YAML (see scenarios/sweeps/)"),
        as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
        html: Optional[Path] = typer.Option(None, "--html", "-o", help="also write a self-contained HTML report"),
        top: int = typer.Option(10, "--top", help="how many configurations to list"),
        grid: Optional[str] = typer.Option(None, "--grid", help="grid of the Pareto charts (default: the scenario's region)"),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="also print the embodied/operational frontier"),
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Sweep tier configurations with the analytic model; Pareto frontier and a robust (P95) pick."""
        from ..devicedb import DeviceDB
        from ..model.constants import constants_for
        from ..scenario import load_scenario
        from .plan import plan as run_plan
        from .sweep import load_sweep

        if top < 1:
            raise StoragecarbonError("--top: at least 1")
        db = DeviceDB.load(db_dir)
        base = load_scenario(scenario, db)
        loaded = load_sweep(sweep, db)
        constants = constants_for(base, scenario)  # calibration: resolved as profile resolves it
        with progress(err, "plan") as step:
            res = run_plan(base, loaded, db, top=top, constants=constants, progress=step, detail_grid=grid)
        if html is not None:
            from ..report.html import write_html

            write_html(html, plan=res)
        if as_json:
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        console = Console()
        render_plan(res, console, top, verbose=verbose)
        if html is not None:
            console.print(f"[dim]html: {html}[/]")
