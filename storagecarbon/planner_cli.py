"""``storagecarbon compare`` and ``storagecarbon plan``: rich terminal output over planner results."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .errors import StoragecarbonError
from .report.terminal import band, fmt_g


def _mode_text(mode: str) -> Text:
    mode = mode.upper()
    style = "bold green" if mode == "MEASURED" else "bold yellow" if mode == "MODELED" else "bold"
    return Text(f" {mode} ", style=f"{style} reverse")


def _slo_txt(slo: dict[str, Any] | None) -> str:
    if not slo:
        return "no SLO"
    parts = []
    for key, v in slo.items():
        if not isinstance(v, dict):
            continue
        met = v.get("met")
        p90 = v.get("p90")
        mark = "[green]met[/]" if met else "[red]missed[/]" if met is False else "?"
        parts.append(f"{key.replace('_ms', '').upper()} p90 {p90:.4g}/{v.get('target'):g} ms {mark}" if p90 is not None
                     else f"{key} ?")
    return "\n".join(parts)


def render_compare(res: dict[str, Any], console: Console) -> None:
    opts = res["options"]
    modes = {o["mode"] for o in opts}
    title = Text.assemble(_mode_text(modes.pop() if len(modes) == 1 else "MIXED"), "  compare ",
                          (", ".join(o["name"] for o in opts), "bold"))
    console.print(Panel(Text(f"{res['pairing']}.\n{res['draws']} draws, seed {res['seed']}; metric: {res['metric']}."),
                        title=title, title_align="left"))
    t = Table(title="Side by side — gCO2e P50 [P5–P95] (per run unless stated)", show_lines=True)
    t.add_column("")
    for o in opts:
        t.add_column(f"{o['name']}\n{o['mode']}", overflow="fold")
    for tier in res["tiers"]:
        cells = []
        for o in opts:
            row = next((r for r in o["tiers"] if r["tier"] == tier), None)
            if not row or not row.get("present"):
                cells.append("—")
            else:
                cells.append(f"emb {band(row['embodied_gco2e'])}\nop  {band(row['operational_gco2e'])}\n[dim]{', '.join(row['devices'])}[/]")
        t.add_row(tier, *cells)
    t.add_row("embodied", *[band(o["totals"]["embodied_gco2e"]) for o in opts])
    t.add_row("operational", *[band(o["totals"]["operational_gco2e"]) for o in opts])
    t.add_row("total", *[band(o["totals"]["total_gco2e"]) for o in opts])
    t.add_row("[bold]per 1k generated tokens[/]", *[f"[bold]{band(o['per_1k_tokens_gco2e'])}[/]" for o in opts])
    t.add_row("per request", *[band(o["per_request_gco2e"]) for o in opts])
    t.add_row("TTFT / TPOT vs SLO", *[_slo_txt(o["latency"].get("slo")) for o in opts])
    t.add_row("P(lowest per 1k tokens)", *[f"{res['p_lowest'][o['name']]:.2f}" for o in opts])
    t.add_row("grid", *[f"{o['grid']['label']} ({band(o['grid']['gco2e_per_kwh']).replace(' g', '')} g/kWh)" for o in opts])
    console.print(t)
    p = Table(title="Paired Monte Carlo: probability that A emits less than B (per 1k generated tokens)")
    for c in ("A", "B", "P(A<B)", "P(B<A)", "A − B [P5–P95]", "(A − B)/B"):
        p.add_column(c, overflow="fold")
    for pr in res["pairs"]:
        r = pr["rel_diff"]
        p.add_row(pr["a"], pr["b"], f"{pr['p_a_less']:.3f}", f"{pr['p_b_less']:.3f}", band(pr["diff_per_1k_gco2e"]),
                  f"{r['p50']:+.1%} [{r['p5']:+.1%}, {r['p95']:+.1%}]")
    console.print(p)
    rk = res["ranking"]
    console.print(f"ranking by median: {' < '.join(rk['by_p50'])}")
    console.print(f"ranking by P95:    {' < '.join(rk['by_p95'])}")
    if rk["by_p50"][0] != rk["by_p95"][0]:
        console.print(f"[yellow]the robust (P95) choice {rk['by_p95'][0]} differs from the median choice {rk['by_p50'][0]}[/]")
    for w in sorted({w for o in opts for w in o["warnings"]}):
        console.print(f"[yellow]warning:[/] {w}")


def _plan_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for c in ("#", "configuration", "lifetime", "grid", "gCO2e/1k tok P50 [P5–P95]", "P95", "emb P50", "op P50",
              "TTFT p90", "TPOT p90", "P(lowest)", "SLO"):
        t.add_column(c, overflow="fold")
    for i, r in enumerate(rows, 1):
        q = r["per_1k_tokens_gco2e"]
        eq = f" [dim](+{r['equivalent_configurations']} equivalent)[/]" if r.get("equivalent_configurations") else ""
        t.add_row(str(i), r["label"] + eq, r["lifetime"], r["grid"],
                  f"{fmt_g(q['p50'])} [{fmt_g(q['p5'])}–{fmt_g(q['p95'])}]", fmt_g(r["robust_gco2e_per_1k"]),
                  fmt_g(r["embodied_per_1k_gco2e"]["p50"]), fmt_g(r["operational_per_1k_gco2e"]["p50"]),
                  f"{r['ttft_p90_ms']:.4g} ms", f"{r['tpot_p90_ms']:.4g} ms", f"{r['p_lowest']:.2f}",
                  "[green]met[/]" if r["slo_met"] else "[red]missed[/]")
    return t


def render_plan(res: dict[str, Any], console: Console, top: int | None = None) -> None:
    c = res["counts"]
    title = Text.assemble(_mode_text(res.get("mode", "MODELED")), "  plan ", (res["sweep"]["name"], "bold"),
                          f"  (base {res['base_scenario']})")
    console.print(Panel(Text(
        f"{res['mode_reason']}\n{c['configurations']} configurations = {c['hardware']} hardware x {c['lifetimes']} lifetime "
        f"assumptions x {c['grids']} grids, {c['draws']} paired draws each\n{c['feasible_hardware']} hardware configurations "
        f"feasible, {c['slo_met_hardware']} meet the SLO {json.dumps(res['slo'])}, {c['eligible_hardware']} eligible"),
        title=title, title_align="left"))
    rec = res["recommendation"]
    if rec["robust"]:
        rb, md = rec["robust"], rec["median"]
        q = rb["per_1k_tokens_gco2e"]
        msg = (f"[bold]robust pick[/] ({rec['rule']}):\n  {rb['label']}\n  lifetime: {rb['lifetime']}; grid: {rb['grid']}\n"
               f"  {fmt_g(q['p50'])} [{fmt_g(q['p5'])}–{fmt_g(q['p95'])}] per 1k tokens; embodied "
               f"{fmt_g(rb['embodied_per_1k_gco2e']['p50'])}, operational {fmt_g(rb['operational_per_1k_gco2e']['p50'])}; "
               f"TTFT p90 {rb['ttft_p90_ms']:.4g} ms, TPOT p90 {rb['tpot_p90_ms']:.4g} ms; P(lowest) {rb['p_lowest']:.2f}")
        if rec["robust_differs_from_median"]:
            mq = md["per_1k_tokens_gco2e"]
            msg += (f"\n[yellow]median pick differs:[/] {md['label']} ({md['lifetime']}, {md['grid']}): "
                    f"P50 {fmt_g(mq['p50'])}, P95 {fmt_g(mq['p95'])}")
        else:
            msg += "\nthe median pick is the same configuration"
        console.print(Panel(msg, title="Recommendation", title_align="left"))
    else:
        console.print("[red]no configuration meets the SLO with complete device data[/]")
    g = Table(title="Best robust choice per grid, clean → dirty")
    for col in ("grid", "gCO2e/kWh P50", "robust pick", "lifetime", "P50 /1k", "P95 /1k", "median pick if different"):
        g.add_column(col, overflow="fold")
    prev = None
    for row in res["by_grid"]:
        rp, mp = row["robust_pick"], row["median_pick"]
        key = (rp["label"], rp["lifetime"]) if rp else None
        same = key is not None and key == prev
        prev = key
        g.add_row(row["grid"], f"{row['gco2e_per_kwh_p50']:.4g}", ("[dim]same[/]" if same else rp["label"]) if rp else "—",
                  ("" if same else rp["lifetime"]) if rp else "",
                  fmt_g(rp["per_1k_tokens_gco2e"]["p50"]) if rp else "—", fmt_g(rp["robust_gco2e_per_1k"]) if rp else "—",
                  mp["label"] if mp and rp and mp["id"] != rp["id"] else "")
    console.print(g)
    ch = res["choice_changes"]
    if len(ch) <= 1:
        console.print(f"the robust choice is the same on every grid{': ' + ch[0]['choice'] if ch else ''}")
    else:
        console.print("the robust choice changes: " + " → ".join(f"{x['choice']} (from {x['from_grid']})" for x in ch))
    pf = res["pareto"]
    console.print(_plan_table(pf["latency_vs_p95"], f"Pareto frontier, TPOT p90 vs P95 of gCO2e/1k tokens (grid {pf['grid']}, "
                                                    f"lifetimes: {pf['lifetime']})"))
    console.print(_plan_table(pf["embodied_vs_operational"], f"Pareto frontier, embodied vs operational (grid {pf['grid']}, SLO met)"))
    rows = res["top"][:top] if top else res["top"]
    console.print(_plan_table(rows, f"Top {len(rows)} by P{int(round(100 * res['robust_quantile']))} (every grid and lifetime)"))
    if res["infeasible_reasons"]:
        console.print("infeasible hardware configurations: " +
                      "; ".join(f"{k}: {v}" for k, v in res["infeasible_reasons"].items()))
    for x in res.get("not_ranked", []):
        console.print(f"[yellow]not ranked:[/] {x}")
    for w in res.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
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
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Compare options side by side per tier, with paired probabilities that one emits less than another."""
        from .devicedb import DeviceDB
        from .planner import compare as run_compare, load_option

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
            with err.status("comparing…") as st:
                opts = [load_option(p, db, out_root=root, region=region, progress=lambda s: st.update(s)) for p in inputs]
                st.update("paired draws")
                res = run_compare(opts, db, draws=draws, seed=seed)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if html is not None:
            from .report.html import write_html

            write_html(html, compare=res)
        if as_json:
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        console = Console()
        render_compare(res, console)
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
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Sweep tier configurations with the analytic model; Pareto frontier and a robust (P95) pick."""
        from .devicedb import DeviceDB
        from .model.constants import constants_for
        from .planner import load_sweep, plan as run_plan
        from .scenario import load_scenario

        if top < 1:
            raise StoragecarbonError("--top: at least 1")
        db = DeviceDB.load(db_dir)
        base = load_scenario(scenario, db)
        loaded = load_sweep(sweep, db)
        constants = constants_for(base, scenario)  # calibration: resolved as profile resolves it
        with err.status("planning…") as st:
            res = run_plan(base, loaded, db, top=top, constants=constants, progress=lambda s: st.update(s),
                           detail_grid=grid)
        if html is not None:
            from .report.html import write_html

            write_html(html, plan=res)
        if as_json:
            sys.stdout.write(json.dumps(res, indent=2) + "\n")
            return
        console = Console()
        render_plan(res, console, top)
        if html is not None:
            console.print(f"[dim]html: {html}[/]")
