"""The one keyed sampler: every uncertain input of every carbon figure, drawn the same way everywhere.

An input with a range is a :class:`Triple` (low, best, high). Its draws are the log-triangular
distribution on (log low, log best, log high) -- plain triangular when low is 0, a point value
when the range is empty -- evaluated as ``scipy.stats.triang.ppf`` of uniforms.

The uniforms are *keyed*: the stream for a name is ``np.random.default_rng([seed, crc32(name)])``.
Device figures are keyed by device_db key (``device:<key>``), the grid by ``grid`` and the PUE by
``pue``. So draw ``d`` holds the same value of an H100's embodied carbon, of the grid quantile and
of the PUE in ``profile``, ``report``, ``compare`` and ``plan``, whatever else is sampled and in
which order: same scenario + same seed and draws -> the same numbers in every command, and
comparisons are paired draw by draw.

A figure with a best value and only one bound is made symmetric about the best value (in log
space when the known bound is positive): ``high = best^2 / low`` or ``low = best^2 / high``. The
best value is then the median of its draws, so the P5-P95 band always contains it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class Triple:
    """A number with its range (low <= best <= high) and where it comes from."""

    low: float
    best: float
    high: float
    source: str = ""

    @classmethod
    def of(cls, fig: Any, *, scale: float = 1.0) -> Triple | None:
        """From a device_db ``Figure`` (None stays None); one missing bound mirrors the other."""
        if fig is None:
            return None
        lo, hi = fig.low, fig.high
        c = fig.best if fig.best is not None else fig.central
        if fig.best is not None and (lo is None) != (hi is None):
            if lo is None:
                lo = c * c / hi if c > 0 and hi > 0 else max(2 * c - hi, 0.0)
            else:
                hi = c * c / lo if lo > 0 else 2 * c - lo
        lo = c if lo is None else lo
        hi = c if hi is None else hi
        return cls(lo * scale, c * scale, hi * scale, fig.source)

    @classmethod
    def fixed(cls, v: float, source: str) -> Triple:
        return cls(v, v, v, source)

    def scaled(self, k: float) -> Triple:
        return Triple(self.low * k, self.best * k, self.high * k, self.source)


def logtri_ppf(t: Triple, u: np.ndarray) -> np.ndarray:
    """Quantiles of the log-triangular distribution of ``t`` at uniforms ``u`` (scipy.stats.triang)."""
    lo, c, hi = t.low, t.best, t.high
    u = np.asarray(u, dtype=np.float64)
    if not hi > lo:
        return np.full(u.shape, c, dtype=np.float64)
    log = lo > 0
    a, m, b = (math.log(lo), math.log(c), math.log(hi)) if log else (lo, c, hi)
    if not b > a:  # a range narrower than float resolution (e.g. after mirroring): a point value
        return np.full(u.shape, c, dtype=np.float64)
    m = min(max(m, a), b)
    from scipy import stats  # here, not at import: `record` on a bare GPU box needs no scipy

    x = stats.triang.ppf(u, (m - a) / (b - a), loc=a, scale=b - a)
    return np.exp(x) if log else x


def stream(seed: int, name: str) -> np.random.Generator:
    """The uniform stream of one named input (independent of every other name)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def band(x: np.ndarray, best: float | None = None) -> dict[str, float]:
    """P5 / P50 / P95 of per-draw values; with ``best``, the band is widened to contain it (a best
    value at the very edge of its range, e.g. low == best, lies outside the central 90 % of draws)."""
    p5, p50, p95 = (float(v) for v in np.percentile(x, [5, 50, 95]))
    if best is not None and np.isfinite(best):
        p5, p95 = min(p5, float(best)), max(p95, float(best))
    return {"p5": p5, "p50": p50, "p95": p95}


@dataclass(frozen=True)
class GridSpec:
    """Where the electricity comes from: a device_db region, a fixed figure or an hourly series."""

    label: str
    triple: Triple | None = None
    series: Any = None  # carbon.grid.IntensitySeries

    @property
    def source(self) -> str:
        if self.series is not None:
            s = self.series
            return f"hourly series {s.name} ({s.source}); forecast error: {s.error.source}"
        assert self.triple is not None
        return self.triple.source

    @property
    def best(self) -> float:
        if self.series is not None:
            return float(np.median(self.series.values))
        assert self.triple is not None
        return self.triple.best


