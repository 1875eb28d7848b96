"""``storagecarbon calibrate TRACE...``: fit the performance model's constants to measured runs.

For every measured trace of the transformers engine (``engine: transformers``; the footer's
``transformers`` block says what ran) the **modeled equivalent** is built from the trace's own
scenario echo: one batch of ``batch_size`` requests, all arriving at t = 0, ``max_num_seqs =
batch_size``, fixed prompt and output lengths, the weight placement that actually ran (the
offloaded bytes over the weight bytes, to DRAM for ``cpu`` and to the SSD tier for ``disk``), and
the number of GPUs NVML saw. :func:`storagecarbon.model.simulate.run_model` then predicts, for any
candidate :class:`~storagecarbon.model.constants.ModelConstants`:

* TTFT and TPOT (the model's first batch vs the mean over the measured batches);
* GPU energy per generated token, as attribution computes it for a modeled trace:
  ``idle_w x count x T + (active_w - idle_w) x busy_s`` (device_db central values), against the
  measured NVML energy of the prefill and decode phases over the generated tokens.

The fit is least squares on log(modeled / measured) (relative errors, symmetric):

1. timing constants (``hbm_efficiency``, ``compute_efficiency``, ``step_overhead_s``, and where
   the fitted traces exercise them ``pcie_gb_per_s``, ``overlap``, ``disk_efficiency``,
   ``tp_efficiency``, plus any constant the model gains later that :data:`FIT_BOUNDS` knows) by a
   bounded Nelder-Mead (scipy.optimize) on TTFT and TPOT, started from
   closed-form guesses and restarted once;
2. power fractions (``power_frac_prefill``, ``power_frac_decode``, ``power_frac_io_wait``) with
   the timing fixed: modeled GPU energy is linear in them, so three model runs per trace give
   the coefficients and a bounded linear least squares gives the fractions.

Constants no fitted trace can inform keep their defaults and are listed as such. Traces matched
by ``--holdout`` are evaluated with the fitted constants but not used in the fit. The output
file has ``constants:`` (read by :func:`storagecarbon.model.constants.load_constants`), the residuals
of every trace, the traces used (with sha256) and the machine they came from.
"""

from __future__ import annotations

import copy
import datetime as _dt
import fnmatch
import hashlib
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import StoragecarbonError

# bounds of every constant the fit may move: (low, high)
FIT_BOUNDS: dict[str, tuple[float, float]] = {
    "hbm_efficiency": (0.02, 1.0),
    "compute_efficiency": (0.02, 1.0),
    "pcie_gb_per_s": (0.2, 128.0),
    "disk_efficiency": (0.02, 10.0),
    "overlap": (0.0, 1.0),
    "tp_efficiency": (0.2, 1.0),
    "step_overhead_s": (0.0, 1.0),
    # constants a later performance model may add (fitted when ModelConstants has them)
    "layer_overhead_s": (0.0, 0.05),
    "kv_offload_overlap": (0.0, 1.0),
    "kv_offload_gb_per_s": (1.0, 1000.0),
    "request_overhead_s": (0.0, 0.2),
    "weight_reread_tokens": (16.0, 8192.0),
    "weight_stream_gb_per_s": (1.0, 200.0),
    "tp_layer_s": (0.0, 0.001),
}
POWER_FRACS = ("power_frac_prefill", "power_frac_decode", "power_frac_io_wait")
POWER_BOUNDS = (0.0, 4.0)
METRICS = ("ttft_ms", "tpot_ms", "gpu_j_per_token")


# ------------------------------------------------------------------------------ observations
@dataclass
class Observation:
    """One measured run and the scenario of its modeled equivalent."""

    name: str
    path: str
    scenario: Any                          # storagecarbon.scenario.Scenario
    offload: str
    n_gpu: int
    measured: dict[str, float | None]      # METRICS -> value (None: not measured)
    sha256: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    held_out: bool = False

    def timing(self, key: str) -> float:
        """A measured timing metric (``ttft_ms``, ``tpot_ms``): every loader records both; only
        ``gpu_j_per_token`` may be missing (None)."""
        v = self.measured[key]
        assert v is not None, f"{self.name}: no measured {key}"
        return v


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def equivalent_scenario(echo: dict[str, Any], tf: dict[str, Any], n_gpu: int) -> Any:
    """The modeled equivalent of a transformers batch run (see module docstring)."""
    from .scenario import Scenario

    d = copy.deepcopy(echo)
    b, p, o = int(tf["batch_size"]), int(tf["prompt_len"]), int(tf["new_tokens"])
    d["workload"] = {"requests": b, "prompt_tokens": {"mean": p}, "output_tokens": {"mean": o}, "seed": 0}
    eng = dict(d.get("engine") or {})
    eng.update({"max_num_seqs": b, "max_num_batched_tokens": max(8192, b * p)})
    d["engine"] = eng
    frac = float(tf.get("offloaded_bytes") or 0) / float(tf["weight_bytes"]) if tf.get("weight_bytes") else 0.0
    pl = dict(d.get("placement") or {})
    target = tf.get("offload_target")
    if frac > 0 and target in ("dram", "ssd", "hdd"):
        pl["weights"] = {"hbm": 1.0 - frac, target: frac}
    else:
        pl["weights"] = {"hbm": 1.0}
    d["placement"] = pl
    d["calibration"] = None
    hw = dict(d.get("hardware") or {})
    if hw.get("gpu") and n_gpu > 0:
        hw["gpu"] = {**hw["gpu"], "count": n_gpu}
    d["hardware"] = hw
    return Scenario.model_validate(d)


