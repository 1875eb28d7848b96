"""Which configurations to show: the Pareto front and the median / robust picks over draws."""

from __future__ import annotations

import numpy as np


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (x, y), both minimised, sorted by x."""
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(ok) == 0:
        return ok
    order = ok[np.lexsort((y[ok], x[ok]))]
    front = []
    best = np.inf
    for i in order:
        if y[i] < best - 1e-9 * abs(best if np.isfinite(best) else 0.0):
            front.append(i)
            best = y[i]
    return np.asarray(front, dtype=np.int64)


def robust_picks(samples: np.ndarray, eligible: np.ndarray | None = None, q: float = 95.0) -> dict[str, int]:
    """Index of the median pick and of the robust (P``q``) pick among rows of ``samples`` [option, draw]."""
    ok = np.ones(samples.shape[0], bool) if eligible is None else eligible
    idx = np.flatnonzero(ok)
    p50 = np.median(samples[idx], axis=1)
    pq = np.percentile(samples[idx], q, axis=1)
    return {"median": int(idx[np.argmin(p50)]), "robust": int(idx[np.argmin(pq)])}
