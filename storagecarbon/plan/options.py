"""Options to compare: a scenario, a report directory or a trace, loaded into an :class:`Option`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..carbon.attribute import Allocation, Attribution, CarbonInputs, Scope, attribute_uses, carbon_inputs_for
from ..carbon.grid import (
    grid_spec_for,
)
from ..carbon.sampling import GridSpec, KeyedSampler, Triple
from ..carbon.usage import DeviceUse, uses_from_usage
from ..devicedb import DeviceDB
from ..errors import StoragecarbonError


@dataclass
class Option:
    """One option to compare: its usage per device (as profile reads it) and its carbon settings."""

    name: str
    source: str
    report: Mapping[str, Any]   # the option's report (storagecarbon.report.model.Report, or an older report.json)
    uses: list[DeviceUse]
    grid: GridSpec
    pue: Triple
    allocation: Allocation
    requests: int
    generated_tokens: int
    mode: str
    slo: dict[str, Any] = field(default_factory=dict)
    phases: list[str] | None = None
    scope: Scope = "dedicated"
    lifetime_overrides: dict[str, float] = field(default_factory=dict)
    db: DeviceDB | None = None          # the device_db with the option's device_overrides
    scenario: dict[str, Any] | None = None
    prompt_tokens: int = 0
    usage: Any = None

    def inputs(self, draws: int, seed: int) -> CarbonInputs:
        return CarbonInputs(self.grid, self.pue, self.allocation, dict(self.lifetime_overrides), draws, seed,
                            scope=self.scope)


def option_names(paths: Sequence[str | Path]) -> list[str | None]:
    """Names for compare's options: ``None`` (the default: scenario name, report folder, trace's
    folder) unless two inputs would share one; then trace files are named by their stem (and by
    folder/stem if stems collide too), so two traces in one folder stay two options."""
    def default(p: Path) -> str:
        return p.stem if p.suffix in (".yaml", ".yml") else (p.name if p.is_dir() else (p.parent.name or p.stem))

    ps = [Path(x) for x in paths]
    base = [default(p) for p in ps]
    out: list[str | None] = [None] * len(ps)
    for i, p in enumerate(ps):
        if base.count(base[i]) > 1 and p.is_file() and p.suffix not in (".yaml", ".yml"):
            stems = [q.stem for q in ps]
            out[i] = p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}"
    return out


def load_option(path: str | Path, db: DeviceDB, *, out_root: Path, region: str | None = None,
                progress: Callable[[str], None] = lambda s: None, name: str | None = None) -> Option:
    """A scenario (modeled profile), a report directory or a trace file -> :class:`Option` (IO edge).
    ``name``: the option's name for a trace or report folder (default: its folder's name)."""
    from ..pipeline import attribute_trace, default_report_dir, profile
    from ..scenario import Carbon, load_scenario

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        scn = load_scenario(p, db)
        name = scn.name or p.stem
        progress(f"modeling {name}")
        res = profile(p, db=db, out_dir=default_report_dir(out_root, name, progress), mode="modeled", region=region)
        report, attr, carbon, odb = res.report, res.attribution, scn.carbon, res.db or db
        base_dir = p.parent
    else:
        trace = p / "trace.arrows" if p.is_dir() else p
        if not trace.exists():
            raise StoragecarbonError(f"{p}: not a scenario (.yaml), a report directory with trace.arrows, or a trace file")
        name = name or (p.name if p.is_dir() else (p.parent.name or p.stem))
        progress(f"reading {trace}")
        res2 = attribute_trace(trace, db, None, scenario=name, region=region)
        report, attr, odb = res2.report, res2.attribution, res2.db or db
        assert attr.usage is not None  # an attribution of a trace keeps the trace's usage
        echo = (attr.usage.header.scenario or {}).get("carbon")
        try:
            carbon = Carbon.model_validate(echo or {"region": region or "world"})
        except Exception:
            carbon = Carbon(region=region or "world")
        base_dir = trace.parent
    usage = attr.usage
    assert usage is not None  # both branches attribute a trace: its usage is kept
    inputs = carbon_inputs_for(carbon, odb, region=region, base_dir=base_dir)
    slo = (usage.header.scenario or {}).get("slo") or {}
    return Option(name=name, source=str(p), report=report, uses=uses_from_usage(usage, odb), grid=inputs.grid,
                  pue=inputs.pue, allocation=inputs.allocation, requests=int(report.get("requests") or 0),
                  generated_tokens=int((report.get("tokens") or {}).get("generated") or 0),
                  mode=str(report.get("mode", "?")), slo=slo, phases=list(usage.phases), scope=inputs.scope,
                  lifetime_overrides=dict(inputs.lifetime_overrides_years), db=odb, scenario=usage.header.scenario,
                  prompt_tokens=int((report.get("tokens") or {}).get("prompt") or 0), usage=usage)


def grid_of_carbon(carbon: Any, db: DeviceDB, region: str | None, base_dir: Path | None) -> GridSpec:
    return grid_spec_for(carbon, db, region, base_dir)


def option_attribution(opt: Option, db: DeviceDB, sampler: KeyedSampler) -> Attribution:
    """attribute() of one option on the shared sampler (the same cells profile computes)."""
    phases = opt.phases or [f"run{i}" for i in range(len(opt.uses[0].phase_time_s))] if opt.uses else []
    a = attribute_uses(opt.uses, phases, opt.db or db, opt.inputs(sampler.draws, sampler.seed), sampler=sampler,
                       scenario=opt.scenario or {}, workload={"requests": opt.requests,
                                                              "prompt_tokens": opt.prompt_tokens,
                                                              "generated_tokens": opt.generated_tokens})
    a.usage = opt.usage
    return a


def option_draws(opt: Option, world: KeyedSampler, db: DeviceDB | None = None) -> dict[str, Any]:
    """Per-draw carbon of one option: totals, per tier, per 1k tokens and per request."""
    a = option_attribution(opt, db or opt.db or world.db, world)
    emb = np.nansum(a.embodied_g, axis=1)   # [device, draw]
    op = np.nansum(a.operational_g, axis=1)
    tiers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, u in enumerate(opt.uses):
        e0, o0 = tiers.get(u.tier, (np.zeros(world.draws), np.zeros(world.draws)))
        tiers[u.tier] = (e0 + emb[i], o0 + op[i])
    total = a.total_g
    return {"emb": np.nansum(a.embodied_g, axis=(0, 1)), "op": np.nansum(a.operational_g, axis=(0, 1)), "total": total,
            "tiers": tiers, "per_1k": total / opt.generated_tokens * 1000 if opt.generated_tokens else None,
            "per_req": total / opt.requests if opt.requests else None, "warnings": a.warnings, "ci": a.ci,
            "pue": a.pue, "attribution": a}
