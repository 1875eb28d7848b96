"""One self-contained HTML report (profile, compare, plan) that works offline.

Everything is inline: CSS, charts as SVG generated here, and a few lines of script of our own
(no CDN, no external assets, no fonts fetched). Charts carry CSS classes the browser test looks
for (``bar-emb``/``bar-op``/``band`` in tier charts, ``pt``/``front-p50``/``front-p95`` in the
Pareto chart, ``series`` in trace time series).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .terminal import band, fmt_bytes, fmt_g

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
    return f"{x:.{digits}g}"


_band_txt = band  # the terminal report's P50 [P5–P95] text


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
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e4 or a < 1e-2:
        return f"{v:.1e}"
    return f"{v:g}"


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
def _rate(t: np.ndarray, v: np.ndarray, edges: np.ndarray, cumulative: bool) -> np.ndarray:
    if len(t) < 2:
        return np.zeros(len(edges) - 1)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    if cumulative:
        d = np.diff(v)
        d = np.where(d < 0, v[1:], d)  # counter reset
        c = np.concatenate([[0.0], np.cumsum(d)])
        at = np.interp(edges, t, c)
        return np.diff(at) / np.maximum(np.diff(edges), 1e-12)
    # gauge: time-weighted mean over each bin (held until the next sample)
    out = np.zeros(len(edges) - 1)
    idx = np.clip(np.searchsorted(t, (edges[:-1] + edges[1:]) / 2, side="right") - 1, 0, len(v) - 1)
    out[:] = v[idx]
    return out


def trace_series(trace_path: str | Path, bins: int = 240) -> dict[str, Any]:
    """Power and IO rates per device from a trace, resampled to ``bins`` intervals."""
    from ..trace import read_trace

    tr = read_trace(trace_path)
    if len(tr.t_s) == 0:
        return {"t": [], "power_w": {}, "read_bps": {}, "write_bps": {}, "power_basis": {}, "source": tr.header.source}
    t0, t1 = float(tr.t_s.min()), float(tr.t_s.max())
    if t1 <= t0:
        t1 = t0 + 1.0
    edges = np.linspace(t0, t1, bins + 1)
    mids = (edges[:-1] + edges[1:]) / 2 - t0
    power: dict[str, list[float]] = {}
    basis: dict[str, str] = {}
    rd: dict[str, list[float]] = {}
    wr: dict[str, list[float]] = {}
    db = None
    for dev in tr.header.devices:
        s = tr.series(dev.id, "power_w")
        if s is not None and len(s[0]) > 1:
            power[dev.id] = _rate(s[0], s[1], edges, False).tolist()
            basis[dev.id] = "measured power_w"
        else:
            s = tr.series(dev.id, "energy_j")
            if s is not None and len(s[0]) > 1:
                power[dev.id] = _rate(s[0], s[1], edges, True).tolist()
                basis[dev.id] = "measured energy_j (rate)"
            else:
                s = tr.series(dev.id, "busy_s")
                if s is not None and len(s[0]) > 1 and dev.db_key:
                    if db is None:
                        from ..devicedb import DeviceDB

                        try:
                            db = DeviceDB.load()
                        except Exception:  # noqa: BLE001 - a report renders without the device_db
                            db = False
                    rec = db.resolve(dev.db_key) if db else None
                    res = tr.series(dev.id, "resident_bytes")
                    cap = dev.capacity_bytes or (rec.capacity_bytes if rec else None)
                    if rec is not None and rec.kind in ("dram", "ssd", "hdd") and rec.idle_w is None \
                            and rec.active_w is not None and res is not None and cap:
                        held = np.minimum(_rate(res[0], res[1], edges, False) / cap, dev.count)
                        power[dev.id] = (rec.active_w.central * held).tolist()
                        basis[dev.id] = "modeled: average power x capacity held (CCF per-capacity method), device_db power"
                    elif rec is not None and (rec.idle_w is not None or rec.active_w is not None):
                        idle = rec.idle_w.central if rec.idle_w else 0.0
                        act = rec.active_w.central if rec.active_w else idle
                        busy = _rate(s[0], s[1], edges, True)  # unit-seconds per second
                        power[dev.id] = (dev.count * idle + max(act - idle, 0) * busy).tolist()
                        basis[dev.id] = "modeled: idle + (active - idle) x busy share, device_db power"
        for metric, dst in (("bytes_read", rd), ("bytes_written", wr)):
            s = tr.series(dev.id, metric)
            if s is not None and len(s[0]) > 1 and float(np.max(s[1]) - np.min(s[1])) > 0:
                dst[dev.id] = _rate(s[0], s[1], edges, True).tolist()
    return {"t": mids.tolist(), "power_w": power, "read_bps": rd, "write_bps": wr, "power_basis": basis,
            "source": tr.header.source, "truncated": tr.truncated}


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
    parts = []
    for key, v in slo.items():
        if not isinstance(v, dict):
            continue
        met = v.get("met")
        cls = "ok" if met else "miss" if met is False else "muted"
        parts.append(f'{_e(key)} p90 {_num(v.get("p90"), 4)} / {_num(v.get("target"), 4)} ms '
                     f'<span class="{cls}">{"met" if met else "missed" if met is False else "?"}</span>')
    return "<br>".join(parts)


def _sources_block(sources: dict[str, Any], assumptions: dict[str, Any] | None = None) -> str:
    rows = []
    for k, v in (sources or {}).items():
        if isinstance(v, dict):
            txt = "; ".join(f"{kk}: {vv}" for kk, vv in v.items() if vv)
        else:
            txt = str(v)
        rows.append(f"<tr><td><code>{_e(k)}</code></td><td>{_e(txt)}</td></tr>")
    out = "<h2>Sources and assumptions</h2>"
    if assumptions:
        out += "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(json.dumps(v) if isinstance(v, (dict, list)) else v)}</td></tr>"
                                   for k, v in assumptions.items()) + "</table>"
    if rows:
        out += "<details open><summary>device and grid sources</summary><table>" + "".join(rows) + "</table></details>"
    return out


def _profile_section(rep: dict[str, Any], trace_path: str | Path | None) -> str:
    out = [f'<h1>{_mode_badge(rep.get("mode", "?"))} {_e(rep.get("scenario", ""))}</h1>']
    if rep.get("mode_reason"):
        out.append(f'<p class="note">{_e(rep["mode_reason"])}</p>')
    if str(rep.get("mode", "")).lower() == "modeled":
        out.append('<p class="note">MODELED: figures come from the performance model and device_db, not from sensors.</p>')
    if rep.get("truncated"):
        out.append('<p class="warn">The trace was cut short: figures cover the recorded part only.</p>')
    tot = rep.get("totals", {})
    out.append("<table><tr><th></th><th>embodied</th><th>operational</th><th>total</th></tr>"
               f"<tr><th>run</th><td class=num>{_band_txt(tot.get('embodied_gco2e'))}</td><td class=num>{_band_txt(tot.get('operational_gco2e'))}</td>"
               f"<td class=num>{_band_txt(tot.get('total_gco2e'))}</td></tr>")
    for name, ph in (rep.get("phases") or {}).items():
        out.append(f"<tr><th>phase {_e(name)} ({_num(ph.get('time_s'))} s)</th><td class=num>{_band_txt(ph.get('embodied_gco2e'))}</td>"
                   f"<td class=num>{_band_txt(ph.get('operational_gco2e'))}</td><td class=num>{_band_txt(ph.get('total_gco2e'))}</td></tr>")
    out.append(f"<tr><th>per request</th><td></td><td></td><td class=num>{_band_txt(rep.get('per_request_gco2e'))}</td></tr>"
               f"<tr><th>per 1k generated tokens</th><td></td><td></td><td class=num>{_band_txt(rep.get('per_1k_tokens_gco2e'))}</td></tr></table>")
    tok = rep.get("tokens") or {}
    out.append(f'<p class="note">{rep.get("requests", 0)} requests; prompt {tok.get("prompt", 0)} and generated '
               f'{tok.get("generated", 0)} tokens; duration {_num(rep.get("duration_s"))} s.</p>')
    bars = [{"label": t["tier"], "emb": t["embodied_gco2e"]["p50"], "op": t["operational_gco2e"]["p50"],
             "lo": t["total_gco2e"]["p5"], "hi": t["total_gco2e"]["p95"]} for t in rep.get("tiers", [])
            if t.get("total_gco2e") is not None]  # a tier without any device figure is missing, not a 0 bar
    out.append("<h2>Per tier</h2>")
    out.append(stacked_bars([{"name": "", "bars": bars}], title="gCO2e per tier (stacked P50, whisker P5–P95 of the total)"))
    rows = []
    for t in rep.get("tiers", []):
        rows.append(f"<tr><td>{_e(t['tier'])}</td><td>{_e(', '.join(t.get('devices', [])))}</td>"
                    f"<td class=num>{fmt_bytes(t.get('bytes_read', 0))}</td><td class=num>{fmt_bytes(t.get('bytes_written', 0))}</td>"
                    f"<td class=num>{fmt_bytes(t.get('mean_resident_bytes', 0))}</td><td class=num>{_band_txt(t['embodied_gco2e'])}</td>"
                    f"<td class=num>{_band_txt(t['operational_gco2e'])}</td><td>{_e('; '.join(t.get('energy_basis', [])))}</td></tr>")
    out.append("<table><tr><th>tier</th><th>devices</th><th>read</th><th>written</th><th>mean occupancy</th>"
               "<th>embodied</th><th>operational</th><th>energy basis</th></tr>" + "".join(rows) + "</table>")
    lat = rep.get("latency") or {}
    lrows = []
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")):
        st = lat.get(key)
        if st:
            lrows.append(f"<tr><th>{label}</th><td class=num>{_num(st.get('p50'), 4)}</td><td class=num>{_num(st.get('p90'), 4)}</td>"
                         f"<td class=num>{_num(st.get('p99'), 4)}</td></tr>")
    if lrows:
        out.append("<h3>Latency (ms)</h3><table><tr><th></th><th>P50</th><th>P90</th><th>P99</th></tr>" + "".join(lrows) + "</table>")
        out.append(f"<p>SLO: {_slo_cell(lat.get('slo'))}</p>")
    if trace_path is not None and Path(trace_path).exists():
        try:
            ts = trace_series(trace_path)
        except Exception as exc:  # noqa: BLE001 - the rest of the report still renders
            out.append(f'<p class="warn">time series not drawn: {_e(exc)}</p>')
        else:
            out.append(f'<h2>Time series ({_mode_badge(ts["source"])})</h2>')
            out.append(line_chart(ts["t"], ts["power_w"], title="power per device (W)", ylabel="W"))
            if ts["power_basis"]:
                out.append('<p class="note">' + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in ts["power_basis"].items()) + "</p>")
            bps = lambda v: fmt_bytes(v) + "/s" if v else "0"  # noqa: E731
            out.append(line_chart(ts["t"], ts["read_bps"], title="read rate per device", ylabel="bytes/s", yfmt=bps))
            out.append(line_chart(ts["t"], ts["write_bps"], title="write rate per device", ylabel="bytes/s", yfmt=bps))
    a = rep.get("assumptions") or {}
    out.append(_sources_block(rep.get("sources") or {}, {
        "grid gCO2e/kWh": a.get("grid_gco2e_per_kwh"), "PUE": a.get("pue"), "allocation": a.get("allocation"),
        "draws": a.get("draws"), "sampling": a.get("sampling")} if a else None))
    prov = rep.get("provenance") or {}
    if prov:
        items = [f"measured: {x}" for x in prov.get("measured_figures", [])] + [f"modeled: {x}" for x in prov.get("modeled_figures", [])]
        out.append("<h3>Provenance</h3><ul>" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>")
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
    head = "".join(f"<th>{_e(o['name'])}<br>{_mode_badge(o['mode'])}</th>" for o in opts)
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
    rows.append("<tr><th>P(lowest)</th>" + "".join(f"<td class=num>{cmp['p_lowest'][o['name']]:.2f}</td>" for o in opts) + "</tr>")
    rows.append("<tr><th>grid</th>" + "".join(f"<td>{_e(o['grid']['label'])}<br><span class=muted>{_band_txt(o['grid']['gco2e_per_kwh']).replace(' g', '')} g/kWh</span></td>" for o in opts) + "</tr>")
    out.append(f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    prow = "".join(f"<tr><td>{_e(p['a'])}</td><td>{_e(p['b'])}</td><td class=num>{p['p_a_less']:.3f}</td><td class=num>{p['p_b_less']:.3f}</td>"
                   f"<td class=num>{_band_txt(p['diff_per_1k_gco2e'])}</td><td class=num>{p['rel_diff']['p50']:+.1%} [{p['rel_diff']['p5']:+.1%}, {p['rel_diff']['p95']:+.1%}]</td></tr>"
                   for p in cmp["pairs"])
    out.append("<h2>Paired probabilities</h2><table><tr><th>A</th><th>B</th><th>P(A&lt;B)</th><th>P(B&lt;A)</th>"
               "<th>A − B per 1k tokens</th><th>(A − B)/B</th></tr>" + prow + "</table>")
    r = cmp["ranking"]
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
            f"<td class=num>{_num(q['p50'])} [{_num(q['p5'])}–{_num(q['p95'])}]</td><td class=num>{_num(r['robust_gco2e_per_1k'])}</td>"
            f"<td class=num>{_num(r['embodied_per_1k_gco2e']['p50'])}</td><td class=num>{_num(r['operational_per_1k_gco2e']['p50'])}</td>"
            f"<td class=num>{_num(r['ttft_p90_ms'], 4)}</td><td class=num>{_num(r['tpot_p90_ms'], 4)}</td>"
            f"<td class=num>{r['p_lowest']:.2f}</td><td>{'<span class=ok>met</span>' if r['slo_met'] else '<span class=miss>missed</span>'}</td></tr>")


PLAN_HEAD = ("<tr><th>configuration</th><th>lifetime</th><th>grid</th><th>gCO2e/1k tok P50 [P5–P95]</th><th>robust (P95)</th>"
             "<th>embodied P50</th><th>operational P50</th><th>TTFT p90 ms</th><th>TPOT p90 ms</th><th>P(lowest)</th><th>SLO</th></tr>")


def _plan_section(pl: dict[str, Any]) -> str:
    c = pl["counts"]
    out = [f'<h1>{_mode_badge(pl.get("mode", "MODELED"))} plan: {_e(pl["sweep"]["name"])} (base {_e(pl["base_scenario"])})</h1>',
           f'<p class="note">{_e(pl.get("mode_reason", ""))}</p>',
           f'<p>{c["configurations"]} configurations ({c["hardware"]} hardware × {c["lifetimes"]} lifetime assumptions × '
           f'{c["grids"]} grids), {c["draws"]} paired draws each; {c["feasible_hardware"]} hardware configurations feasible, '
           f'{c["slo_met_hardware"]} meet the SLO ({_e(json.dumps(pl["slo"]))}).</p>']
    rec = pl["recommendation"]
    if rec["robust"]:
        rb, md = rec["robust"], rec["median"]
        out.append("<h2>Recommendation</h2>")
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
    grid_rows = "".join(f"<tr><td>{_e(g['label'])}</td><td class=num>{_num(g['gco2e_per_kwh_p50'])}</td><td>{_e(g['source'])}</td>"
                        f"<td>{_e(json.dumps(g['forecast_error'])) if g.get('forecast_error') else ''}</td></tr>" for g in pl["grids"])
    out.append("<h2>Grids</h2><table><tr><th>grid</th><th>P50 g/kWh</th><th>source</th><th>forecast error bands</th></tr>" + grid_rows + "</table>")
    out.append(_sources_block({}, pl.get("assumptions")))
    if pl.get("warnings"):
        out.append("<h3>Warnings</h3><ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in pl["warnings"]) + "</ul>")
    return "".join(out)


def render_html(*, profile: dict[str, Any] | None = None, trace_path: str | Path | None = None,
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


def write_html(path: str | Path, *, profile: dict[str, Any] | None = None, trace_path: str | Path | None = None,
               compare: dict[str, Any] | None = None, plan: dict[str, Any] | None = None) -> Path:
    """Write one self-contained HTML report (any combination of profile, compare and plan)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(profile=profile, trace_path=trace_path, compare=compare, plan=plan), encoding="utf-8")
    return p