def observe(path: str | Path, tmp: Path) -> Observation:
    """Measured TTFT, TPOT and GPU J/token of a transformers trace, and its modeled equivalent."""
    from .trace import read_trace
    from .carbon.usage import aggregate

    src = Path(path)
    if not src.exists():
        raise StoragecarbonError(f"{src}: trace file does not exist")
    tr = read_trace(src)   # plain or gzip'd (trace.py reads both)
    s = tr.summary or {}
    tf = s.get("transformers")
    name = (tr.header.scenario or {}).get("name") or src.name.split(".")[0]
    if tr.header.source != "measured":
        raise StoragecarbonError(f"{src}: a {tr.header.source} trace; calibrate needs measured runs")
    if s.get("vllm") and tr.header.scenario:
        return observe_vllm(src, tr, name)
    if not tf or not tr.header.scenario:
        raise StoragecarbonError(f"{src}: not a transformers-engine run (no 'transformers' block in its summary); "
                                 "calibrate fits batch runs of engine: transformers")
    lat = s.get("latency") or {}
    if not (lat.get("ttft_ms") and lat.get("tpot_ms")):
        raise StoragecarbonError(f"{src}: summary has no TTFT/TPOT (output of one token?)")
    u = aggregate(src)
    gpus = [i for i, d in enumerate(u.header.devices) if d.tier == "hbm"]
    work = [u.phases.index(ph) for ph in ("prefill", "decode") if ph in u.phases]
    if not gpus or not any(u.has.get((u.header.devices[i].id, "energy_j")) for i in gpus):
        raise StoragecarbonError(f"{src}: no measured GPU energy channel")
    energy = float(sum(u.by_phase["energy_j"][i, j] for i in gpus for j in work))
    gen = float(s.get("generated_tokens") or 0)
    if gen <= 0 or energy <= 0:
        raise StoragecarbonError(f"{src}: no generated tokens or no GPU energy in prefill/decode")
    n_gpu = sum(u.header.devices[i].count for i in gpus)
    scn = equivalent_scenario(tr.header.scenario, tf, n_gpu)
    sensors = s.get("sensors") or {}
    machine = {
        "gpus": sorted({u.header.devices[i].name for i in gpus}),
        "gpu_db_keys": sorted({str(u.header.devices[i].db_key) for i in gpus}),
        "gpu_count": n_gpu,
        "driver": (sensors.get("nvml") or {}).get("driver"),
        "host": {k: tr.header.host.get(k) for k in ("machine", "cpu_count", "memory_bytes") if k in tr.header.host},
        "versions": tf.get("versions") or {},
        "date_utc": _dt.datetime.fromtimestamp(tr.header.t0_unix, _dt.timezone.utc).isoformat(timespec="seconds"),
    }
    measured: dict[str, float | None] = {"ttft_ms": float(lat["ttft_ms"]["mean"]),
                                         "tpot_ms": float(lat["tpot_ms"]["mean"]), "gpu_j_per_token": energy / gen}
    return Observation(name=name, path=str(path), scenario=scn, offload=str(tf.get("offload")), n_gpu=n_gpu,
                       measured=measured, sha256=_sha256(src), machine=machine)


def vllm_mode(scenario: dict[str, Any]) -> str:
    """Offload mode of a vLLM run from its scenario echo: hbm, native, lmcache or weights."""
    pl = scenario.get("placement") or {}
    kv = pl.get("kv") or {}
    if (pl.get("weights") or {}).get("dram"):
        return "weights"
    if kv.get("local_cpu") or kv.get("local_disk"):
        return "native" if kv.get("backend") == "native" else "lmcache"
    return "hbm"


