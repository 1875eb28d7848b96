"""One self-contained HTML report (profile, compare, plan) that works offline.

Everything is inline: CSS, charts as SVG generated here, and a few lines of script of our own
(no CDN, no external assets, no fonts fetched). Charts carry CSS classes the browser test looks
for (``bar-emb``/``bar-op``/``band`` in tier charts, ``pt``/``front-p50``/``front-p95`` in the
Pareto chart, ``series`` in trace time series).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import units as U
from .terminal import mode_why, slo_lines

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
EMB, OP = "#8c6bb1", "#f28e2b"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1.02em;margin:1.2em 0 .4em}
.badge{display:inline-block;padding:.15em .6em;border-radius:4px;font-weight:700;color:#fff;font-size:.9em;vertical-align:middle}
.modeled{background:#b8860b}.measured{background:#2e7d32}.mixed{background:#555}
table{border-collapse:collapse;margin:.5em 0;font-size:.88em;background:#fff}
th,td{border:1px solid #ddd;padding:.3em .55em;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#2e7d32;font-weight:600}.miss{color:#c62828;font-weight:600}.muted{color:#777}
.note{font-size:.85em;color:#555}.warn{color:#8a5300}
svg.chart{background:#fff;border:1px solid #ddd;margin:.4em 0;display:block}
svg text{font-size:11px;fill:#333}svg .axis line,svg .axis path{stroke:#999}svg .grid{stroke:#eee}
.legend span{display:inline-block;margin-right:1em;font-size:.85em}.sw{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
details{margin:.4em 0}code{font-size:.9em}
.headline{display:flex;flex-wrap:wrap;gap:.6em;margin:.6em 0}.hl{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:11em}
.hl-k{font-size:.8em;color:#555}.hl-v{font-size:1.05em;font-weight:600;font-variant-numeric:tabular-nums}
dl.sources dt{margin-top:.5em}dl.sources dd{margin-left:1.2em}dl.sources ul,ul.kv{margin:.1em 0;padding-left:1.2em}
.src{color:#444}a{color:#1f5fa8}tr.decision td{background:#fff6d5}li.saving{font-size:1.05em}
"""

SCRIPT = """
(function(){
  var errs=[];
  window.addEventListener('error',function(e){errs.push(String(e.message||e));var b=document.getElementById('js-errors');if(b){b.textContent=errs.join('\\n');}});
  document.addEventListener('DOMContentLoaded',function(){
    var n=document.querySelectorAll('svg.chart').length;
    document.body.setAttribute('data-charts',String(n));
    document.body.setAttribute('data-ready','1');
  });
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return U.num(x, sig=digits)


def _band_txt(b: Any, ladder: U.Ladder = U.MASS) -> str:
    """P50 [P5–P95] in one unit (the terminal's text); a missing band reads 'missing'."""
    return U.band(b, ladder)


fmt_g, fmt_bytes = U.grams, U.nbytes


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12 * span:
        out.append(round(v, 12))
        v += step
    return out


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        self.log = log and lo > 0 and hi > 0
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-300))
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _fmt_tick(v: float) -> str:
    """An axis tick: four significant figures, never scientific notation."""
    return "0" if v == 0 else np.format_float_positional(v, precision=4, unique=True, fractional=False, trim="-")