@dataclass
class DeviceDraws:
    """Per-draw figures of one device model (per unit), plus their central values.

    ``idle_w``/``dyn_w`` are None where the record has no such figure (missing, never 0);
    ``avg_w`` is set for capacity devices with one average power figure (CCF's per-capacity
    method) and then idle/dyn are None.
    """

    key: str
    kind: str
    idle_w: np.ndarray | None
    dyn_w: np.ndarray | None        # max(active, idle) - idle
    avg_w: np.ndarray | None
    te_g: np.ndarray | None         # embodied per unit, g
    life_s: np.ndarray              # default lifetime, s
    tbw_b: np.ndarray | None        # rated write endurance, bytes (flash)
    best: dict[str, float | None]   # the same figures at central values
    sources: dict[str, str]
    triples: dict[str, Triple]

    @property
    def no_power(self) -> bool:
        return self.idle_w is None and self.dyn_w is None and self.avg_w is None

    @property
    def no_idle(self) -> bool:
        return self.idle_w is None and self.avg_w is None and self.dyn_w is not None


class KeyedSampler:
    """Shared Monte Carlo draws: device figures by device_db key, grid and PUE by draw index."""

    def __init__(self, draws: int, seed: int = 0) -> None:
        if draws < 1:
            raise ValueError("draws must be >= 1")
        self.draws, self.seed = int(draws), int(seed)
        self._cache: dict[tuple[str, int], tuple[Any, DeviceDraws]] = {}
        g = stream(seed, "grid")
        self.u_grid = g.random(self.draws)      # one grid state per draw, shared by every region
        self.u_hour = g.random(self.draws)
        self.u_err = g.random(self.draws)
        self.u_sign = g.random(self.draws)
        self.u_pue = stream(seed, "pue").random(self.draws)
        self._grid: dict[str, np.ndarray] = {}

    def device(self, rec: Any) -> DeviceDraws:
        """Draws of a device_db record's figures (keyed by its key: the same in every command)."""
        ck = (rec.key, id(rec))
        hit = self._cache.get(ck)
        if hit is not None and hit[0] is rec:
            return hit[1]
        n = self.draws
        u = stream(self.seed, f"device:{rec.key}").random((5, n))
        idle = Triple.of(rec.idle_w)
        act = Triple.of(rec.active_w)
        tri: dict[str, Triple] = {}
        idle_d = dyn_d = avg_d = None
        best: dict[str, float | None] = {"idle_w": None, "dyn_w": None, "avg_w": None}
        if rec.kind in ("dram", "ssd", "hdd") and idle is None and act is not None:
            avg_d = logtri_ppf(act, u[1])
            best["avg_w"] = act.best
            tri["avg_w"] = act
        else:
            if idle is not None:
                idle_d = logtri_ppf(idle, u[0])
                best["idle_w"] = idle.best
                tri["idle_w"] = idle
            if act is not None:
                a = logtri_ppf(act, u[1])
                base = idle_d if idle_d is not None else 0.0
                dyn_d = np.maximum(a - base, 0.0)
                best["dyn_w"] = max(act.best - (idle.best if idle else 0.0), 0.0)
                tri["active_w"] = act
        te = rec.embodied_total_triple()
        te_d = None
        if te is not None:
            t = Triple(*te)
            te_d = logtri_ppf(t, u[2]) * 1000.0
            best["te_g"] = t.best * 1000.0
            tri["embodied_kg"] = t
        else:
            best["te_g"] = None
        life = Triple.of(rec.lifetime_years)
        assert life is not None  # every record has a lifetime (schema)
        life_d = logtri_ppf(life, u[3]) * SECONDS_PER_YEAR
        best["life_s"] = life.best * SECONDS_PER_YEAR
        tri["lifetime_years"] = life
        tbw_d = None
        best["tbw_b"] = None
        if rec.kind == "ssd" and rec.endurance_tbw is not None:
            tb = Triple.of(rec.endurance_tbw)
            assert tb is not None
            tbw_d = logtri_ppf(tb, u[4]) * 1e12
            best["tbw_b"] = tb.best * 1e12
            tri["endurance_tbw"] = tb
        sources = {k: v.source for k, v in tri.items()}
        if rec.embodied_kgco2e is not None:
            sources["embodied_kg"] = rec.embodied_kgco2e.source
        dd = DeviceDraws(rec.key, rec.kind, idle_d, dyn_d, avg_d, te_d, life_d, tbw_d, best, sources, tri)
        self._cache[ck] = (rec, dd)
        return dd

    def grid(self, spec: GridSpec) -> np.ndarray:
        if spec.label in self._grid:
            return self._grid[spec.label]
        if spec.series is not None:
            v = spec.series.sample(self.u_hour, self.u_err, self.u_sign)
        else:
            assert spec.triple is not None
            v = logtri_ppf(spec.triple, self.u_grid)
        self._grid[spec.label] = v
        return v

    def pue(self, t: Triple) -> np.ndarray:
        return logtri_ppf(t, self.u_pue)
