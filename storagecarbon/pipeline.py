"""profile / report: scenario or trace -> usage -> attribute() -> report files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .carbon.attribute import Attribution, attribute, carbon_inputs_for
from .carbon.usage import aggregate
from .devicedb import DeviceDB
from .errors import EngineError, StoragecarbonError
from .model.constants import constants_for
from .report.model import Report
from .report.build import build_report
from .report.files import write_report_files
from .scenario import Carbon, Scenario


@dataclass
class ProfileResult:
    report: Report
    attribution: Attribution
    trace_path: Path
    out_dir: Path
    mode_reason: str
    db: DeviceDB | None = None


def scenario_db(db: DeviceDB, scenario: dict[str, Any] | None) -> DeviceDB:
    """The device_db with a scenario's (or a trace's scenario echo's) ``device_overrides`` applied."""
    ov = (scenario or {}).get("device_overrides") or {}
    if not ov:
        return db
    from .devicedb import DeviceOverride

    return db.with_overrides({k: DeviceOverride.model_validate(v) for k, v in ov.items()})


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
        from .record.sensors.nvml import NvmlSensor

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
        from .record.recorder import record_command

        trace = work / "trace.arrows"
        rc = record_command(list(scn.engine.command or []), trace, scenario=scn.model_dump(mode="json"),
                            hz=scn.engine.sample_hz, timeout_s=scn.engine.timeout_s)
        if rc != 0:
            raise EngineError(f"command exited with {rc}; trace kept at {trace}")
        return trace
    raise EngineError(f"engine {kind!r} cannot be measured")


def profile(scenario_path: str | Path, *, db: DeviceDB | None = None, out_dir: str | Path | None = None,
            mode: str = "auto", region: str | None = None, draws: int | None = None, scope: str | None = None,
            progress: Callable[[str], None] = lambda s: None) -> ProfileResult:
    from .model.simulate import run_model
    from .scenario import load_scenario

    db = db or DeviceDB.load()
    scenario_path = Path(scenario_path)
    scn = load_scenario(scenario_path, db)
    db = db.with_overrides(scn.device_overrides)
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
        run_model(scn, db, trace, constants=constants_for(scn, scenario_path))
        reason = f"MODELED ({why})" if mode == "auto" else "MODELED (requested)"
    progress("attributing")
    res = attribute_trace(trace, db, scn.carbon, scenario=scn.name or scenario_path.stem, region=region, draws=draws,
                          slo=scn.slo.model_dump(), base_dir=scenario_path.parent, out_dir=out, scope=scope)
    res.report["mode_reason"] = reason
    (out / "report.json").write_text(__import__("json").dumps(res.report, indent=2))
    return ProfileResult(res.report, res.attribution, trace, out, reason, res.db)


@dataclass
class AttributedTrace:
    report: Report
    attribution: Attribution
    db: DeviceDB | None = None   # the device_db the attribution used (with the scenario's overrides)


def attribute_trace(trace: str | Path, db: DeviceDB, carbon: Carbon | None, *, scenario: str,
                    region: str | None = None, draws: int | None = None, slo: dict | None = None,
                    base_dir: Path | None = None, out_dir: Path | None = None,
                    gco2e_per_kwh: float | None = None, scope: str | None = None,
                    hardware: Scenario | None = None) -> AttributedTrace:
    """A saved trace -> attribute() -> report (``report`` re-attributes with another region, intensity or scope).

    ``hardware``: a scenario whose hardware maps the trace's unidentified devices after the fact
    (:func:`storagecarbon.record.tiermap.remap_devices`)."""
    trace = Path(trace)
    usage = aggregate(trace)
    if hardware is not None:
        from .record.tiermap import remap_devices

        usage.header.devices, mapped = remap_devices(usage.header.devices, hardware, db)
        usage.header.notes = list(usage.header.notes) + mapped
    echo = usage.header.scenario or {}
    if carbon is None:
        try:
            carbon = Carbon.model_validate(echo.get("carbon") or {"region": region or "world"})
        except Exception:  # noqa: BLE001 - an old or partial echo: fall back to the world grid
            carbon = Carbon(region=region or "world")
    db = scenario_db(db, echo)
    if gco2e_per_kwh is not None:
        from .scenario import IntensityFigure

        carbon = carbon.model_copy(update={"region": None, "intensity_file": None, "gco2e_per_kwh": IntensityFigure(
            best=gco2e_per_kwh, source="given on the command line")})
        region = None
    inputs = carbon_inputs_for(carbon, db, region=region, base_dir=base_dir, draws=draws, scope=scope)
    attr = attribute(usage, db, inputs)
    if slo is None and echo:
        slo = echo.get("slo")
    report = build_report(attr, scenario=scenario, slo=slo, trace_path=str(trace))
    if out_dir is not None:
        write_report_files(Path(out_dir), report, attr, trace)
        report["files"] = {"report": str(Path(out_dir) / "report.json"), "trace": str(Path(out_dir) / "trace.arrows"),
                           "intervals": str(Path(out_dir) / "intervals.parquet"),
                           "device_phase": str(Path(out_dir) / "device_phase.parquet")}
    return AttributedTrace(report, attr, db)
