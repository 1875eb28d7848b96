"""profile / report: scenario or trace -> usage -> attribute() -> report files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .attribution import Attribution, CarbonInputs, Triple, attribute, carbon_inputs_for
from .devicedb import DeviceDB
from .errors import EngineError, StoragecarbonError
from .report.build import build_report
from .report.files import write_report_files
from .scenario import Carbon, Scenario
from .usage import aggregate


@dataclass
class ProfileResult:
    report: dict[str, Any]
    attribution: Attribution
    trace_path: Path
    out_dir: Path
    mode_reason: str


def load_intensity_series(path: str | Path) -> np.ndarray:
    """Hourly CSV with a column gco2e_per_kwh (other columns ignored): the planner's one reader."""
    from .planner import load_intensity_csv

    return load_intensity_csv(path)


def inputs_for(carbon: Carbon, db: DeviceDB, base_dir: Path | None = None, **kw: Any) -> CarbonInputs:
    series = None
    if carbon.intensity_file and kw.get("region") is None:
        p = Path(carbon.intensity_file)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        series = load_intensity_series(p)
    return carbon_inputs_for(carbon, db, intensity_series=series, **kw)


def resolve_calibration(path: str | None, scenario_path: Path) -> Path | None:
    """A scenario's ``calibration:`` path: as given (absolute or from the current directory), else
    relative to the scenario's folder or one of its parents (e.g. the repository root)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for base in [scenario_path.resolve().parent, *scenario_path.resolve().parents]:
        if (base / p).exists():
            return base / p
    return p  # load_constants reports it missing, naming the path


REPORT_FILES = ("report.json", "trace.arrows", "intervals.parquet", "device_phase.parquet")


def safe_dir_name(name: str) -> str:
    """``name`` as one harmless path component: letters, digits, ``.``, ``_`` and ``-`` kept, every
    other run of characters (``/``, ``..``, spaces, control characters) replaced by ``_``, no
    leading dot, at most 100 characters; ``scenario`` when nothing is left."""
    import re

    comp = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:100].strip("._-")
    return comp or "scenario"


def default_report_dir(root: Path, name: str, progress: Callable[[str], None] = lambda s: None) -> Path:
    """Where a report goes when the user named no directory: ``root/<safe name>``.

    A scenario name never places output outside ``root``: it is sanitised (:func:`safe_dir_name`),
    and the result must resolve inside ``root``. Files there are replaced only when the directory
    is new, empty or already a storagecarbon report directory; anything else is refused (the user
    then names the directory with ``--out``).
    """
    comp = safe_dir_name(name)
    if comp != name:
        progress(f"scenario name {name!r} is not a plain directory name; its report goes to {root / comp}")
    out = root / comp
    root_r = root.resolve()
    out_r = out.resolve()
    if out_r.parent != root_r:
        raise StoragecarbonError(f"{out}: resolves to {out_r}, outside {root_r}; name the report directory with --out")
    if out.exists():
        if not out.is_dir():
            raise StoragecarbonError(f"{out}: exists and is not a directory; name the report directory with --out")
        present = {p.name for p in out.iterdir()}
        if present and not present & set(REPORT_FILES):
            raise StoragecarbonError(f"{out}: exists and is not a storagecarbon report directory (it holds "
                                     f"{', '.join(sorted(present)[:3])}{', ...' if len(present) > 3 else ''}); "
                                     "its files are not replaced: name the report directory with --out")
    return out


def hardware_present(scn: Scenario, db: DeviceDB) -> tuple[bool, str]:
    """Is the scenario's hardware on this machine (so the run can be measured)?"""
    kind = scn.engine.kind
    if kind == "none":
        return False, "engine: none (model only)"
    if kind == "vllm":
        if "gpu" in scn.hardware.tiers():
            from .engines.vllm_gpu import gpu_engine_available

            return gpu_engine_available()
        from .engines.vllm_cpu import engine_available

        ok, why = engine_available()
        return ok, why
    if kind in ("transformers",):
        from .sensors.nvml import NvmlSensor

        probe = NvmlSensor().probe()
        if not probe.available:
            return False, f"no NVIDIA GPU here ({probe.reason})"
        return True, "NVIDIA GPU present"
    if kind == "command":
        return True, "command engine: runs whatever the scenario says"
    return False, f"unknown engine {kind}"