def pass_energy_j(tr: Any, t0: float, t1: float) -> float | None:
    """Measured GPU energy (J, all GPUs) between two trace times, from the NVML energy counters
    (spread evenly between samples, :func:`storagecarbon.carbon.usage.spread`; ``None`` when a GPU has no
    energy channel)."""
    from .carbon.usage import increments, spread

    tot = 0.0
    gpus = [d for d in tr.header.devices if d.tier == "hbm"]
    if not gpus:
        return None
    for d in gpus:
        sr = tr.series(d.id, "energy_j")
        if sr is None or len(sr[0]) < 2:
            return None
        t, v = sr
        _, d = increments(t, v, True)
        seg, part = spread(t, d, np.asarray([t0, t1], dtype=np.float64))   # the one rule of usage.aggregate
        tot += float(part[seg == 0].sum())
    return tot


def observe_vllm(src: Path, tr: Any, name: str) -> Observation:
    """A vLLM workload trace (``benchmarks/gpu/vllm_matrix.py``) as an observation: its first pass
    (no KV served from an offload tier yet; every mode computes every prompt) with TTFT, TPOT and
    GPU J per generated token measured over that pass's window. The modeled equivalent is the
    trace's scenario echo with one pass. Later passes (hits from the offload tiers) are compared
    separately (:func:`hit_pass_rows`)."""
    from .scenario import Scenario

    s = tr.summary
    v = s["vllm"]
    p1 = v["passes"][0]
    if not (p1.get("ttft_ms") and p1.get("tpot_ms")):
        raise StoragecarbonError(f"{src}: first pass has no TTFT/TPOT")
    wins = [m for m in tr.markers if m[2] == p1["label"] and m[1] in ("window_start", "window_end")]
    if len(wins) < 2:
        raise StoragecarbonError(f"{src}: no window markers for {p1['label']}")
    t0, t1 = wins[0][0], wins[-1][0]
    e = pass_energy_j(tr, t0, t1)
    if not p1.get("generated_tokens"):
        raise StoragecarbonError(f"{src}: no generated tokens in {p1['label']}")
    if e is not None and e <= 0:
        e = None
    echo = copy.deepcopy(tr.header.scenario)
    echo["workload"] = dict(echo["workload"], passes=1)
    sp = dict(echo["workload"].get("shared_prefix") or {})
    n_req = int(echo["workload"].get("requests") or 1)
    block = int((echo.get("engine") or {}).get("block_size") or 16)
    if sp.get("tokens") and p1.get("num_cached_tokens", 0) >= 0.99 * n_req * (int(sp["tokens"]) // block) * block:
        # every request of the first pass found the prefix in HBM (an earlier workload of the same engine
        # left it there): the modeled equivalent starts with it cached
        sp["warm"] = True
        echo["workload"]["shared_prefix"] = sp
    echo["calibration"] = None
    cache = (s.get("engine") or {}).get("cache") or {}
    if cache.get("num_gpu_blocks") and ((echo.get("placement") or {}).get("kv") or {}).get("hbm_gb"):
        # the HBM KV cache that ran (vLLM's block count: runs before 2026-11-30 22:00 UTC took hbm_gb per GPU
        # in GiB), in the model's terms: GB over all GPUs
        kvb = float(v.get("kv_bytes_per_token") or 0)
        if kvb > 0:
            gb = int(cache["num_gpu_blocks"]) * int(cache.get("block_size") or block) * kvb / 1e9
            echo["placement"] = dict(echo["placement"], kv=dict(echo["placement"]["kv"], hbm_gb=round(gb, 3)))
    mode = vllm_mode(echo)
    scn = Scenario.model_validate(echo)
    n_gpu = int(v.get("n_gpu") or 1)
    gpus = [d for d in tr.header.devices if d.tier == "hbm"]
    machine = {"gpus": sorted({d.name for d in gpus}), "gpu_db_keys": sorted({str(d.db_key) for d in gpus}),
               "gpu_count": n_gpu, "versions": (s.get("engine") or {}).get("versions") or {},
               "date_utc": _dt.datetime.fromtimestamp(tr.header.t0_unix, _dt.timezone.utc).isoformat(timespec="seconds")}
    measured = {"ttft_ms": float(p1["ttft_ms"]["mean"]), "tpot_ms": float(p1["tpot_ms"]["mean"]),
                # a trace without GPU energy informs the timing fit only (missing, not 0)
                "gpu_j_per_token": e / float(p1["generated_tokens"]) if e is not None else None}
    nm = src.name.split(".")[0]
    return Observation(name=nm, path=str(src), scenario=scn, offload=f"vllm-{mode}", n_gpu=n_gpu,
                       measured=measured, sha256=_sha256(src), machine=machine)


# ---------------------------------------------------------------------------------- modeling
@dataclass
class ModelRun:
    ttft_ms: float
    tpot_ms: float
    duration_s: float
    busy_s: float           # GPU busy-seconds summed over the GPUs
    generated_tokens: int


def model_once(scn: Any, db: Any, k: Any, tmp: Path) -> ModelRun:
    from .model.simulate import run_model
    from .trace import read_trace

    out = tmp / "model.arrows"
    res = run_model(scn, db, out, constants=k)
    tr = read_trace(out)
    busy = 0.0
    for d in tr.header.devices:
        if d.tier == "hbm":
            sr = tr.series(d.id, "busy_s")
            if sr is not None and len(sr[1]):
                busy += float(sr[1][-1])
    lat = res.summary["latency"]
    return ModelRun(ttft_ms=float(lat["ttft_ms"]["mean"]), tpot_ms=float((lat["tpot_ms"] or {"mean": 0.0})["mean"]),
                    duration_s=float(res.duration_s), busy_s=busy, generated_tokens=int(res.generated_tokens))


def _gpu_power(scn: Any, db: Any) -> tuple[float, float, int]:
    hw = scn.hardware.tiers()["gpu"]
    rec = db.get(hw.device)
    if rec.idle_w is None or rec.active_w is None:
        # the energy fit needs both figures; a missing one is never taken as 0 W
        missing = " and ".join(n for n, f in (("idle_w", rec.idle_w), ("active_w", rec.active_w)) if f is None)
        raise StoragecarbonError(f"device_db {rec.key}: no {missing}; GPU energy cannot be modeled for the fit "
                                 "(add a sourced figure, or device_overrides)")
    idle, act = rec.idle_w.central, rec.active_w.central
    return idle, max(act, idle), hw.count


def gpu_energy_j(scn: Any, db: Any, run: ModelRun) -> float:
    """GPU energy of a modeled run, with the carbon kernel's energy model at central values."""
    from .carbon import kernel

    idle, act, n = _gpu_power(scn, db)
    held = kernel.held_units_s("gpu", "dedicated", n, 1.0, run.duration_s, None)
    return float(kernel.idle_energy_j(idle, held) + kernel.dynamic_energy_j(act - idle, run.busy_s))


def predict(obs: Observation, db: Any, k: Any, tmp: Path) -> dict[str, float]:
    r = model_once(obs.scenario, db, k, tmp)
    return {"ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms,
            "gpu_j_per_token": gpu_energy_j(obs.scenario, db, r) / max(r.generated_tokens, 1)}


# ---------------------------------------------------------------------------- optimisers
def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, *, step: float = 0.3, max_evals: int = 2000,
                xtol: float = 1e-5, ftol: float = 1e-10) -> tuple[np.ndarray, float, int]:
    """Minimise ``f`` from ``x0`` (unbounded coordinates; the caller maps bounds) with SciPy's
    adaptive Nelder-Mead, the initial simplex ``step`` wide. Returns ``(x, f(x), evaluations)``."""
    from scipy.optimize import minimize

    x0 = np.asarray(x0, dtype=float)
    n = len(x0)
    if n == 0:
        return x0, f(x0), 1
    simplex = np.vstack([x0] + [x0 + step * np.eye(n)[i] for i in range(n)])
    r = minimize(f, x0, method="Nelder-Mead",
                 options={"initial_simplex": simplex, "maxfev": max_evals, "xatol": xtol, "fatol": ftol,
                          "adaptive": True})
    return np.asarray(r.x), float(r.fun), int(r.nfev)


