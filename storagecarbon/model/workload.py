"""The requests a scenario draws: one sampler for the simulation and the steady state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..scenario import LengthDist, Scenario, Workload


def _lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    x: np.ndarray
    if d.dist == "fixed":
        x = np.full(n, d.mean)
    elif d.dist == "uniform":
        lo = d.min if d.min is not None else d.mean * 0.5
        hi = d.max if d.max is not None else 2 * d.mean - lo
        x = rng.uniform(lo, hi, n)
    else:
        mu = math.log(d.mean) - d.sigma ** 2 / 2
        x = rng.lognormal(mu, d.sigma, n)
    if d.min is not None:
        x = np.maximum(x, d.min)
    if d.max is not None:
        x = np.minimum(x, d.max)
    return np.maximum(1, np.round(x)).astype(np.int64)


def sample_workload(wl: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scenario's requests, seeded: prompt lengths, output lengths, shared-prefix tokens and
    arrival times of one pass (Poisson at ``arrival_rate_rps``, else all at t = 0)."""
    rng = np.random.default_rng(wl.seed)
    n_req = wl.num_requests()
    p_len = _lengths(wl.prompt_tokens, n_req, rng)
    o_len = _lengths(wl.output_tokens, n_req, rng)
    has_prefix = rng.random(n_req) < wl.shared_prefix.fraction
    pre_tok = np.where(has_prefix, np.minimum(wl.shared_prefix.tokens, p_len - 1), 0)
    if wl.arrival_rate_rps:
        arrivals = np.cumsum(rng.exponential(1.0 / wl.arrival_rate_rps, n_req))
        arrivals -= arrivals[0]
    else:
        arrivals = np.zeros(n_req)
    return p_len, o_len, pre_tok, arrivals


@dataclass(frozen=True)
class WorkloadStats:
    """A scenario's workload as both models draw it (same generator and seed).

    Per request of one pass: ``p``, ``o``, ``pre``; per request of the whole run, pass after pass:
    ``arrivals``, ``req`` (its index into ``p``/``o``/``pre``), ``o_all``. Online passes follow one
    another (pass k is offset by k x (last arrival + 1 s)); offline ones all arrive at t = 0."""

    p: np.ndarray                 # prompt tokens per request (one pass)
    o: np.ndarray                 # output tokens per request
    pre: np.ndarray               # shared-prefix tokens per request
    arrivals: np.ndarray          # arrival times of every request of every pass
    o_all: np.ndarray             # output tokens of every request of every pass (aligned with arrivals)
    passes: int
    rate: float | None
    req: np.ndarray               # index into p / o / pre of every request of every pass

    @property
    def n_total(self) -> int:
        return len(self.o_all)


def workload_stats(scn: Scenario) -> WorkloadStats:
    wl = scn.workload
    n = wl.num_requests()
    p, o, pre, arr = sample_workload(wl)
    if wl.arrival_rate_rps:
        span = float(arr[-1]) + 1.0
        arrivals = np.concatenate([arr + k * span for k in range(wl.passes)])
    else:
        arrivals = np.zeros(n * wl.passes)
    return WorkloadStats(p, o, pre, arrivals, np.tile(o, wl.passes), wl.passes, wl.arrival_rate_rps,
                         np.tile(np.arange(n), wl.passes))
