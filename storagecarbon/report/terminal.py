"""Rich terminal rendering of a report dict (``profile`` and ``report``).

Readable at 80 columns: a headline panel first (total, per 1k tokens, kWh, storage share, SLO,
MEASURED/MODELED and why), then compact tables whose columns each carry one unit (in the
header), then a short footer; long sources and provenance come with ``--verbose``. From 120
columns on, the per-tier tables merge into one. Every figure is written by :mod:`.units`; a
figure without data reads ``missing``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from rich import box
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import units as U

WIDE = 120           # from this many columns on, tables use their wide layout
TIGHT_HEADROOM = U.TIGHT_HEADROOM


# ------------------------------------------------------------------------------ building blocks
def table(title: str | None = None, caption: str | None = None) -> Table:
    """The project's compact table: a rule under the header, no side borders."""
    return Table(title=title, title_justify="left", title_style="bold", caption=caption, caption_justify="left",
                 caption_style="dim", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def kv_grid() -> Table:
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", no_wrap=True)
    g.add_column(overflow="fold")
    return g


def mode_badge(mode: str | None) -> Text:
    mode = (mode or "?").upper()
    style = "bold green" if mode == "MEASURED" else "bold yellow" if mode == "MODELED" else "bold"
    return Text(f" {mode} ", style=f"{style} reverse")


def is_wide(console: Console) -> bool:
    return console.width >= WIDE


def band_of(x: Any) -> Mapping[str, Any] | None:
    """A band dict, or a plain number turned into a point band; None stays None."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return x if x.get("p50") is not None else None
    return {"p5": x, "p50": x, "p95": x}


# ------------------------------------------------------------------------------ SLO
def slo_lines(slo: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """Verdict (met / met, tight / missed / missing / no SLO) and one line per latency target."""
    if not slo:
        return "no SLO", []
    verdicts, lines = [], []
    for key, v in slo.items():
        if not isinstance(v, Mapping):
            continue
        name = key.replace("_ms", "").upper()
        p90, target = v.get("p90"), v.get("target")
        if p90 is None or target is None:
            verdicts.append("missing")
            lines.append(f"{name} p90 missing (SLO {U.millis(target)})")
            continue
        head = 1 - p90 / target
        if v.get("met") is False or p90 > target:
            verdicts.append("missed")
            lines.append(f"[red]{name} p90 {U.millis(p90)} > {U.millis(target)} — missed by {U.share(-head)}[/]")
        elif head < TIGHT_HEADROOM:
            verdicts.append("tight")
            lines.append(f"[yellow]{name} p90 {U.millis(p90)} ≤ {U.millis(target)} — tight, {U.share(head)} headroom[/]")
        else:
            verdicts.append("met")
            lines.append(f"{name} p90 {U.millis(p90)} ≤ {U.millis(target)} ({U.share(head)} headroom)")
        if v.get("share_within") is not None:
            lines[-1] = lines[-1] + f"; {U.share(v['share_within'])} of requests within"
    if "missed" in verdicts:
        verdict = "[bold red]missed[/]"
    elif "missing" in verdicts:
        verdict = "[yellow]unknown (latency missing)[/]"
    elif "tight" in verdicts:
        verdict = "[bold yellow]met, tight[/]"
    elif verdicts:
        verdict = "[bold green]met[/]"
    else:
        verdict = "no SLO"
    return verdict, lines


# ------------------------------------------------------------------------------ headline
def mode_why(rep: Mapping[str, Any]) -> str:
    mode = str(rep.get("mode", "")).lower()
    if rep.get("mode_reason"):
        why = str(rep["mode_reason"]).strip()
        for m in ("MODELED", "MEASURED", "modeled", "measured"):
            if why.startswith(m):
                why = why[len(m):].strip(" :;-")
                break
        if why.startswith("(") and why.endswith(")"):
            why = why[1:-1]
        return why or mode
    if str(rep.get("mode", "")).lower() == "measured":
        sens = [k for k, v in ((rep.get("provenance") or {}).get("sensors") or {}).items() if v.get("available")]
        return "from sensors on this machine" + (f": {', '.join(sens)}" if sens else "")
    return "from the performance model and device_db, not from sensors on this machine"


def model_constants_source(rep: Mapping[str, Any]) -> str | None:
    """Which constants the performance model used (a modeled run), from the trace's model sensor."""
    if str(rep.get("mode", "")).lower() != "modeled":
        return None
    why = str((((rep.get("provenance") or {}).get("sensors") or {}).get("model") or {}).get("reason") or "")
    return why.split("constants: ", 1)[1] if "constants: " in why else None


def headline(rep: Mapping[str, Any], console: Console) -> Panel:
    """The first thing on screen: what the run emitted and how sure we are."""
    hd = rep.get("headline") or {}
    g = kv_grid()
    total = hd.get("total_g") if "total_g" in hd else (rep.get("totals") or {}).get("total_gco2e")
    per1k = hd.get("per_1k_tokens_g") if "per_1k_tokens_g" in hd else rep.get("per_1k_tokens_gco2e")
    tok = rep.get("tokens") or {}
    cmd = rep.get("command") or {}
    if cmd.get("failed"):
        g.add_row("[red]command[/]", f"[red]the recorded command failed (exit code {cmd.get('exit_code')}): figures "
                                     "cover what ran until then[/]")
    basis = rep.get("per_unit_basis")
    on = f" ({basis})" if basis and basis != "whole run" else ""
    g.add_row("total", f"[bold]{U.band(band_of(total))}[/] CO2e per run")
    g.add_row("per 1k tokens", f"[bold]{U.band(band_of(per1k))}[/] per 1k generated tokens{escape(on)}"
              + ("" if tok.get("generated") else " (none generated)"))
    if rep.get("per_request_gco2e"):
        g.add_row("per request", U.band(rep["per_request_gco2e"]) + escape(on))
    if "energy_kwh" in hd:
        e = band_of(hd.get("energy_kwh"))
        g.add_row("energy", U.MISSING if e is None else U.band_in(e, U.Scale(1.0, "kWh")))
    else:
        g.add_row("energy", "[dim]not in this report (no headline block; re-run with this version)[/]")
    ss = hd.get("storage_share")
    if ss:
        g.add_row("storage share", "DRAM + SSD + HDD: " + ", ".join(
            f"{k} {U.band_share(ss.get(k))}" for k in ("embodied", "operational", "total") if k in ss))
    elif "storage_share" in hd:
        g.add_row("storage share", U.MISSING)
    lat = rep.get("latency") or {}
    verdict, lines = slo_lines(lat.get("slo"))
    g.add_row("SLO", verdict + ("" if not lines else "\n" + "\n".join(lines)))
    if rep.get("scope"):
        g.add_row("scope", str(rep["scope"]))
    if "coverage" in rep:
        cov = rep.get("coverage")
        g.add_row("coverage", U.MISSING if cov is None else f"{U.share(cov)} of the plausible total has data")
    if rep.get("excludes"):
        g.add_row("excludes", escape(", ".join(rep["excludes"])))
    if rep.get("missing_devices"):
        g.add_row("no record", escape(f"{', '.join(rep['missing_devices'])}: carbon missing, not zero (map them: "
                                      "storagecarbon report TRACE --scenario S)"))
    mode = str(rep.get("mode", "?")).upper()
    g.add_row(mode, escape(mode_why(rep)) + ("\n[yellow]the trace was cut short: figures cover the recorded part only[/]"
                                     if rep.get("truncated") else ""))
    consts = model_constants_source(rep)
    if consts:
        g.add_row("model", escape(consts))
    badge = mode_badge(rep.get("mode"))
    if cmd.get("failed"):
        badge = Text(f" {mode}: COMMAND FAILED (exit {cmd.get('exit_code')}) ", style="bold red reverse")
    title = Text.assemble(badge, "  ", (str(rep.get("scenario", "")), "bold"))
    border = "red" if cmd.get("failed") else "green" if mode == "MEASURED" else "yellow"
    return Panel(g, title=title, title_align="left", border_style=border)


# ------------------------------------------------------------------------------ tiers
def _tier_energy(t: Mapping[str, Any]) -> tuple[float | None, bool]:
    """(energy in J, complete?) of a tier, from the report's own figures; None when wholly missing."""
    if "energy_j" in t:
        b = band_of(t.get("energy_j"))
        partial = any(str(x).endswith(("operational", "energy")) for x in t.get("excludes") or [])
        return (None if b is None else b["p50"]), b is not None and not partial
    basis = t.get("energy_basis") or []
    missing = [b for b in basis if str(b).startswith("missing")]
    if basis and len(missing) == len(basis):
        return None, False
    return t.get("energy_j_best"), not missing


def tier_tables(rep: Mapping[str, Any], console: Console) -> list[Table]:
    tiers = rep.get("tiers") or []
    if not tiers:
        return []
    emb = U.Column([t.get("embodied_gco2e") for t in tiers], U.MASS)
    op = U.Column([t.get("operational_gco2e") for t in tiers], U.MASS)
    energies = [_tier_energy(t) for t in tiers]
    en = U.Column([e for e, _ in energies], U.ENERGY)
    rd = U.Column([t.get("bytes_read") for t in tiers], U.BYTES)
    wr = U.Column([t.get("bytes_written") for t in tiers], U.BYTES)
    app = [t.get("app_bytes_written") or 0 for t in tiers]
    app_r = [t.get("app_bytes_read") or 0 for t in tiers]
    show_app = any(app)
    aw = U.Column(app, U.BYTES)
    res = U.Column([t.get("mean_resident_bytes") for t in tiers], U.BYTES)
    partial = False

    def energy_cell(e: float | None, complete: bool) -> str:
        nonlocal partial
        if e is None:
            return U.MISSING
        if not complete:
            partial = True
            return en(e) + "*"
        return en(e)

    carbon_cols = [(emb.head("embodied"), [emb.band(t.get("embodied_gco2e")) for t in tiers]),
                   (op.head("operational"), [op.band(t.get("operational_gco2e")) for t in tiers]),
                   (en.head("energy"), [energy_cell(e, c) for e, c in energies])]
    wide = is_wide(console)
    hd = (lambda c, x: c.head(x)) if wide else (lambda c, x: c.head2(x))  # noqa: E731
    byte_cols = [(hd(rd, "read"), [rd(t.get("bytes_read")) for t in tiers]),
                 (hd(wr, "written"), [wr(t.get("bytes_written")) for t in tiers])]
    if show_app:
        if any(app_r):
            kv = U.Column(app + app_r, U.BYTES)
            byte_cols.append((hd(kv, "KV in/out"), [f"{kv(a) if a else '—'} / {kv(b) if b else '—'}"
                                                    for a, b in zip(app, app_r)]))
        else:
            byte_cols.append((hd(aw, "KV in"), [aw(a) if a else "—" for a in app]))
        gap = [(t.get("bytes_written") or 0) - (t.get("app_bytes_written") or 0) if t.get("app_bytes_written") else None
               for t in tiers]
        gc = U.Column(gap, U.BYTES)
        byte_cols.append((hd(gc, "block − app"), ["—" if g is None else gc(g) for g in gap]))
    byte_cols.append((hd(res, "resident"), [res(t.get("mean_resident_bytes")) for t in tiers]))
    devices = ["\n".join(d.replace(" x ", " × ") for d in t.get("devices") or []) for t in tiers]
    names = [t["tier"] for t in tiers]
    note = ("resident: mean bytes held"
            + ("; KV in/out: KV cache bytes the engine's offload (LMCache, vLLM's OffloadingConnector) stored to "
               "/ loaded from the tier (—: none reported); written: what the block device saw "
               "(filesystem, page cache and other traffic included); block − app: their gap"
               if show_app else ""))
    out = []
    if wide:
        t = table("Per tier", caption=None)
        t.add_column("tier", no_wrap=True)
        t.add_column("devices", no_wrap=True)
        for h, _ in carbon_cols + byte_cols:
            t.add_column(h, justify="right", no_wrap=True)
        for i in range(len(tiers)):
            t.add_row(names[i], devices[i], *[c[i] for _, c in carbon_cols], *[c[i] for _, c in byte_cols])
        out.append(t)
    else:
        t = table("Per tier: carbon, P50 [P5–P95]")
        t.add_column("tier", no_wrap=True)
        for h, _ in carbon_cols:
            t.add_column(h, justify="right", no_wrap=True)
        for i in range(len(tiers)):
            t.add_row(names[i], *[c[i] for _, c in carbon_cols])
        out.append(t)
        b = table("Per tier: bytes")
        b.add_column("tier", no_wrap=True)
        b.add_column("devices", overflow="fold")
        for h, _ in byte_cols:
            b.add_column(h, justify="right", no_wrap=True)
        for i in range(len(tiers)):
            b.add_row(names[i], devices[i], *[c[i] for _, c in byte_cols])
        out.append(b)
    cap = note + ("; * energy of the devices with power data only (the others are missing)" if partial else "")
    out[-1].caption = cap
    return out


def phase_table(rep: Mapping[str, Any], console: Console) -> Table | None:
    phases = rep.get("phases") or {}
    if not phases:
        return None
    tot = rep.get("totals") or {}
    rows = [(name, ph) for name, ph in phases.items()] + [("run", {**tot, "time_s": rep.get("duration_s")})]
    cols = {k: U.Column([p.get(k) for _, p in rows], U.MASS) for k in ("embodied_gco2e", "operational_gco2e", "total_gco2e")}
    tm = U.Column([p.get("time_s") for _, p in rows], U.TIME)
    stacked = not is_wide(console)
    t = table("Per phase" + (", P50 above [P5–P95]" if stacked else ", P50 [P5–P95]"))
    t.add_column("phase", no_wrap=True)
    t.add_column(tm.head("time"), justify="right", no_wrap=True)
    for k, lab in (("embodied_gco2e", "embodied"), ("operational_gco2e", "operational"), ("total_gco2e", "total")):
        t.add_column(cols[k].head(lab), justify="right", no_wrap=True)
    for i, (name, p) in enumerate(rows):
        cells = [name, tm(p.get("time_s"))] + [cols[k].band(p.get(k), stacked) for k in ("embodied_gco2e",
                                                                                       "operational_gco2e", "total_gco2e")]
        if i == len(rows) - 1:
            cells = [f"[bold]{c}[/]" for c in cells]
        t.add_row(*cells, end_section=(i == len(rows) - 2))
    return t


def latency_table(rep: Mapping[str, Any]) -> Table | None:
    lat = rep.get("latency") or {}
    rows = [(k, lab) for k, lab in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")) if lat.get(k)]
    if not rows:
        return None
    t = table("Latency")
    for c in ("", "p50", "p90", "p99", "SLO (p90)"):
        t.add_column(c, justify="right" if c else "left", no_wrap=True)
    for k, lab in rows:
        st = lat[k]
        sc = U.scale_for([(st.get(q) or 0) / 1e3 for q in ("p50", "p90", "p99")], U.TIME)
        cell = lambda ms: U.MISSING if ms is None else f"{sc.of(ms / 1e3)} {sc.unit}"  # noqa: E731
        slo = (lat.get("slo") or {}).get(k)
        t.add_row(lab, cell(st.get("p50")), cell(st.get("p90")), cell(st.get("p99")),
                  "—" if not slo else U.millis(slo.get("target")))
    return t


def activity_line(rep: Mapping[str, Any]) -> str:
    tok = rep.get("tokens") or {}
    return (f"{U.count(rep.get('requests'))} requests · {U.count(tok.get('prompt'))} prompt + "
            f"{U.count(tok.get('generated'))} generated tokens · {U.seconds(rep.get('duration_s'))}")


# ------------------------------------------------------------------------------ accounting blocks
def device_table(rep: Mapping[str, Any]) -> Table | None:
    """Per-device energy and idle capacity (only when the report carries them)."""
    devs = [d for d in rep.get("devices") or [] if any(k in d for k in ("energy_kwh", "energy_j", "idle_capacity_share"))]
    if not devs:
        return None

    def kwh_of(d: Mapping[str, Any]) -> float | None:
        if "energy_kwh" in d:
            b = band_of(d.get("energy_kwh"))
            return None if b is None else b["p50"]
        b = band_of(d.get("energy_j"))
        return None if b is None else b["p50"] / U.J_PER_KWH

    t = table("Per device")
    cols: tuple[tuple[str, JustifyMethod], ...] = (("device", "left"), ("units", "left"), ("energy (kWh)", "right"),
                                                   ("basis", "left"), ("idle capacity", "right"))
    for c, j in cols:
        t.add_column(c, justify=j, no_wrap=(c != "units"))
    for d in devs:
        basis = str(d.get("energy_basis") or "").split(":")[0]
        t.add_row(str(d.get("id")), f"{d.get('count', 1)} × {d.get('db_key') or '?'}", U.num(kwh_of(d)),
                  basis or "—", U.share(d.get("idle_capacity_share")) if "idle_capacity_share" in d else "—")
    t.caption = "idle capacity: share of the device's charge that paid for capacity the run never touched"
    return t


def ledger_table(rep: Mapping[str, Any], console: Console) -> Table | None:
    rows = rep.get("ledger") or []
    if not rows:
        return None
    vals: list[Any] = []
    for r in rows:
        vals += [r.get("cost_g"), r.get("saving_g"), r.get("net_g")]
    col = U.Column(vals, U.MASS)
    stacked = not is_wide(console)
    t = table("Offload ledger: what each tier cost and saved, P50 [P5–P95]")
    t.add_column("tier", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    for c in ("cost", "saving", "net"):
        t.add_column(col.head2(c) if stacked else col.head(c), justify="right", no_wrap=True)
    t.add_column("P\n(pays)" if stacked else "P(pays)", justify="right", no_wrap=True)
    t.add_column("KV hit\ntokens" if stacked else "KV hit tokens", justify="right", no_wrap=True)
    for r in rows:
        t.add_row(str(r.get("tier")), str(r.get("kind") or ""), col.band(r.get("cost_g"), stacked),
                  col.band(r.get("saving_g"), stacked), col.band(r.get("net_g"), stacked), U.prob(r.get("p_pays_for_itself")),
                  U.count(r.get("hit_tokens")) if r.get("hit_tokens") is not None else "—")
    bases = sorted({str(r.get("basis")) for r in rows if r.get("basis")})
    t.caption = ("net = cost − saving (negative: the tier saves more than it costs); P(pays): probability that the "
                 "tier pays for itself; KV hit tokens: prompt tokens served from the tier instead of recomputed"
                 + (f"; basis: {', '.join(bases)}" if bases else ""))
    return t


def wear_table(rep: Mapping[str, Any]) -> Table | None:
    rows = rep.get("wear") or []
    if not rows:
        return None
    t = table("Flash wear")
    for c in ("drive", "writes/day (DWPD)", "rated DWPD", "implied life"):
        t.add_column(c, justify="left" if c == "drive" else "right", no_wrap=True)
    for r in rows:
        over = r.get("over_rating")
        dw = U.num(r.get("drive_writes_per_day"))
        if over:
            dw = f"[red]{dw} over rating[/]"
        life = r.get("implied_lifetime_years")
        t.add_row(str(r.get("device")), dw, U.num(r.get("rated_dwpd")), U.MISSING if life is None else f"{U.num(life)} years")
    return t


def missing_lines(rep: Mapping[str, Any]) -> list[str]:
    out = []
    for m in rep.get("missing") or []:
        out.append(escape(f"{m.get('device')}.{m.get('field')}: missing — {m.get('reason', '')}"))
    return out


# ------------------------------------------------------------------------------ footer
def _basis_groups(entries: Iterable[str]) -> dict[str, list[str]]:
    """'gpu: modeled: idle + …' entries grouped by their basis, the device ids listed once."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        dev, _, basis = str(e).partition(": ")
        groups.setdefault(basis or dev, []).append(dev if basis else "")
    return groups


def energy_basis_lines(rep: Mapping[str, Any]) -> list[str]:
    devs = rep.get("devices") or []
    if devs and all("energy_method" in d for d in devs):
        entries = [f"{d['id']}: {d['energy_method']}" for d in devs]
    elif devs and all("energy_basis" in d for d in devs):
        entries = [f"{d['id']}: {d['energy_basis']}" for d in devs]
    else:
        prov = rep.get("provenance") or {}
        entries = list(prov.get("measured_figures") or []) + list(prov.get("modeled_figures") or [])
    out = []
    for basis, ids in _basis_groups(entries).items():
        out.append(escape(f"{', '.join(i for i in ids if i)} — {basis}"))
    return out


def footer(rep: Mapping[str, Any], console: Console, verbose: bool) -> None:
    """Assumptions, energy basis, what is missing and warnings; sources behind ``--verbose``."""
    a = rep.get("assumptions") or {}
    g, p = a.get("grid_gco2e_per_kwh") or {}, a.get("pue") or {}
    f = kv_grid()
    if g:
        f.add_row("grid", f"{a.get('region') or ''} {U.num(g.get('best'))} [{U.num(g.get('low'))}–{U.num(g.get('high'))}] "
                          "gCO2e/kWh".strip())
    if p:
        f.add_row("PUE", f"{U.num(p.get('best'))} [{U.num(p.get('low'))}–{U.num(p.get('high'))}]")
    if a.get("allocation"):
        f.add_row("embodied", f"allocation {a['allocation']}; {U.count(a.get('draws'))} Monte Carlo draws, "
                              f"seed {a.get('seed', 0)}")
    lines = energy_basis_lines(rep)
    if lines:
        f.add_row("energy basis", "\n".join(lines))
    prov = rep.get("provenance") or {}
    off = [k for k, v in (prov.get("sensors") or {}).items() if not v.get("available", True)]
    if off and not verbose:
        f.add_row("sensors off", f"{', '.join(off)} (--verbose says why)")
    miss = missing_lines(rep)
    if miss:
        f.add_row("missing", "\n".join(miss) + "\n[dim](missing figures are left out, never counted as zero)[/]")
    srcs = rep.get("sources") or {}
    if not verbose and (srcs or g):
        f.add_row("sources", f"{len(srcs)} device records, grid and PUE: --verbose, or the HTML report (--html FILE)")
    console.print(f)
    if verbose:
        console.print(sources_panel(rep))
    seen = set(miss)
    for w in rep.get("warnings") or []:
        if w not in seen:
            console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False)


def sources_panel(rep: Mapping[str, Any]) -> Panel:
    a = rep.get("assumptions") or {}
    lines = []
    g, p = a.get("grid_gco2e_per_kwh") or {}, a.get("pue") or {}
    if g:
        lines.append(f"[bold]grid[/] {escape(str(g.get('source', '')))}")
    if p:
        lines.append(f"[bold]PUE[/] {escape(str(p.get('source', '')))}")
    if a.get("sampling"):
        lines.append(f"[bold]sampling[/] {escape(str(a['sampling']))}")
    for key, v in (rep.get("sources") or {}).items():
        if isinstance(v, Mapping):
            for what in ("embodied", "power", "lifetime"):
                lines.append(f"[bold]{escape(key)}[/] {what}: {escape(str(v.get(what) or U.MISSING))}")
        else:
            lines.append(f"[bold]{escape(key)}[/] {escape(str(v))}")
    prov = rep.get("provenance") or {}
    for n in prov.get("notes") or []:
        lines.append(f"[bold]note[/] {escape(str(n))}")
    for name, st in (prov.get("sensors") or {}).items():
        state = "available" if st.get("available", True) else "not available"
        lines.append(f"[bold]sensor {escape(name)}[/] {state} — {escape(str(st.get('reason', '')))}")
    return Panel("\n".join(lines) or "—", title="Sources, notes and sensors", title_align="left")


# ------------------------------------------------------------------------------ render
def render(report: Mapping[str, Any], console: Console | None = None, *, verbose: bool = False) -> None:
    console = console or Console()
    console.print(headline(report, console))
    console.print(activity_line(report), highlight=False)
    for t in tier_tables(report, console):
        console.print(t)
    for opt in (phase_table(report, console), latency_table(report), device_table(report),
                ledger_table(report, console), wear_table(report)):
        if opt is not None:
            console.print(opt)
    footer(report, console, verbose)