def _to_unit(v: float, lo: float, hi: float) -> float:
    """Bounded value -> unbounded coordinate (logit of the position in [lo, hi])."""
    p = min(max((v - lo) / (hi - lo), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _from_unit(u: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) / (1.0 + math.exp(-max(min(u, 50.0), -50.0)))


# ------------------------------------------------------------------------------------- fit
@dataclass
class CalibrationResult:
    constants: Any                              # ModelConstants
    fitted: list[str]
    defaulted: list[str]
    observations: list[Observation]
    predictions: dict[str, dict[str, float]]    # name -> METRICS
    objective: float
    evaluations: int

    def residuals(self, held_out: bool | None = None) -> list[dict[str, Any]]:
        out = []
        for o in self.observations:
            if held_out is not None and o.held_out != held_out:
                continue
            m = self.predictions[o.name]
            row: dict[str, Any] = {"name": o.name, "trace": o.path, "offload": o.offload, "held_out": o.held_out}
            for key in METRICS:
                meas, mod = o.measured[key], m[key]
                row[key] = {"measured": None if meas is None else round(meas, 4), "modeled": round(mod, 4),
                            "error_pct": round(100.0 * (mod - meas) / meas, 2) if meas else None}
            out.append(row)
        return out

    def error_summary(self, held_out: bool | None) -> dict[str, dict[str, float]]:
        rows = self.residuals(held_out)
        out = {}
        for key in METRICS:
            e = [abs(r[key]["error_pct"]) for r in rows if r[key]["error_pct"] is not None]
            if e:
                worst = max(rows, key=lambda r: abs(r[key]["error_pct"] or 0))
                out[key] = {"median_abs_pct": round(float(np.median(e)), 2), "worst_abs_pct": round(float(max(e)), 2),
                            "worst": worst["name"], "n": len(e)}
        return out


def _active(obs: Sequence[Observation], names: set[str]) -> list[str]:
    modes = {o.offload for o in obs}
    act = ["hbm_efficiency", "compute_efficiency", "step_overhead_s"]
    if modes & {"cpu", "vllm-lmcache"}:
        act.append("pcie_gb_per_s")
    if "vllm-weights" in modes:
        act += ["weight_stream_gb_per_s", "weight_reread_tokens"]
    if modes & {"disk"}:
        act.append("disk_efficiency")
    if modes & {"cpu", "disk"}:
        act.append("overlap")
    if any(o.n_gpu > 1 for o in obs):
        act.append("tp_efficiency")
    act += ["layer_overhead_s"] if "layer_overhead_s" in names and not any(
        o.offload.startswith("vllm") for o in obs) else []
    act += ["request_overhead_s"] if "request_overhead_s" in names and any(
        o.offload.startswith("vllm") for o in obs) else []
    for kv in ("kv_offload_overlap", "kv_offload_gb_per_s"):
        if kv in names and "kv-cpu" in modes:
            act.append(kv)
    return [a for a in act if a in names]


def _initial(obs: Sequence[Observation], db: Any, base: Any, active: list[str]) -> Any:
    """Closed-form starting points: achieved PCIe/disk bandwidth from offloaded bytes per step."""
    k = base
    if "tp_layer_s" in active and not k.tp_layer_s:
        k = replace(k, tp_layer_s=2e-5)   # two all-reduces of a layer's activations over NVLink: tens of us
    if "weight_reread_tokens" in active and not k.weight_reread_tokens:
        k = replace(k, weight_reread_tokens=256.0)   # a GEMM tile of a few hundred tokens
    for mode, key in (("cpu", "pcie_gb_per_s"), ("vllm-weights", "weight_stream_gb_per_s"),
                      ("disk", "disk_efficiency")):
        if key not in active:
            continue
        est = []
        for o in obs:
            if o.offload != mode:
                continue
            w = o.scenario.placement.weights
            frac = w.ssd if mode == "disk" else w.dram
            nbytes = frac * o.scenario.model.weight_bytes()
            bw = nbytes / (o.timing("tpot_ms") / 1e3)
            if mode != "disk":
                est.append(bw / 1e9 / max(o.n_gpu, 1))
            else:
                hw = o.scenario.hardware.tiers().get("ssd")
                if hw is not None:
                    d = db.get(hw.device)
                    if d.read_gb_per_s is not None:
                        est.append(bw / (d.read_gb_per_s.central * 1e9 * hw.count))
        if est:
            lo, hi = FIT_BOUNDS[key]
            k = replace(k, **{key: float(min(max(np.median(est), lo), hi))})
    return k


def calibrate(observations: Sequence[Observation], db: Any, *, base: Any = None, max_evals: int = 1500,
              progress: Callable[[str], None] = lambda s: None) -> CalibrationResult:
    """Fit constants to the observations that are not held out (see module docstring).

    Each constant is fitted to the runs that identify it, in stages, the earlier constants held fixed:
    1. every timing constant the single-GPU runs without weight offload exercise;
    2. vLLM's weight-offload constants (``weight_stream_gb_per_s``, ``weight_reread_tokens``) from the
       single-GPU runs with weights in host memory;
    3. ``tp_efficiency`` and ``tp_layer_s`` (they act only on several GPUs) from the multi-GPU runs;
    then the GPU power fractions, linear once the timing is fixed, from every fitted run with GPU energy."""
    from .model.constants import ModelConstants

    names = {f.name for f in fields(ModelConstants)}
    fit_all = [o for o in observations if not o.held_out]
    if not fit_all:
        raise StoragecarbonError("calibrate: every trace is held out; nothing to fit")
    weights = [o for o in fit_all if o.offload == "vllm-weights" and o.n_gpu == 1]
    multi = [o for o in fit_all if o.n_gpu > 1]
    first = [o for o in fit_all if o.n_gpu == 1 and o.offload != "vllm-weights"] or \
        [o for o in fit_all if o not in weights] or fit_all
    k = base or ModelConstants()
    fitted: list[str] = []
    evals = 0
    fv = 0.0
    tmp = Path(tempfile.mkdtemp(prefix="storagecarbon-cal-"))
    try:
        stages = [(first, [a for a in _active(first, names) if a not in STAGED])]
        if weights and first is not fit_all:
            stages.append((weights, [a for a in ("weight_stream_gb_per_s", "weight_reread_tokens") if a in names]))
        if multi and first is not fit_all and "tp_efficiency" in names:
            stages.append((multi, [a for a in ("tp_efficiency", "tp_layer_s") if a in names]))
        for obs, active in stages:
            if not active:
                continue
            k = _initial(obs, db, k, active)
            progress(f"fitting {', '.join(active)} to {len(obs)} trace(s)")
            k, fv_i, n = _fit_timing(obs, db, k, active, tmp, max_evals)
            fv = fv_i if not fitted else fv
            fitted += active
            evals += n
        progress("fitting GPU power fractions")
        k, pf = _fit_power(fit_all, db, k, names, tmp)
        k = replace(k, source="calibration (fit in memory)")
        fitted += pf
        defaulted = sorted(n for n in names - set(fitted) - {"source"})
        preds = {o.name: predict(o, db, k, tmp) for o in observations}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CalibrationResult(constants=k, fitted=fitted, defaulted=defaulted, observations=list(observations),
                             predictions=preds, objective=float(fv), evaluations=evals)


# constants fitted in their own stage (see calibrate), not with the first stage's timing constants
STAGED = ("tp_efficiency", "tp_layer_s", "weight_stream_gb_per_s", "weight_reread_tokens")


def _fit_timing(obs: Sequence[Observation], db: Any, k0: Any, active: list[str], tmp: Path,
                max_evals: int) -> tuple[Any, float, int]:
    """Least squares on log(modeled / measured) TTFT and TPOT over ``obs``, moving ``active`` (bounded)."""
    def consts(u: np.ndarray) -> Any:
        return replace(k0, **{a: _from_unit(float(x), *FIT_BOUNDS[a]) for a, x in zip(active, u)})

    def objective(u: np.ndarray) -> float:
        k = consts(u)
        tot = 0.0
        for o in obs:
            r = model_once(o.scenario, db, k, tmp)
            for key, mv in (("ttft_ms", r.ttft_ms), ("tpot_ms", r.tpot_ms)):
                tot += math.log(max(mv, 1e-9) / o.timing(key)) ** 2
        return tot / (2 * len(obs))

    # start inside the box: a start at a bound (a default of 0) sits where the logit is flat
    u0 = np.array([float(np.clip(_to_unit(getattr(k0, a), *FIT_BOUNDS[a]), -4.0, 4.0)) for a in active])
    if len(active) == 1:
        from scipy.optimize import minimize_scalar

        lo, hi = FIT_BOUNDS[active[0]]
        opt = minimize_scalar(lambda x: objective(np.array([_to_unit(float(x), lo, hi)])), bounds=(lo, hi),
                              method="bounded", options={"xatol": 1e-4 * (hi - lo)})
        return replace(k0, **{active[0]: float(opt.x)}), float(opt.fun), int(opt.nfev)
    u, fv, n1 = nelder_mead(objective, u0, step=0.5, max_evals=max_evals)
    u, fv, n2 = nelder_mead(objective, u, step=0.15, max_evals=max_evals // 2)  # restart
    return consts(u), fv, n1 + n2


def _fit_power(obs: Sequence[Observation], db: Any, k: Any, names: set[str], tmp: Path) -> tuple[Any, list[str]]:
    """GPU power fractions by bounded linear least squares on the measured GPU energy (timing fixed)."""
    io_used = any(o.offload in ("cpu", "disk", "vllm-weights") for o in obs)   # GPUs waiting on host memory
    pf = [p for p in POWER_FRACS if p in names and (io_used or p != "power_frac_io_wait")]
    rows, rhs = [], []
    for o in obs:
        e_per_token = o.measured.get("gpu_j_per_token")
        if e_per_token is None:
            continue
        idle, act, n = _gpu_power(o.scenario, db)
        zero = {p: 0.0 for p in POWER_FRACS if p in names}
        base_run = model_once(o.scenario, db, replace(k, **zero), tmp)
        coef = []
        for p in pf:
            r = model_once(o.scenario, db, replace(k, **{**zero, p: 1.0}), tmp)
            coef.append((act - idle) * r.busy_s)
        e_meas = e_per_token * base_run.generated_tokens
        e_idle = idle * n * base_run.duration_s
        rows.append(np.asarray(coef) / e_meas)
        rhs.append(1.0 - e_idle / e_meas)
    if not rows:
        return k, []
    fr = _bounded_lstsq(np.asarray(rows), np.asarray(rhs), *POWER_BOUNDS)
    return replace(k, **dict(zip(pf, (float(x) for x in fr)))), pf


def _bounded_lstsq(a: np.ndarray, b: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """min |a x - b|^2 with lo <= x <= hi (SciPy's bounded-variable least squares)."""
    from scipy.optimize import lsq_linear

    return np.asarray(lsq_linear(a, b, bounds=(lo, hi), method="bvls").x)


# ------------------------------------------------------------------------------------ files
def result_document(res: CalibrationResult, *, command: str = "") -> dict[str, Any]:
    from .model.constants import BASIS

    k = asdict(res.constants)
    k.pop("source", None)
    machines: list[dict[str, Any]] = []
    for o in res.observations:
        m = {k: v for k, v in o.machine.items() if k != "date_utc"}
        if m not in machines:
            machines.append(m)
    return {
        "constants": {n: round(float(v), 6) for n, v in k.items()},
        "fit": {
            "method": "least squares on log(modeled/measured): bounded Nelder-Mead on TTFT and TPOT for the "
                      "timing constants, then bounded linear least squares on GPU energy per token for the "
                      "power fractions",
            "fitted": res.fitted,
            "kept_default": res.defaulted,
            "objective_mean_sq_log_error": round(res.objective, 6),
            "evaluations": res.evaluations,
            "basis": {n: BASIS.get(n, "") for n in res.fitted},
            "engine": ("vLLM offline batch runs (first pass of each workload; modeled equivalent: the trace's "
                       "scenario echo with one pass)" if any(o.offload.startswith("vllm") for o in res.observations)
                       else "HF transformers generate() batch runs (modeled equivalent: one batch arriving at t=0)"),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        },
        "machine": machines[0] if len(machines) == 1 else machines,
        "traces": [{"name": o.name, "path": o.path, "sha256": o.sha256, "offload": o.offload,
                    "held_out": o.held_out, "recorded_utc": o.machine.get("date_utc")} for o in res.observations],
        "errors": {"fit": res.error_summary(False), "held_out": res.error_summary(True)},
        "residuals": res.residuals(None),
    }


def write_calibration(path: str | Path, doc: dict[str, Any]) -> Path:
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = ("# storagecarbon calibration: performance-model constants fitted to measured runs.\n"
            "# Scenarios reference it with `calibration: <this file>`; `constants:` is what the model reads.\n")
    p.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=120))
    return p


def run_calibration(traces: Sequence[str | Path], db: Any = None, *, holdout: Sequence[str] = (),
                    max_evals: int = 1500, progress: Callable[[str], None] = lambda s: None) -> CalibrationResult:
    from .devicedb import DeviceDB

    db = db or DeviceDB.load()
    if not traces:
        raise StoragecarbonError("calibrate: give at least one measured trace")
    tmp = Path(tempfile.mkdtemp(prefix="storagecarbon-cal-in-"))
    try:
        obs = []
        for t in traces:
            o = observe(t, tmp)
            stem = Path(t).name.split(".")[0]
            o.held_out = any(fnmatch.fnmatch(o.name, pat) or fnmatch.fnmatch(stem, pat) for pat in holdout)
            obs.append(o)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = [o.name for o in obs]
    if len(set(names)) != len(names):
        raise StoragecarbonError(f"calibrate: two traces of the same scenario name: {sorted(names)}")
    return calibrate(obs, db, max_evals=max_evals, progress=progress)


# -------------------------------------------------------------------------- synthetic runs
def write_synthetic_measurement(scn: Any, db: Any, constants: Any, out_path: str | Path, *,
                                offload: str = "none", rounds: int = 1) -> Path:
    """A "measured" transformers trace made by the model itself with known ``constants``
    (for tests: a calibration must recover them). GPU energy follows the attribution formula;
    the summary has the ``transformers`` block a real run writes."""
    from .model.simulate import run_model
    from .trace import Channel, DeviceEntry, TraceHeader, TraceWriter, read_trace

    tmp = Path(tempfile.mkdtemp(prefix="storagecarbon-syn-"))
    try:
        res = run_model(scn, db, tmp / "m.arrows", constants=constants)
        m = read_trace(tmp / "m.arrows")
        idle, act, n = _gpu_power(scn, db)
        t_b, busy = m.series("gpu", "busy_s")
        from .carbon import kernel

        held = kernel.held_units_s("gpu", "dedicated", n, 1.0, t_b, None)
        energy = kernel.idle_energy_j(idle, held) + kernel.dynamic_energy_j(act - idle, busy)
        b = scn.engine.max_num_seqs
        wl = scn.workload
        w = scn.placement.weights
        wbytes = scn.model.weight_bytes()
        target = "dram" if w.dram > 0 else ("ssd" if w.ssd > 0 else None)
        gpu = db.get(scn.hardware.tiers()["gpu"].device)
        dev = DeviceEntry("gpu0", "hbm", gpu.key, gpu.name, n, gpu.capacity_bytes)
        ch = [Channel(0, "gpu0", "energy_j", "J", True, "synthetic")]
        hdr = TraceHeader(source="measured", devices=[dev], channels=ch, scenario=scn.model_dump(mode="json"),
                          notes=["synthetic measurement written by the performance model (tests)"])
        lat = res.summary["latency"]
        summary = {
            "requests": res.requests, "prompt_tokens": res.prompt_tokens, "generated_tokens": res.generated_tokens,
            "latency": lat,
            "transformers": {"offload": offload, "batch_size": b, "prompt_len": int(wl.prompt_tokens.mean),
                             "new_tokens": int(wl.output_tokens.mean), "rounds": rounds,
                             "weight_bytes": wbytes, "offloaded_bytes": (1.0 - w.hbm) * wbytes,
                             "offload_target": target, "versions": {}},
        }
        with TraceWriter(out_path, hdr, fsync=False) as wr:
            wr.samples(t_b, np.zeros(len(t_b), dtype=np.int32), energy)
            for t, ev, name in m.markers:
                wr.marker(t, ev, name)
            wr.close(summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(out_path)


# --------------------------------------------------------------------------------------- CLI
def register(app: Any) -> None:
    import typer

    @app.command()
    def calibrate(  # noqa: F811 - the command's name
        traces: list[Path] = typer.Argument(..., help="measured traces of engine: transformers or vllm (.arrows or .arrows.gz)"),
        out: Path = typer.Option(Path("calibration.yaml"), "--out", help="calibration file to write"),
        holdout: Optional[list[str]] = typer.Option(None, "--holdout",
                                                    help="scenario-name glob of traces to evaluate but not fit (repeat)"),
        max_evals: int = typer.Option(1500, "--max-evals", help="model evaluations per Nelder-Mead pass"),
        db_dir: Optional[Path] = typer.Option(None, "--db", help="device_db directory"),
    ) -> None:
        """Fit the performance model's constants (HBM/compute efficiency, PCIe and disk bandwidth, overlap,
        overheads, GPU power fractions) to measured runs and write a calibration file scenarios can reference."""
        import sys

        from rich.console import Console
        from rich.table import Table

        from .devicedb import DeviceDB

        err = Console(stderr=True)
        db = DeviceDB.load(db_dir)
        res = run_calibration([str(t) for t in traces], db, holdout=holdout or [], max_evals=max_evals,
                              progress=lambda s: err.print(f"[dim]{s}[/]"))
        doc = result_document(res, command="storagecarbon calibrate " + " ".join(sys.argv[2:]))
        write_calibration(out, doc)
        con = Console()
        t = Table(title=f"calibration -> {out}")
        for c in ("trace", "set", "TTFT ms meas/model", "err", "TPOT ms meas/model", "err", "GPU J/tok meas/model", "err"):
            t.add_column(c)
        for r in res.residuals(None):
            cells = [r["name"], "held out" if r["held_out"] else "fit"]
            for key in METRICS:
                v = r[key]
                cells += ([f"missing / {v['modeled']:.4g}", "–"] if v["measured"] is None else
                          [f"{v['measured']:.4g} / {v['modeled']:.4g}", f"{v['error_pct']:+.1f}%"])
            t.add_row(*cells)
        con.print(t)
        con.print("constants: " + ", ".join(f"{n}={doc['constants'][n]:.4g}" for n in res.fitted))
        for which, summ in doc["errors"].items():
            if summ:
                con.print(f"{which}: " + "; ".join(f"{k2} median {v['median_abs_pct']}% worst {v['worst_abs_pct']}% ({v['worst']})"
                                                   for k2, v in summ.items()))