def run_measured(scn: Scenario, db: DeviceDB, scenario_path: Path, work: Path,
                 progress: Callable[[str], None]) -> Path:
    kind = scn.engine.kind
    if kind == "vllm" and "gpu" in scn.hardware.tiers():
        from .engines.vllm_gpu import profile_vllm_gpu

        return profile_vllm_gpu(scn, db, scenario_path, work, progress=progress)
    if kind == "vllm":
        from .engines.vllm_profile import profile_vllm

        return profile_vllm(scn, db, scenario_path, work, progress=progress)
    if kind == "transformers":
        from .engines.hf_transformers import profile_transformers

        return profile_transformers(scn, db, scenario_path, work, progress=progress)
    if kind == "command":
        from .recorder import record_command

        trace = work / "trace.arrows"
        rc = record_command(list(scn.engine.command or []), trace, scenario=scn.model_dump(mode="json"),
                            hz=scn.engine.sample_hz, timeout_s=scn.engine.timeout_s)
        if rc != 0:
            raise EngineError(f"command exited with {rc}; trace kept at {trace}")
        return trace
    raise EngineError(f"engine {kind!r} cannot be measured")


def profile(scenario_path: str | Path, *, db: DeviceDB | None = None, out_dir: str | Path | None = None,
            mode: str = "auto", region: str | None = None, draws: int | None = None,
            progress: Callable[[str], None] = lambda s: None) -> ProfileResult:
    from .perfmodel import run_model
    from .scenario import load_scenario

    db = db or DeviceDB.load()
    scenario_path = Path(scenario_path)
    scn = load_scenario(scenario_path, db)
    out = Path(out_dir) if out_dir else default_report_dir(Path("reports"), scn.name or scenario_path.stem, progress)
    out.mkdir(parents=True, exist_ok=True)
    present, why = hardware_present(scn, db)
    if mode == "measured" and not present:
        raise EngineError(f"cannot measure {scenario_path}: {why}")
    measured = mode == "measured" or (mode == "auto" and present)
    if measured:
        progress(f"measuring: {why}")
        trace = run_measured(scn, db, scenario_path, out, progress)
        reason = f"MEASURED ({why})"
    else:
        progress(f"modeling: {why}" if mode == "auto" else "modeling (requested)")
        trace = out / "trace.arrows"
        from .perfmodel import load_constants

        run_model(scn, db, trace, constants=load_constants(resolve_calibration(scn.calibration, scenario_path)))
        reason = f"MODELED ({why})" if mode == "auto" else "MODELED (requested)"
    progress("attributing")
    res = attribute_trace(trace, db, scn.carbon, scenario=scn.name or scenario_path.stem, region=region, draws=draws,
                          slo=scn.slo.model_dump(), base_dir=scenario_path.parent, out_dir=out)
    res.report["mode_reason"] = reason
    (out / "report.json").write_text(__import__("json").dumps(res.report, indent=2))
    return ProfileResult(res.report, res.attribution, trace, out, reason)


@dataclass
class AttributedTrace:
    report: dict[str, Any]
    attribution: Attribution


def attribute_trace(trace: str | Path, db: DeviceDB, carbon: Carbon | None, *, scenario: str,
                    region: str | None = None, draws: int | None = None, slo: dict | None = None,
                    base_dir: Path | None = None, out_dir: Path | None = None,
                    gco2e_per_kwh: float | None = None) -> AttributedTrace:
    trace = Path(trace)
    usage = aggregate(trace)
    if carbon is None:
        scn_echo = usage.header.scenario or {}
        try:
            carbon = Carbon.model_validate(scn_echo.get("carbon") or {"region": region or "world"})
        except Exception:
            carbon = Carbon(region=region or "world")
    if gco2e_per_kwh is not None:
        inputs = inputs_for(carbon, db, base_dir, draws=draws, region=None)
        inputs = CarbonInputs(Triple.fixed(gco2e_per_kwh, "given on the command line"), inputs.pue, inputs.allocation,
                              inputs.lifetime_overrides_years, inputs.draws, inputs.seed, None)
    else:
        inputs = inputs_for(carbon, db, base_dir, region=region, draws=draws)
    attr = attribute(usage, db, inputs)
    if slo is None and usage.header.scenario:
        slo = (usage.header.scenario or {}).get("slo")
    report = build_report(attr, scenario=scenario, slo=slo, trace_path=str(trace))
    if out_dir is not None:
        write_report_files(Path(out_dir), report, attr, trace)
        report["files"] = {"report": str(Path(out_dir) / "report.json"), "trace": str(Path(out_dir) / "trace.arrows"),
                           "intervals": str(Path(out_dir) / "intervals.parquet"),
                           "device_phase": str(Path(out_dir) / "device_phase.parquet")}
    return AttributedTrace(report, attr)