def _axes(w: int, h: int, m: dict[str, int], xs: _Scale, ys: _Scale, xt: Sequence[float], yt: Sequence[float],
          xlabel: str, ylabel: str, xfmt=_fmt_tick, yfmt=_fmt_tick) -> str:
    out = ['<g class="axis">']
    for v in yt:
        y = ys(v)
        out.append(f'<line class="grid" x1="{m["l"]}" x2="{w - m["r"]}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{m["l"] - 4}" y="{y + 3:.1f}" text-anchor="end">{_e(yfmt(v))}</text>')
    for v in xt:
        x = xs(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{h - m["b"]}" y2="{h - m["b"] + 4}"/>')
        out.append(f'<text x="{x:.1f}" y="{h - m["b"] + 15}" text-anchor="middle">{_e(xfmt(v))}</text>')
    out.append(f'<line x1="{m["l"]}" x2="{w - m["r"]}" y1="{h - m["b"]}" y2="{h - m["b"]}"/>')
    out.append(f'<line x1="{m["l"]}" x2="{m["l"]}" y1="{m["t"]}" y2="{h - m["b"]}"/>')
    out.append(f'<text x="{(m["l"] + w - m["r"]) / 2:.0f}" y="{h - 4}" text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text transform="translate(12,{(m["t"] + h - m["b"]) / 2:.0f}) rotate(-90)" text-anchor="middle">{_e(ylabel)}</text>')
    out.append("</g>")
    return "".join(out)


# ------------------------------------------------------------------------------ bar charts
def stacked_bars(groups: list[dict[str, Any]], *, title: str, ylabel: str = "gCO2e", cls: str = "tiers",
                 width: int = 900, height: int = 320) -> str:
    """Groups of bars; each bar: label, emb (P50), op (P50), band (P5, P95 of the total).

    ``groups`` = [{"name": str, "bars": [{"label", "emb", "op", "lo", "hi", "color"?}]}].
    """
    bars = [b for g in groups for b in g["bars"]]
    if not bars:
        return f'<p class="muted">{_e(title)}: no data</p>'
    m = {"l": 64, "r": 16, "t": 28, "b": 54}
    ymax = max(max(b["emb"] + b["op"], b.get("hi") or 0.0) for b in bars) * 1.08 or 1.0
    ys = _Scale(0, ymax, height - m["b"], m["t"])
    n_bars = len(bars) + len(groups) - 1
    slot = (width - m["l"] - m["r"]) / max(n_bars, 1)
    bw = min(slot * 0.7, 60)
    out = [f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<text x="{m["l"]}" y="16" style="font-weight:600">{_e(title)}</text>']
    yt = _nice_ticks(0, ymax)
    out.append(_axes(width, height, m, _Scale(0, 1, m["l"], width - m["r"]), ys, [], yt, "", ylabel,
                     yfmt=lambda v: fmt_g(v) if v else "0"))
    i = 0
    for gi, g in enumerate(groups):
        x0 = m["l"] + i * slot
        for b in g["bars"]:
            cx = m["l"] + (i + 0.5) * slot
            x = cx - bw / 2
            y_e = ys(b["emb"])
            y_t = ys(b["emb"] + b["op"])
            tip = f'{g["name"]} {b["label"]}: embodied {fmt_g(b["emb"])}, operational {fmt_g(b["op"])}'
            if b.get("lo") is not None:
                tip += f', total P5–P95 {fmt_g(b["lo"])}–{fmt_g(b["hi"])}'
            out.append(f'<g><title>{_e(tip)}</title>'
                       f'<rect class="bar-emb" x="{x:.1f}" y="{y_e:.1f}" width="{bw:.1f}" height="{ys(0) - y_e:.1f}" fill="{EMB}"/>'
                       f'<rect class="bar-op" x="{x:.1f}" y="{y_t:.1f}" width="{bw:.1f}" height="{y_e - y_t:.1f}" fill="{OP}"/>')
            if b.get("lo") is not None and b.get("hi") is not None:
                y1, y2 = ys(b["lo"]), ys(b["hi"])
                out.append(f'<line class="band" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="#222" stroke-width="1.5"/>'
                           f'<line class="band-cap" x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{y1:.1f}" y2="{y1:.1f}" stroke="#222"/>'
                           f'<line class="band-cap" x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{y2:.1f}" y2="{y2:.1f}" stroke="#222"/>')
            out.append("</g>")
            if len(groups) > 1:
                lab = b.get("short", b["label"])[:4]
                out.append(f'<text x="{cx:.1f}" y="{height - m["b"] + 14}" text-anchor="middle">{_e(lab)}</text>')
            elif len(g["bars"]) > 1 or len(groups) == 1:
                lab = b["label"] if len(b["label"]) <= 18 else b["label"][:17] + "…"
                out.append(f'<text x="{cx:.1f}" y="{height - m["b"] + 14}" text-anchor="middle">{_e(lab)}</text>')
            i += 1
        if len(groups) > 1:
            cx = (x0 + m["l"] + i * slot) / 2
            out.append(f'<text x="{cx:.1f}" y="{height - m["b"] + 30}" text-anchor="middle" style="font-weight:600">{_e(g["name"])}</text>')
        i += 1
    out.append("</svg>")
    shorts = {b["short"]: b["label"] for b in bars if "short" in b}
    legend = (f'<div class="legend"><span><i class="sw" style="background:{EMB}"></i>embodied (P50)</span>'
              f'<span><i class="sw" style="background:{OP}"></i>operational (P50)</span>'
              f'<span>│ whisker: total P5–P95</span>'
              + "".join(f"<span>{_e(k)} = {_e(v)}</span>" for k, v in shorts.items()) + "</div>")
    return "".join(out) + legend


# ------------------------------------------------------------------------------ scatter
def scatter(points: dict[str, list], *, x: str, y: str, title: str, xlabel: str, ylabel: str,
            fronts: list[tuple[str, list[int], str]] = (), vline: float | None = None, vlabel: str = "",
            color_by: str | None = None, filled: str | None = None, cls: str = "pareto",
            width: int = 900, height: int = 380, logx: bool = False) -> str:
    xs_ = np.asarray(points[x], dtype=float)
    ys_ = np.asarray(points[y], dtype=float)
    ok = np.isfinite(xs_) & np.isfinite(ys_)
    if not ok.any():
        return f'<p class="muted">{_e(title)}: no feasible points</p>'
    m = {"l": 64, "r": 170, "t": 28, "b": 40}
    xlo, xhi = float(xs_[ok].min()), float(xs_[ok].max())
    if vline is not None and math.isfinite(vline):
        xhi = max(xhi, vline)
        xlo = min(xlo, vline)
    ylo, yhi = float(ys_[ok].min()), float(ys_[ok].max())
    pad = (yhi - ylo) * 0.06 or abs(yhi) * 0.1 or 1.0
    if logx:
        xs = _Scale(xlo * 0.9, xhi * 1.1, m["l"], width - m["r"], log=True)
        xt = [10 ** k for k in range(math.floor(math.log10(xlo * 0.9)), math.ceil(math.log10(xhi * 1.1)) + 1)]
        xt = [v for v in xt if xlo * 0.9 <= v <= xhi * 1.1] or [xlo, xhi]
    else:
        xp = (xhi - xlo) * 0.05 or 1.0
        xs = _Scale(xlo - xp, xhi + xp, m["l"], width - m["r"])
        xt = _nice_ticks(xlo - xp, xhi + xp)
    ys = _Scale(ylo - pad, yhi + pad, height - m["b"], m["t"])
    out = [f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<text x="{m["l"]}" y="16" style="font-weight:600">{_e(title)}</text>',
           _axes(width, height, m, xs, ys, xt, _nice_ticks(ylo - pad, yhi + pad), xlabel, ylabel)]
    cats: list[str] = []
    if color_by:
        for c in points[color_by]:
            if c not in cats:
                cats.append(c)
    labels = points.get("label", [""] * len(xs_))
    for i in np.flatnonzero(ok):
        col = PALETTE[cats.index(points[color_by][i]) % len(PALETTE)] if color_by else PALETTE[0]
        fill = col if (filled is None or points[filled][i]) else "none"
        out.append(f'<circle class="pt" cx="{xs(xs_[i]):.1f}" cy="{ys(ys_[i]):.1f}" r="3" fill="{fill}" stroke="{col}" '
                   f'fill-opacity="0.75"><title>{_e(labels[i])}: {_e(_num(xs_[i]))} / {_e(_num(ys_[i]))}</title></circle>')
    for name, idx, style in fronts:
        pts = [(xs(xs_[i]), ys(ys_[i])) for i in idx if ok[i]]
        if pts:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            out.append(f'<polyline class="{name}" points="{path}" fill="none" {style}/>')
    if vline is not None and math.isfinite(vline):
        vx = xs(vline)
        out.append(f'<line class="slo" x1="{vx:.1f}" x2="{vx:.1f}" y1="{m["t"]}" y2="{height - m["b"]}" stroke="#c62828" stroke-dasharray="4 3"/>'
                   f'<text x="{vx + 3:.1f}" y="{m["t"] + 10}" fill="#c62828">{_e(vlabel)}</text>')
    ly = m["t"] + 6
    for k, c in enumerate(cats[:12]):
        col = PALETTE[k % len(PALETTE)]
        out.append(f'<circle cx="{width - m["r"] + 14}" cy="{ly}" r="4" fill="{col}"/><text x="{width - m["r"] + 22}" y="{ly + 4}">{_e(c)}</text>')
        ly += 15
    for name, _, style in fronts:
        out.append(f'<line x1="{width - m["r"] + 8}" x2="{width - m["r"] + 20}" y1="{ly}" y2="{ly}" {style}/>'
                   f'<text x="{width - m["r"] + 24}" y="{ly + 4}">{_e(name.replace("front-", "frontier "))}</text>')
        ly += 15
    if filled:
        out.append(f'<text x="{width - m["r"] + 8}" y="{ly + 6}">hollow: misses SLO</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------ time series
def line_chart(t: Sequence[float], series: dict[str, Sequence[float]], *, title: str, ylabel: str,
               yfmt=_fmt_tick, width: int = 900, height: int = 240, cls: str = "timeseries") -> str:
    if not series or not len(t):
        return f'<p class="muted">{_e(title)}: no channel in the trace</p>'
    m = {"l": 64, "r": 150, "t": 26, "b": 36}
    tt = np.asarray(t, dtype=float)
    ymax = max(float(np.nanmax(np.asarray(v, dtype=float))) for v in series.values()) * 1.08 or 1.0
    xs = _Scale(float(tt.min()), float(tt.max()), m["l"], width - m["r"])
    ys = _Scale(0, ymax, height - m["b"], m["t"])
    out = [f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<text x="{m["l"]}" y="16" style="font-weight:600">{_e(title)}</text>',
           _axes(width, height, m, xs, ys, _nice_ticks(float(tt.min()), float(tt.max())), _nice_ticks(0, ymax),
                 "time (s)", ylabel, yfmt=yfmt)]
    for k, (name, vals) in enumerate(series.items()):
        col = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{xs(a):.1f},{ys(float(b)):.1f}" for a, b in zip(tt, vals) if math.isfinite(float(b)))
        out.append(f'<polyline class="series" points="{pts}" fill="none" stroke="{col}" stroke-width="1.3"><title>{_e(name)}</title></polyline>')
        y = m["t"] + 6 + 15 * k
        out.append(f'<line x1="{width - m["r"] + 8}" x2="{width - m["r"] + 22}" y1="{y}" y2="{y}" stroke="{col}" stroke-width="2"/>'
                   f'<text x="{width - m["r"] + 26}" y="{y + 4}">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------ sections
def _mode_badge(mode: str) -> str:
    mode = (mode or "?").upper()
    cls = "measured" if mode == "MEASURED" else "modeled" if mode == "MODELED" else "mixed"
    return f'<span class="badge {cls}">{_e(mode)}</span>'


def _slo_cell(slo: dict[str, Any] | None) -> str:
    if not slo:
        return '<span class="muted">no SLO</span>'
    verdict, lines = slo_lines(slo)
    cls = "miss" if "missed" in verdict else "warn" if ("tight" in verdict or "unknown" in verdict) else "ok"
    word = "missed" if "missed" in verdict else "met, tight" if "tight" in verdict else \
        "unknown" if "unknown" in verdict else "met"
    return f'<span class="{cls}">{word}</span><br>' + "<br>".join(_e(_strip_markup(x)) for x in lines)


def _strip_markup(txt: str) -> str:
    import re

    return re.sub(r"\[/\]|\[/?(?:red|yellow|green|bold|dim)\b[^\]]*\]", "", txt)


_URL = __import__("re").compile(r"https?://[^\s)<>\"']+[^\s)<>\"'.,;]")
_GH = __import__("re").compile(r"\b([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@([0-9a-f]{7,40})\b(?:\s+([\w./-]+\.\w+))?")


def linkify(text: str) -> str:
    """Escaped text with its URLs and ``owner/repo@commit path`` references as links."""
    out, pos = [], 0
    spans = []
    for m in _URL.finditer(text):
        spans.append((m.start(), m.end(), m.group(0)))
    for m in _GH.finditer(text):
        if any(a <= m.start() < b for a, b, _ in spans):
            continue
        repo, sha, path = m.group(1), m.group(2), m.group(3)
        url = f"https://github.com/{repo}/blob/{sha}/{path}" if path else f"https://github.com/{repo}/tree/{sha}"
        spans.append((m.start(), m.end(), url))
    for a, b, url in sorted(spans):
        if a < pos:
            continue
        out.append(_e(text[pos:a]))
        out.append(f'<a href="{_e(url)}" rel="noreferrer">{_e(text[a:b])}</a>')
        pos = b
    out.append(_e(text[pos:]))
    return "".join(out)


def _figure_txt(label: str, f: dict[str, Any] | None, unit: str) -> str:
    if not f:
        return f"<p><b>{_e(label)}</b>: missing</p>"
    rng = ""
    if f.get("low") is not None or f.get("high") is not None:
        rng = f" (low {_num(f.get('low'))}, high {_num(f.get('high'))})"
    src = f.get("source")
    return (f"<p><b>{_e(label)}</b>: {_num(f.get('best'))} {_e(unit)}{_e(rng)}."
            + (f" <span class=src>Source: {linkify(str(src))}</span>" if src else "") + "</p>")


def _value_txt(v: Any) -> str:
    if isinstance(v, dict):
        return "<ul class=kv>" + "".join(f"<li><b>{_e(k)}</b>: {_value_txt(x)}</li>" for k, x in v.items()) + "</ul>"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value_txt(x) for x in v) or "none"
    if isinstance(v, float):
        return _e(U.num(v, sig=4))
    return linkify(str(v)) if v is not None else "missing"


def _sources_block(sources: dict[str, Any], assumptions: dict[str, Any] | None = None) -> str:
    """Sources and assumptions as sentences with links (never raw JSON)."""
    out = ['<h2 id="sources">Sources and assumptions</h2>']
    if assumptions:
        a = dict(assumptions)
        grid = a.pop("grid gCO2e/kWh", None) or a.pop("grid_gco2e_per_kwh", None)
        pue = a.pop("PUE", None) or a.pop("pue", None)
        if grid:
            out.append(_figure_txt("grid carbon intensity" + (f" ({a.get('region')})" if a.get("region") else ""),
                                   grid, "gCO2e/kWh"))
        if pue:
            out.append(_figure_txt("PUE", pue, ""))
        a.pop("region", None)
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value_txt(v)}</td></tr>" for k, v in a.items() if v not in (None, {}, []))
        if rows:
            out.append(f"<table class=assumptions>{rows}</table>")
    items = []
    for k, v in (sources or {}).items():
        if isinstance(v, dict):
            parts = [f"<li><b>{_e(kk)}</b>: {linkify(str(vv)) if vv else '<span class=muted>missing</span>'}</li>"
                     for kk, vv in v.items()]
            items.append(f"<dt><code>{_e(k)}</code></dt><dd><ul>{''.join(parts)}</ul></dd>")
        else:
            items.append(f"<dt><code>{_e(k)}</code></dt><dd>{linkify(str(v))}</dd>")
    if items:
        out.append("<details open><summary>device, grid and PUE sources</summary><dl class=sources>"
                   + "".join(items) + "</dl></details>")
    return "".join(out)


def _headline(rep: Mapping[str, Any]) -> str:
    """The first panel: total, per 1k tokens, kWh, storage share, SLO verdict, mode and why."""
    hd = rep.get("headline") or {}
    total = hd.get("total_g") if "total_g" in hd else (rep.get("totals") or {}).get("total_gco2e")
    per1k = hd.get("per_1k_tokens_g") if "per_1k_tokens_g" in hd else rep.get("per_1k_tokens_gco2e")
    # (label, text); the SLO cell's text is None: it is drawn from the report's SLO block below
    cells: list[tuple[str, str | None]] = [("total per run", _band_txt(total)),
                                           ("per 1k generated tokens", _band_txt(per1k))]
    if "energy_kwh" in hd:
        e = hd.get("energy_kwh")
        cells.append(("energy", "missing" if not e else U.band_in(e, U.Scale(1.0, "kWh"))))
    else:
        cells.append(("energy", "not in this report"))
    ss = hd.get("storage_share")
    if ss:
        cells.append(("storage share (DRAM + SSD + HDD)", "; ".join(f"{k} {U.band_share(ss.get(k))}"
                                                                   for k in ("embodied", "operational", "total") if k in ss)))
    elif "storage_share" in hd:
        cells.append(("storage share", "missing"))
    lat = rep.get("latency") or {}
    cells.append(("SLO", None))
    mode = str(rep.get("mode", "?")).upper()
    html_cells = []
    for k, v in cells:
        val = _slo_cell(lat.get("slo")) if k == "SLO" else _e(v)
        html_cells.append(f'<div class="hl"><div class="hl-k">{_e(k)}</div><div class="hl-v">{val}</div></div>')
    extra = []
    if rep.get("scope"):
        extra.append(f"scope: <b>{_e(rep['scope'])}</b>")
    if "coverage" in rep:
        extra.append("coverage: " + ("missing" if rep.get("coverage") is None else
                                     f"{_e(U.share(rep['coverage']))} of the plausible total has data"))
    if rep.get("excludes"):
        extra.append("excludes: " + _e(", ".join(rep["excludes"])))
    extra.append(f"{_mode_badge(mode)} {_e(mode_why(rep))}")
    return (f'<div class="headline" id="headline">{"".join(html_cells)}</div>'
            f'<p class="note">{" · ".join(extra)}</p>')


def _bytes_table(rep: Mapping[str, Any]) -> str:
    """Application-level (LMCache) against block-level bytes per tier, and their gap."""
    tiers = rep.get("tiers") or []
    if not any(t.get("app_bytes_written") or t.get("app_bytes_read") for t in tiers) and \
            str(rep.get("mode", "")).lower() != "measured":
        return ""
    rows = []
    for t in tiers:
        ar, aw = t.get("app_bytes_read") or 0, t.get("app_bytes_written") or 0
        br, bw = t.get("bytes_read") or 0, t.get("bytes_written") or 0
        block = t["tier"] in ("ssd", "hdd")
        gap = (bw - aw) if (block and aw) else None
        rows.append(f"<tr><td>{_e(t['tier'])}</td><td class=num>{fmt_bytes(ar)}</td><td class=num>{fmt_bytes(aw)}</td>"
                    f"<td class=num>{fmt_bytes(br) if block else '—'}</td><td class=num>{fmt_bytes(bw) if block else '—'}</td>"
                    f"<td class=num>{'—' if gap is None else fmt_bytes(gap)}</td></tr>")
    return ('<h3 id="app-vs-block">Application-level and block-level bytes</h3>'
            '<table class="bytes-app-block"><tr><th>tier</th><th>LMCache read</th><th>LMCache written</th>'
            '<th>block read</th><th>block written</th><th>gap (block − LMCache written)</th></tr>' + "".join(rows)
            + '</table><p class="note">LMCache: the bytes the application stored to and loaded from each tier (its '
              'tier taps). Block: what the block device counted (<code>/proc/diskstats</code>), which also holds the '
              'filesystem, page-cache write-back and every other process. DRAM has no block-level counter (—).</p>')


def _devices_block(rep: Mapping[str, Any]) -> str:
    devs = [d for d in rep.get("devices") or [] if any(k in d for k in ("energy_kwh", "energy_j", "idle_capacity_share"))]
    if not devs:
        return ""
    rows = []
    for d in devs:
        e = d.get("energy_kwh")
        e_txt = "missing" if e is None else (U.band_in(e, U.Scale(1.0, "kWh")) if isinstance(e, dict) else f"{U.num(e)} kWh")
        rows.append(f"<tr><td>{_e(d.get('id'))}</td><td>{_e(d.get('count'))} × {_e(d.get('db_key'))}</td>"
                    f"<td class=num>{_e(e_txt)}</td><td>{_e(d.get('energy_method') or d.get('energy_basis') or '')}</td>"
                    f"<td class=num>{_e(U.share(d.get('idle_capacity_share'))) if 'idle_capacity_share' in d else '—'}</td></tr>")
    return ('<h3>Per device</h3><table class="devices"><tr><th>device</th><th>units</th><th>energy</th><th>basis</th>'
            '<th>idle capacity share</th></tr>' + "".join(rows) + "</table>")


def _accounting_blocks(rep: Mapping[str, Any]) -> str:
    out = []
    if rep.get("ledger"):
        rows = []
        for r in rep["ledger"]:
            rows.append(f"<tr><td>{_e(r.get('tier'))}</td><td>{_e(r.get('kind') or '')}</td>"
                        f"<td class=num>{_band_txt(r.get('cost_g'))}</td><td class=num>{_band_txt(r.get('saving_g'))}</td>"
                        f"<td class=num>{_band_txt(r.get('net_g'))}</td><td class=num>{_e(U.prob(r.get('p_pays_for_itself')))}</td>"
                        f"<td class=num>{_e(U.count(r.get('hit_tokens'))) if r.get('hit_tokens') is not None else '—'}</td>"
                        f"<td>{_e(r.get('basis') or '')}</td></tr>")
        out.append('<h2 id="ledger">Offload ledger</h2><table class="ledger"><tr><th>tier</th><th>kind</th><th>cost</th>'
                   '<th>saving</th><th>net</th><th>P(pays for itself)</th><th>KV hit tokens</th><th>basis</th></tr>'
                   + "".join(rows) + '</table><p class="note">net = cost − saving; a negative net means the tier saves '
                   'more than it costs.</p>')
    if rep.get("wear"):
        rows = []
        for r in rep["wear"]:
            cls = ' class="miss"' if r.get("over_rating") else ""
            life = r.get("implied_lifetime_years")
            rows.append(f"<tr><td>{_e(r.get('device'))}</td><td class=num><span{cls}>{_e(U.num(r.get('drive_writes_per_day')))}"
                        f"</span></td><td class=num>{_e(U.num(r.get('rated_dwpd')))}</td>"
                        f"<td class=num>{'missing' if life is None else _e(U.num(life)) + ' years'}</td></tr>")
        out.append('<h3 id="wear">Flash wear</h3><table class="wear"><tr><th>drive</th><th>drive writes per day</th>'
                   '<th>rated DWPD</th><th>implied lifetime</th></tr>' + "".join(rows) + "</table>")
    if rep.get("missing"):
        out.append('<h3 id="missing">Missing (left out, never counted as zero)</h3><ul class="missing">' + "".join(
            f"<li><code>{_e(m.get('device'))}.{_e(m.get('field'))}</code>: {_e(m.get('reason', ''))}</li>"
            for m in rep["missing"]) + "</ul>")
    return "".join(out)


STORAGE_TIERS = ("dram", "ssd", "hdd")


def _storage_panel(rep: Mapping[str, Any]) -> str:
    """The storage tiers on a scale of their own (next to the GPU they would be invisible)."""
    bars = [{"label": t["tier"], "emb": (t.get("embodied_gco2e") or {}).get("p50") or 0.0,
             "op": (t.get("operational_gco2e") or {}).get("p50") or 0.0,
             "lo": (t.get("total_gco2e") or {}).get("p5"), "hi": (t.get("total_gco2e") or {}).get("p95")}
            for t in rep.get("tiers", []) if t["tier"] in STORAGE_TIERS]
    if not bars:
        return ""
    tot = ((rep.get("totals") or {}).get("total_gco2e") or {}).get("p50") or 0.0
    st = sum(b["emb"] + b["op"] for b in bars)
    share = f" — {U.share(st / tot)} of the run's P50 total" if tot else ""
    return ('<h3 id="storage">Storage tiers on their own scale</h3>'
            + stacked_bars([{"name": "", "bars": bars}], title=f"gCO2e of the storage tiers (stacked P50, whisker P5–P95){share}",
                           cls="tiers storage", height=260))


def _profile_section(rep: Mapping[str, Any], trace_path: str | Path | None) -> str:
    out = [f'<h1>{_mode_badge(rep.get("mode", "?"))} {_e(rep.get("scenario", ""))}</h1>']
    if rep.get("totals") or rep.get("headline"):
        out.append(_headline(rep))
    if rep.get("truncated"):
        out.append('<p class="warn">The trace was cut short: figures cover the recorded part only.</p>')
    tot = rep.get("totals", {})
    if tot:
        out.append("<table><tr><th></th><th>embodied</th><th>operational</th><th>total</th></tr>"
                   f"<tr><th>run</th><td class=num>{_band_txt(tot.get('embodied_gco2e'))}</td><td class=num>{_band_txt(tot.get('operational_gco2e'))}</td>"
                   f"<td class=num>{_band_txt(tot.get('total_gco2e'))}</td></tr>")
        for name, ph in (rep.get("phases") or {}).items():
            out.append(f"<tr><th>phase {_e(name)} ({_e(U.seconds(ph.get('time_s')))})</th><td class=num>{_band_txt(ph.get('embodied_gco2e'))}</td>"
                       f"<td class=num>{_band_txt(ph.get('operational_gco2e'))}</td><td class=num>{_band_txt(ph.get('total_gco2e'))}</td></tr>")
        out.append(f"<tr><th>per request</th><td></td><td></td><td class=num>{_band_txt(rep.get('per_request_gco2e'))}</td></tr>"
                   f"<tr><th>per 1k generated tokens</th><td></td><td></td><td class=num>{_band_txt(rep.get('per_1k_tokens_gco2e'))}</td></tr></table>")
        tok = rep.get("tokens") or {}
        out.append(f'<p class="note">{_e(U.count(rep.get("requests", 0)))} requests; {_e(U.count(tok.get("prompt", 0)))} prompt '
                   f'and {_e(U.count(tok.get("generated", 0)))} generated tokens; duration {_e(U.seconds(rep.get("duration_s")))}.</p>')
    bars = [{"label": t["tier"], "emb": (t.get("embodied_gco2e") or {}).get("p50") or 0.0,
             "op": (t.get("operational_gco2e") or {}).get("p50") or 0.0,
             "lo": (t.get("total_gco2e") or {}).get("p5"), "hi": (t.get("total_gco2e") or {}).get("p95")}
            for t in rep.get("tiers", [])
            if t.get("total_gco2e") is not None]  # a tier without any device figure is missing, not a 0 bar
    if bars:
        out.append("<h2>Per tier</h2>")
        out.append(stacked_bars([{"name": "", "bars": bars}], title="gCO2e per tier (stacked P50, whisker P5–P95 of the total)"))
        out.append(_storage_panel(rep))
    rows = []
    tl = rep.get("tiers", [])
    ce, co = U.Column([t.get("embodied_gco2e") for t in tl], U.MASS), U.Column([t.get("operational_gco2e") for t in tl], U.MASS)
    cr, cw = U.Column([t.get("bytes_read") for t in tl], U.BYTES), U.Column([t.get("bytes_written") for t in tl], U.BYTES)
    cm = U.Column([t.get("mean_resident_bytes") for t in tl], U.BYTES)
    for t in tl:
        rows.append(f"<tr><td>{_e(t['tier'])}</td><td>{_e(', '.join(d.replace(' x ', ' × ') for d in t.get('devices', [])))}</td>"
                    f"<td class=num>{cr(t.get('bytes_read', 0))}</td><td class=num>{cw(t.get('bytes_written', 0))}</td>"
                    f"<td class=num>{cm(t.get('mean_resident_bytes', 0))}</td><td class=num>{ce.band(t.get('embodied_gco2e'))}</td>"
                    f"<td class=num>{co.band(t.get('operational_gco2e'))}</td><td>{_e('; '.join(t.get('energy_methods') or t.get('energy_basis') or []))}</td></tr>")
    if rows:
        out.append(f"<table class=tiers><tr><th>tier</th><th>devices</th><th>read ({cr.unit})</th><th>written ({cw.unit})</th>"
                   f"<th>mean occupancy ({cm.unit})</th><th>embodied ({ce.unit})</th><th>operational ({co.unit})</th>"
                   "<th>energy basis</th></tr>" + "".join(rows) + "</table>")
    out.append(_bytes_table(rep))
    out.append(_devices_block(rep))
    out.append(_accounting_blocks(rep))
    lat = rep.get("latency") or {}
    lrows = []
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")):
        st = lat.get(key)
        if st:
            lrows.append(f"<tr><th>{label}</th><td class=num>{_e(U.millis(st.get('p50')))}</td><td class=num>{_e(U.millis(st.get('p90')))}</td>"
                         f"<td class=num>{_e(U.millis(st.get('p99')))}</td></tr>")
    if lrows:
        out.append("<h3>Latency</h3><table><tr><th></th><th>P50</th><th>P90</th><th>P99</th></tr>" + "".join(lrows) + "</table>")
        out.append(f"<p>SLO: {_slo_cell(lat.get('slo'))}</p>")
    ts = rep.get("timeline")
    if ts and ts.get("t_s"):
        out.append(f'<h2>Time series ({_mode_badge(ts.get("source"))})</h2>')
        out.append(line_chart(ts["t_s"], ts["power_w"], title="power per device", ylabel="power",
                              yfmt=lambda v: U.quantity(v, U.POWER) if v else "0"))
        if ts.get("power_basis"):
            out.append('<p class="note">' + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in ts["power_basis"].items()) + "</p>")
        bps = lambda v: fmt_bytes(v) + "/s" if v else "0"  # noqa: E731
        out.append(line_chart(ts["t_s"], ts["read_bytes_per_s"], title="read rate per device", ylabel="bytes/s", yfmt=bps))
        out.append(line_chart(ts["t_s"], ts["write_bytes_per_s"], title="write rate per device", ylabel="bytes/s",
                              yfmt=bps))
    a = rep.get("assumptions") or {}
    out.append(_sources_block(rep.get("sources") or {}, {
        "grid gCO2e/kWh": a.get("grid_gco2e_per_kwh"), "region": a.get("region"), "PUE": a.get("pue"),
        "embodied allocation": a.get("allocation"), "Monte Carlo draws": a.get("draws"), "seed": a.get("seed"),
        "sampling": a.get("sampling")} if a else None))
    prov = rep.get("provenance") or {}
    if prov:
        from .terminal import energy_basis_lines

        items = energy_basis_lines(rep) + [str(n) for n in prov.get("notes") or [] if len(str(n)) <= 200]
        items += [f"sensor {k}: {'available' if v.get('available', True) else 'not available'} — {v.get('reason', '')}"
                  for k, v in (prov.get("sensors") or {}).items()]
        out.append("<h3>Provenance</h3><ul class=provenance>" + "".join(f"<li>{linkify(x)}</li>" for x in items) + "</ul>")
    if rep.get("warnings"):
        out.append("<h3>Warnings</h3><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in rep["warnings"]) + "</ul>")
    return "".join(out)


def _compare_section(cmp: dict[str, Any]) -> str:
    opts = cmp["options"]
    modes = {o["mode"] for o in opts}
    mode = modes.pop() if len(modes) == 1 else "MIXED"
    out = [f'<h1>{_mode_badge(mode)} compare: {_e(", ".join(o["name"] for o in opts))}</h1>',
           f'<p class="note">{_e(cmp["pairing"])}. {cmp["draws"]} draws, seed {cmp["seed"]}. Metric: {_e(cmp["metric"])}.</p>']
    bars = [{"label": o["name"], "emb": o["totals"]["embodied_gco2e"]["p50"] / max(o["generated_tokens"], 1) * 1000,
             "op": o["totals"]["operational_gco2e"]["p50"] / max(o["generated_tokens"], 1) * 1000,
             "lo": (o.get("per_1k_tokens_gco2e") or {}).get("p5"), "hi": (o.get("per_1k_tokens_gco2e") or {}).get("p95")}
            for o in opts]
    out.append(stacked_bars([{"name": "", "bars": bars}], title="gCO2e per 1k generated tokens (stacked P50, whisker P5–P95)",
                            cls="totals"))
    groups = []
    for t in cmp["tiers"]:
        gb = []
        for o in opts:
            row = next((r for r in o["tiers"] if r["tier"] == t), None)
            if row and row.get("present"):
                gb.append({"label": o["name"], "short": f"#{opts.index(o) + 1}", "emb": row["embodied_gco2e"]["p50"], "op": row["operational_gco2e"]["p50"],
                           "lo": row["total_gco2e"]["p5"], "hi": row["total_gco2e"]["p95"]})
        if gb:
            groups.append({"name": t, "bars": gb})
    out.append("<h2>Per tier</h2>" + stacked_bars(groups, title="gCO2e per tier and option (per run)", cls="tiers", height=360))
    outs = {x["name"] for x in (cmp.get("candidates") or {}).get("excluded", [])}
    head = "".join(f"<th>{_e(o['name'])}<br>{_mode_badge(o['mode'])}"
                   f"{'<br><span class=miss>out: misses its SLO</span>' if o['name'] in outs else ''}</th>" for o in opts)
    rows = []
    for t in cmp["tiers"]:
        cells = []
        for o in opts:
            row = next((r for r in o["tiers"] if r["tier"] == t), None)
            if not row or not row.get("present"):
                cells.append('<td class="muted">—</td>')
            else:
                cells.append(f"<td class=num>emb {_band_txt(row['embodied_gco2e'])}<br>op {_band_txt(row['operational_gco2e'])}"
                             f"<br><span class=muted>{_e(', '.join(row['devices']))}</span></td>")
        rows.append(f"<tr><th>{_e(t)}</th>{''.join(cells)}</tr>")
    for key, lab in (("embodied_gco2e", "embodied (run)"), ("operational_gco2e", "operational (run)"), ("total_gco2e", "total (run)")):
        rows.append(f"<tr><th>{lab}</th>" + "".join(f"<td class=num>{_band_txt(o['totals'][key])}</td>" for o in opts) + "</tr>")
    rows.append("<tr><th>per 1k generated tokens</th>" + "".join(f"<td class=num><b>{_band_txt(o['per_1k_tokens_gco2e'])}</b></td>" for o in opts) + "</tr>")
    rows.append("<tr><th>per request</th>" + "".join(f"<td class=num>{_band_txt(o['per_request_gco2e'])}</td>" for o in opts) + "</tr>")
    rows.append("<tr><th>TTFT / TPOT vs SLO</th>" + "".join(f"<td>{_slo_cell(o['latency'].get('slo'))}</td>" for o in opts) + "</tr>")
    pl_ = (cmp.get("candidates") or {}).get("p_lowest") or cmp["p_lowest"]
    rows.append("<tr><th>P(lowest among candidates)</th>" + "".join(
        f"<td class=num>{_e(U.prob(pl_[o['name']])) if o['name'] in pl_ else 'out'}</td>" for o in opts) + "</tr>")
    rows.append("<tr><th>grid</th>" + "".join(f"<td>{_e(o['grid']['label'])}<br><span class=muted>{_e(U.band_in(o['grid']['gco2e_per_kwh'], U.Scale(1.0, 'gCO2e/kWh')))}</span></td>" for o in opts) + "</tr>")
    out.append(f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    prow = "".join(f"<tr><td>{_e(p['a'])}</td><td>{_e(p['b'])}</td><td class=num>{U.prob(p['p_a_less'])}</td><td class=num>{U.prob(p['p_b_less'])}</td>"
                   f"<td class=num>{_band_txt(p['diff_per_1k_gco2e'])}</td><td class=num>{U.share(p['rel_diff']['p50'], True)} "
                   f"[{U.share(p['rel_diff']['p5'], True)}, {U.share(p['rel_diff']['p95'], True)}]</td></tr>"
                   for p in cmp["pairs"])
    out.append("<h2>Paired probabilities</h2><table><tr><th>A</th><th>B</th><th>P(A&lt;B)</th><th>P(B&lt;A)</th>"
               "<th>A − B per 1k tokens</th><th>(A − B)/B</th></tr>" + prow + "</table>")
    cand = cmp.get("candidates") or {}
    r = cand.get("ranking") or cmp["ranking"]
    out.append('<h2 id="candidates">Candidates</h2>')
    if cand:
        out.append(f'<p class="note">{_e(cand.get("rule", ""))}.</p>')
        out.append(f"<p>Among candidates, by median: {_e(' < '.join(r['by_p50']) or 'none')}; by P95: "
                   f"{_e(' < '.join(r['by_p95']) or 'none')}.</p>")
        if cand.get("excluded"):
            out.append('<ul class="excluded">' + "".join(f'<li><b>{_e(x["name"])}</b> is out: <span class="miss">'
                                                         f'{_e(x["reason"])}</span></li>' for x in cand["excluded"]) + "</ul>")
    else:
        out.append(f"<p>Ranking by median: {_e(' < '.join(r['by_p50']))}; by P95: {_e(' < '.join(r['by_p95']))}.</p>")
    warns = sorted({w for o in opts for w in o["warnings"]})
    out.append(_sources_block(cmp.get("sources") or {}))
    if warns:
        out.append("<h3>Warnings</h3><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warns) + "</ul>")
    return "".join(out)


def _plan_row(r: dict[str, Any]) -> str:
    q = r["per_1k_tokens_gco2e"]
    return (f"<tr><td>{_e(r['label'])}{' <span class=muted>(+%d equivalent)</span>' % r['equivalent_configurations'] if r.get('equivalent_configurations') else ''}</td>"
            f"<td>{_e(r['lifetime'])}</td><td>{_e(r['grid'])}</td>"
            f"<td class=num>{_band_txt(q)}</td><td class=num>{fmt_g(r['robust_gco2e_per_1k'])}</td>"
            f"<td class=num>{fmt_g(r['embodied_per_1k_gco2e']['p50'])}</td><td class=num>{fmt_g(r['operational_per_1k_gco2e']['p50'])}</td>"
            f"<td class=num>{_e(U.millis(r['ttft_p90_ms']))}</td><td class=num>{_e(U.millis(r['tpot_p90_ms']))}</td>"
            f"<td class=num>{U.prob(r['p_lowest'])}</td><td>{'<span class=ok>met</span>' if r['slo_met'] else '<span class=miss>missed</span>'}</td></tr>")


PLAN_HEAD = ("<tr><th>configuration</th><th>lifetime</th><th>grid</th><th>gCO2e/1k tok P50 [P5–P95]</th><th>robust (P95)</th>"
             "<th>embodied P50</th><th>operational P50</th><th>TTFT p90</th><th>TPOT p90</th><th>P(lowest)</th><th>SLO</th></tr>")


def _hw_txt(hw: dict[str, Any]) -> str:
    from ..plan.cli import hw_label

    return _e(hw_label(hw))


def _purchase_block(pl: dict[str, Any]) -> str:
    """What to buy: the bill of materials, its saving against the base scenario and the what-ifs."""
    pu = pl.get("purchase") or {}
    if not pu.get("pick"):
        return '<p class="warn">No hardware meets the SLO with complete device data on the decision grid.</p>'
    pick, bom, vs = pu["pick"], pu["bom"], pu.get("vs_base") or {}
    out = [f'<h2 id="buy">What to buy</h2><p class="note">{_e(pu["rule"])}.</p>']
    rows = []
    for it in bom["devices"]:
        buy = "none" if not it["device"] else f"{it['count']} × {it['device']}"
        if it.get("name") and it["device"]:
            buy += f" <span class=muted>({_e(it['name'])})</span>"
        cap = f"{fmt_bytes(it['capacity_gb_total'] * 1e9)}" if it.get("capacity_gb_total") else ""
        b = it["base"]
        base = "none" if not b["device"] else f"{b['count']} × {b['device']}"
        rows.append(f"<tr><th>{_e(it['item'])}</th><td>{buy}</td><td class=num>{_e(cap)}</td><td>{_e(base)}</td>"
                    f"<td class=muted>{_e(it.get('note') or '')}</td></tr>")
    kv, e = bom["kv"], bom["engine"]
    kv_txt = " + ".join(["HBM"] + ([f"DRAM {U.count(kv['cpu_gb'])} GB"] if kv["cpu_gb"] else [])
                        + ([f"disk {U.count(kv['disk_gb'])} GB"] if kv["disk_gb"] else []))
    bh = vs.get("base_hardware") or {}
    bkv = bh.get("kv") or {}
    bkv_txt = " + ".join(["HBM"] + ([f"DRAM {U.count(bkv['cpu_gb'])} GB"] if bkv.get("cpu_gb") else [])
                         + ([f"disk {U.count(bkv['disk_gb'])} GB"] if bkv.get("disk_gb") else []))
    wt = lambda w: ", ".join(f"{U.share(f)} {t.upper()}" for t, f in (w or {}).items())  # noqa: E731
    rows.append(f"<tr><th>KV cache tiers</th><td>{_e(kv_txt)}</td><td></td><td>{_e(bkv_txt)}</td><td></td></tr>")
    rows.append(f"<tr><th>weights</th><td>{_e(wt(bom['weights']))}</td><td></td><td>{_e(wt(bh.get('weights')))}</td><td></td></tr>")
    rows.append(f"<tr><th>vLLM settings</th><td>gpu_memory_utilization {e['gpu_memory_utilization']:g}, max_num_seqs "
                f"{e['max_num_seqs']}</td><td></td><td>{_e(bh.get('gpu_memory_utilization', ''))}, {_e(bh.get('max_num_seqs', ''))}</td>"
                f"<td class=muted>{_e(e['note'])}</td></tr>")
    out.append('<table class="bom"><tr><th>item</th><th>buy</th><th>capacity</th><th>base scenario</th><th></th></tr>'
               + "".join(rows) + "</table>")
    q = pick["per_1k_tokens_gco2e"]
    facts = [f"<li>per 1k generated tokens: <b>{_band_txt(q)}</b> (P95 {fmt_g(pick['robust_gco2e_per_1k'])}); embodied "
             f"{fmt_g(pick['embodied_per_1k_gco2e']['p50'])}, operational {fmt_g(pick['operational_per_1k_gco2e']['p50'])} (P50)</li>"]
    if vs.get("same_hardware"):
        facts.append("<li>the base scenario's hardware is already the pick</li>")
    elif vs.get("saving_per_1k_gco2e"):
        sv, sh = vs["saving_per_1k_gco2e"], vs["saving_share"]
        facts.append(f'<li class="saving">against the base scenario ({_e(vs["base_label"])}: {_band_txt(vs["base_per_1k_tokens_gco2e"])}): '
                     f"saving <b>{_band_txt(sv)}</b> per 1k tokens = <b>{U.share(sh['p50'])}</b> [{U.share(sh['p5'])}–{U.share(sh['p95'])}]; "
                     f"probability that the pick is lower: <b>{U.prob(vs['p_pick_lower'])}</b> (paired draws)</li>")
    else:
        facts.append(f"<li>base scenario not comparable: {_e(vs.get('reason', ''))}</li>")
    facts.append(f"<li>SLO: {_slo_cell({k: v for k, v in (pu.get('slo_headroom') or {}).items()})}</li>")
    out.append("<ul class=answer>" + "".join(facts) + "</ul>")
    wi = pu["what_if"]
    col = U.Column([x for r in wi["grids"] for c in r["per_1k_tokens_gco2e"] for x in (c["p50"], c["p95"])], U.MASS)
    head = "".join(f"<th>{_e(n)}<br>P50 / P95 ({col.unit} per 1k tokens)</th>" for n in wi["lifetimes"])
    wrows = []
    for r in wi["grids"]:
        mark = " class=decision" if r["grid"] == pu["grid"] else ""
        wrows.append(f"<tr{mark}><td>{_e(r['grid'])}</td><td class=num>{_num(r['gco2e_per_kwh_p50'])}</td>"
                     + "".join(f"<td class=num>{col(c['p50'])} / {col(c['p95'])}</td>" for c in r["per_1k_tokens_gco2e"])
                     + f"<td>{'same' if not r['best_hardware'] else _e(r['best_hardware'])}</td></tr>")
    out.append('<h3 id="what-if">What if: the same hardware on other grids and lifetimes</h3>'
               f'<table class="what-if"><tr><th>grid</th><th>gCO2e/kWh P50</th>{head}<th>best hardware on that grid</th></tr>'
               + "".join(wrows) + f'</table><p class="note">{_e(wi["note"])}.</p>')
    return "".join(out)


def _plan_section(pl: dict[str, Any]) -> str:
    c = pl["counts"]
    slo_txt = ", ".join(f"{k[:-3].upper()} p90 ≤ {U.millis(v)}" for k, v in pl["slo"].items() if v is not None) or "none"
    out = [f'<h1>{_mode_badge(pl.get("mode", "MODELED"))} plan: {_e(pl["sweep"]["name"])} (base {_e(pl["base_scenario"])})</h1>',
           f'<p class="note">{_e(pl.get("mode_reason", ""))}</p>',
           f'<p>{c["configurations"]} configurations ({c["hardware"]} hardware × {c["lifetimes"]} lifetime assumptions × '
           f'{c["grids"]} grids), {c["draws"]} paired draws each; {c["feasible_hardware"]} hardware configurations feasible, '
           f'{c["slo_met_hardware"]} meet the SLO ({_e(slo_txt)}).</p>']
    out.append(_purchase_block(pl))
    rec = pl["recommendation"]
    if rec["robust"]:
        rb, md = rec["robust"], rec["median"]
        out.append("<h2>Lowest over every grid and lifetime</h2>")
        out.append(f"<p><b>Robust pick</b> ({_e(rec['rule'])}):</p><table>{PLAN_HEAD}{_plan_row(rb)}</table>")
        same = "the same configuration" if not rec["robust_differs_from_median"] else "a different configuration"
        out.append(f"<p>The median pick is {same}:</p><table>{PLAN_HEAD}{_plan_row(md)}</table>")
    else:
        out.append('<p class="warn">No configuration meets the SLO with complete device data.</p>')
    out.append("<h2>How the best choice changes from a clean to a dirty grid</h2>")
    rows = []
    for g in pl["by_grid"]:
        rp = g["robust_pick"]
        rows.append(f"<tr><td>{_e(g['grid'])}</td><td class=num>{_num(g['gco2e_per_kwh_p50'])}</td>"
                    f"<td>{_e(rp['label']) if rp else '—'}</td><td>{_e(rp['lifetime']) if rp else ''}</td>"
                    f"<td class=num>{_num(rp['per_1k_tokens_gco2e']['p50']) if rp else '—'}</td><td class=num>{_num(rp['robust_gco2e_per_1k']) if rp else '—'}</td>"
                    f"<td>{'' if not g['median_pick'] or not rp or g['median_pick']['id'] == rp['id'] else _e(g['median_pick']['label'])}</td></tr>")
    out.append("<table><tr><th>grid</th><th>gCO2e/kWh P50</th><th>robust pick</th><th>lifetime</th><th>P50</th><th>P95</th>"
               "<th>median pick (if different)</th></tr>" + "".join(rows) + "</table>")
    sc = pl["scatter"]
    ids = sc["id"]
    pos = {i: k for k, i in enumerate(ids)}
    pf = pl["pareto_ids"][sc["grid"]]
    f50 = [pos[i] for i in pf["latency_vs_p50"] if i in pos]
    f95 = [pos[i] for i in pf["latency_vs_p95"] if i in pos]
    out.append(f"<h2>Pareto frontier — grid {_e(sc['grid'])}, lifetimes: {_e(sc['lifetime'])}</h2>")
    pts = {**sc, "p95_": sc["p95"]}
    out.append(scatter(pts, x="tpot_p90_ms", y="p50", title="gCO2e per 1k tokens (P50) vs TPOT p90 — every feasible configuration",
                       xlabel="TPOT p90 (ms, log)", ylabel="gCO2e / 1k tokens", color_by="gpu", filled="slo_met",
                       fronts=[("front-p50", f50, 'stroke="#222" stroke-width="1.6"')], vline=pl["slo"].get("tpot_ms"),
                       vlabel="TPOT SLO", logx=True))
    out.append(scatter(pts, x="tpot_p90_ms", y="p95_", title="gCO2e per 1k tokens (P95) vs TPOT p90 — robust view",
                       xlabel="TPOT p90 (ms, log)", ylabel="gCO2e / 1k tokens (P95)", color_by="gpu", filled="slo_met",
                       fronts=[("front-p95", f95, 'stroke="#c62828" stroke-width="1.6"')], vline=pl["slo"].get("tpot_ms"),
                       vlabel="TPOT SLO", logx=True))
    feo = [pos[i] for i in pf["embodied_vs_operational"] if i in pos]
    slo_pts = {k: [v[j] for j in range(len(ids)) if sc["slo_met"][j]] for k, v in sc.items() if isinstance(v, list)}
    pos2 = {i: k for k, i in enumerate(slo_pts.get("id", []))}
    feo2 = [pos2[ids[j]] for j in feo if ids[j] in pos2]
    out.append(scatter(slo_pts, x="emb_p50", y="op_p50", title="embodied vs operational per 1k tokens (P50), configurations meeting the SLO",
                       xlabel="embodied gCO2e / 1k tokens", ylabel="operational gCO2e / 1k tokens", color_by="gpu", cls="pareto emb-op",
                       fronts=[("front-emb-op", feo2, 'stroke="#222" stroke-width="1.6"')]))
    for kind, title in (("latency_vs_p50", "frontier: TPOT vs P50"), ("latency_vs_p95", "frontier: TPOT vs P95"),
                        ("embodied_vs_operational", "frontier: embodied vs operational")):
        rows_ = pl["pareto"].get(kind) or []
        out.append(f"<details><summary>{_e(title)} ({len(rows_)} configurations)</summary><table>{PLAN_HEAD}"
                   + "".join(_plan_row(r) for r in rows_) + "</table></details>")
    out.append(f"<h2>Top {len(pl['top'])} by P{int(round(100 * pl['robust_quantile']))}</h2><table>{PLAN_HEAD}"
               + "".join(_plan_row(r) for r in pl["top"]) + "</table>")
    if pl.get("infeasible_reasons"):
        out.append("<h3>Infeasible hardware configurations</h3><table>" + "".join(
            f"<tr><td>{_e(k)}</td><td class=num>{v}</td></tr>" for k, v in pl["infeasible_reasons"].items()) + "</table>")
    if pl.get("not_ranked"):
        out.append("<h3>Evaluated but not ranked (incomplete device data)</h3><ul>" + "".join(
            f"<li>{_e(x)}</li>" for x in pl["not_ranked"]) + "</ul>")
    grid_rows = "".join(f"<tr><td>{_e(g['label'])}</td><td class=num>{_num(g['gco2e_per_kwh_p50'])}</td><td>{linkify(str(g['source']))}</td>"
                        f"<td>{_value_txt(g['forecast_error']) if g.get('forecast_error') else ''}</td></tr>" for g in pl["grids"])
    out.append("<h2>Grids</h2><table><tr><th>grid</th><th>P50 g/kWh</th><th>source</th><th>forecast error bands</th></tr>" + grid_rows + "</table>")
    out.append(_sources_block({}, pl.get("assumptions")))
    if pl.get("warnings"):
        out.append("<h3>Warnings</h3><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in pl["warnings"]) + "</ul>")
    return "".join(out)


def render_html(*, profile: Mapping[str, Any] | None = None, trace_path: str | Path | None = None,
                compare: dict[str, Any] | None = None, plan: dict[str, Any] | None = None, title: str | None = None) -> str:
    from .. import __version__

    parts = []
    if profile is not None:
        parts.append(f"<section id=profile>{_profile_section(profile, trace_path)}</section>")
    elif trace_path is not None:
        parts.append(f"<section id=profile>{_profile_section({'scenario': Path(trace_path).name}, trace_path)}</section>")
    if compare is not None:
        parts.append(f"<section id=compare>{_compare_section(compare)}</section>")
    if plan is not None:
        parts.append(f"<section id=plan>{_plan_section(plan)}</section>")
    if not parts:
        parts.append("<p>empty report</p>")
    ttl = title or ("storagecarbon " + ("profile" if profile else "compare" if compare else "plan" if plan else "report"))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{_e(ttl)}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body><main>"
            + "".join(parts)
            + f'<pre id="js-errors" class="warn"></pre><p class="note">storagecarbon {_e(__version__)} — self-contained report '
              f"(inline SVG, no external assets).</p></main></body></html>\n")


def write_html(path: str | Path, *, profile: Mapping[str, Any] | None = None, trace_path: str | Path | None = None,
               compare: dict[str, Any] | None = None, plan: dict[str, Any] | None = None) -> Path:
    """Write one self-contained HTML report (any combination of profile, compare and plan)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(profile=profile, trace_path=trace_path, compare=compare, plan=plan), encoding="utf-8")
    return p
