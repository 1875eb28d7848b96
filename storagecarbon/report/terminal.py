"""Rich terminal rendering of a report dict."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def fmt_g(x: float) -> str:
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.3g} t"
    if a >= 1e3:
        return f"{x / 1e3:.3g} kg"
    if a >= 1:
        return f"{x:.3g} g"
    if a >= 1e-3:
        return f"{x * 1e3:.3g} mg"
    if a == 0:
        return "0 g"
    return f"{x * 1e6:.3g} µg"


def band(b: dict[str, float] | None) -> str:
    if not b:
        return "missing"
    return f"{fmt_g(b['p50'])} [{fmt_g(b['p5'])}–{fmt_g(b['p95'])}]"


def fmt_bytes(x: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.0f} B"


def render(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    mode = report["mode"].upper()
    style = "bold green" if mode == "MEASURED" else "bold yellow"
    cmd = report.get("command") or {}
    if cmd.get("failed"):
        mode, style = f"{mode}: COMMAND FAILED (exit {cmd.get('exit_code')})", "bold red"
    title = Text.assemble((f" {mode} ", f"{style} reverse"), "  ", (report["scenario"], "bold"))
    sub = []
    if cmd.get("failed"):
        sub.append(f"the recorded command failed (exit code {cmd.get('exit_code')}): figures cover what ran until then")
    if report.get("missing_devices"):
        sub.append(f"no device record for {', '.join(report['missing_devices'])}: their carbon is missing, not zero "
                   "(map them: storagecarbon report TRACE --scenario S)")
    if mode == "MODELED":
        sub.append("figures come from the performance model and device_db, not from sensors on this machine")
    if report.get("truncated"):
        sub.append("trace was cut short: figures cover the recorded part only")
    console.print(Panel(Text("\n".join(sub) or "figures from sensors on this machine (see Provenance)"), title=title,
                        title_align="left"))

    t = Table(title="Per tier — gCO2e P50 [P5–P95]", show_lines=False)
    for col in ("tier", "devices", "read", "written", "occupancy", "embodied", "operational"):
        t.add_column(col, overflow="fold")
    for row in report["tiers"]:
        written = fmt_bytes(row["bytes_written"])
        if row["app_bytes_written"] and row["app_bytes_written"] != row["bytes_written"]:
            written += f"\n(app {fmt_bytes(row['app_bytes_written'])})"
        t.add_row(row["tier"], "\n".join(row["devices"]), fmt_bytes(row["bytes_read"]), written,
                  fmt_bytes(row["mean_resident_bytes"]),
                  band(row["embodied_gco2e"]) if row["embodied_gco2e"] is not None else "missing",
                  band(row["operational_gco2e"]) if row["operational_gco2e"] is not None else "missing")
    console.print(t)

    s = Table(title="Summary", show_header=True)
    s.add_column("")
    s.add_column("embodied")
    s.add_column("operational")
    s.add_column("total")
    tot = report["totals"]
    s.add_row("run", band(tot["embodied_gco2e"]), band(tot["operational_gco2e"]), band(tot["total_gco2e"]))
    for name, ph in report["phases"].items():
        s.add_row(f"phase {name} ({ph['time_s']:.3g} s)", band(ph["embodied_gco2e"]), band(ph["operational_gco2e"]),
                  band(ph["total_gco2e"]))
    basis = report.get("per_unit_basis")
    on = f" ({basis})" if basis and basis != "whole run" else ""
    s.add_row(f"per request{on}", "", "", band(report.get("per_request_gco2e")))
    s.add_row(f"per 1k generated tokens{on}", "", "", band(report.get("per_1k_tokens_gco2e")))
    console.print(s)
    console.print(f"requests {report['requests']}  tokens: prompt {report['tokens']['prompt']}, generated "
                  f"{report['tokens']['generated']}  duration {report['duration_s']:.3g} s")

    lat = report["latency"]
    parts = []
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")):
        st = lat.get(key)
        if st:
            txt = f"{label} p50 {st['p50']:.4g} ms, p90 {st['p90']:.4g} ms"
            slo = lat.get("slo", {}).get(key)
            if slo:
                ok = slo["met"]
                txt += f" (SLO {slo['target']:g} ms: " + ("[green]met[/]" if ok else "[red]missed[/]")
                if slo.get("share_within") is not None:
                    txt += f", {slo['share_within']:.0%} of requests within"
                txt += ")"
            parts.append(txt)
    if parts:
        console.print("Latency: " + "; ".join(parts))

    a = report["assumptions"]
    g = a["grid_gco2e_per_kwh"]
    p = a["pue"]
    console.print(Panel(
        f"grid {g['best']:g} gCO2e/kWh [{g['low']:g}–{g['high']:g}] ({g['source']})\n"
        f"PUE {p['best']:g} [{p['low']:g}–{p['high']:g}] ({p['source']})\n"
        f"embodied allocation: {a['allocation']}; {a['draws']} Monte Carlo draws, seed {a['seed']}; {a['sampling']}\n"
        + "\n".join(f"{k}: embodied — {v['embodied'] or 'missing'}" for k, v in report["sources"].items()),
        title="Assumptions and sources", title_align="left"))
    prov = report["provenance"]
    lines = [f"measured: {m}" for m in prov["measured_figures"]] + [f"modeled: {m}" for m in prov["modeled_figures"]]
    lines += [n for n in (prov.get("notes") or []) if len(n) <= 160]
    for name, st in (prov.get("sensors") or {}).items():
        if not st.get("available", True):
            lines.append(f"sensor {name}: not available — {st.get('reason', '')}")
    console.print(Panel("\n".join(lines) or "—", title="Provenance", title_align="left"))
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def render_group(report: dict[str, Any]) -> Group:  # for embedding
    return Group(Text(report["scenario"]))
