"""The device database: sourced embodied carbon, power, bandwidth and endurance per device.

``storagecarbon/device_db/`` (package data, inside the wheel) holds data, not code: YAML files with a top-level ``devices:`` list (and
``grid.yaml`` with ``regions:`` and ``pue:``). Every number is a :class:`Figure` with
low / best / high where known and a ``source``. Missing data is missing (``None``), never 0.
Lookups are exact (key or alias); an unknown key lists the closest keys as a hint only.
"""

from __future__ import annotations

import difflib
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .errors import UnknownKeyError, ValidationError
from .yamlio import StrictModel, load_yaml, validate

DEFAULT_DB_DIR = Path(__file__).resolve().parent / "device_db"  # package data: ships inside the wheel
DB_ENV = "STORAGECARBON_DEVICE_DB"  # a device_db directory used where no --db is given (the tests' frozen copy)

DeviceKind = Literal["gpu", "dram", "ssd", "hdd", "host", "cpu"]
TIER_OF_KIND = {"gpu": "hbm", "dram": "dram", "ssd": "ssd", "hdd": "hdd", "host": "host", "cpu": "host"}


_Strict = StrictModel  # strict numbers, no unknown fields (storagecarbon.yamlio)


class Figure(_Strict):
    """A number with its range and provenance. At least one of low/best/high is given."""

    low: float | None = Field(default=None, ge=0)
    best: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, ge=0)
    source: str = Field(min_length=3)
    method: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Figure":
        vals = [v for v in (self.low, self.best, self.high) if v is not None]
        if not vals:
            raise ValueError("at least one of low, best, high must be given (missing data is omitted, not 0)")
        if vals != sorted(vals):
            raise ValueError("values must satisfy low <= best <= high")
        return self

    @property
    def central(self) -> float:
        """best, or the geometric midpoint of the range when no best is published."""
        if self.best is not None:
            return self.best
        lo = self.low if self.low is not None else self.high
        hi = self.high if self.high is not None else self.low
        assert lo is not None and hi is not None
        return float((lo * hi) ** 0.5) if lo > 0 else (lo + hi) / 2

    @property
    def triple(self) -> tuple[float, float, float]:
        """(low, central, high) with absent bounds collapsed onto the central value."""
        c = self.central
        lo = self.low if self.low is not None else c
        hi = self.high if self.high is not None else c
        return (lo, c, hi)


class Embodied(Figure):
    per: Literal["unit", "gb"]
    method: Literal["vendor-pcf", "lca", "per-gb-factor", "model", "allocation"]  # type: ignore[assignment]
    source_low: str | None = None
    source_high: str | None = None


class Device(_Strict):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    kind: DeviceKind
    name: str = Field(min_length=2)
    capacity_gb: float | None = Field(default=None, gt=0)
    embodied_kgco2e: Embodied | None = None
    lifetime_years: Figure
    idle_w: Figure | None = None
    active_w: Figure | None = None
    read_gb_per_s: Figure | None = None
    write_gb_per_s: Figure | None = None
    bf16_tflops: Figure | None = None
    fp16_tflops: Figure | None = None
    endurance_tbw: Figure | None = None
    nvml_memory_bytes: int | None = Field(default=None, gt=0, description="GPU memory as NVML reports it (bytes)")
    aliases: list[str] = Field(default_factory=list)
    notes: str | None = None

    @field_validator("lifetime_years")
    @classmethod
    def _lifetime_positive(cls, v: Figure) -> Figure:
        if v.central <= 0 or (v.low is not None and v.low <= 0):
            raise ValueError("lifetime must be > 0 years")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Device":
        if self.embodied_kgco2e is not None and self.embodied_kgco2e.per == "gb" and self.capacity_gb is None:
            raise ValueError("embodied per GB needs capacity_gb")
        if self.endurance_tbw is not None and self.kind != "ssd":
            raise ValueError("endurance_tbw is only for flash (kind: ssd)")
        if self.kind in ("gpu", "dram", "ssd", "hdd") and self.capacity_gb is None:
            raise ValueError(f"a {self.kind} record needs capacity_gb")
        return self

    @property
    def tier(self) -> str:
        return TIER_OF_KIND[self.kind]

    @property
    def capacity_bytes(self) -> float | None:
        """Bytes of one unit: what NVML reports for a GPU when known, else capacity_gb x 1e9."""
        if self.nvml_memory_bytes is not None:
            return float(self.nvml_memory_bytes)
        return None if self.capacity_gb is None else self.capacity_gb * 1e9

    @property
    def tensor_tflops(self) -> Figure | None:
        """Dense tensor throughput for the model: bf16 where the GPU has it; fp16 on GPUs without bf16
        (V100, T4: vLLM serves them in fp16)."""
        return self.bf16_tflops if self.bf16_tflops is not None else self.fp16_tflops

    def embodied_total_triple(self) -> tuple[float, float, float] | None:
        """Embodied kgCO2e of one unit as (low, central, high)."""
        if self.embodied_kgco2e is None:
            return None
        lo, c, hi = self.embodied_kgco2e.triple
        if self.embodied_kgco2e.per == "gb":
            cap = float(self.capacity_gb or 0)
            return (lo * cap, c * cap, hi * cap)
        return (lo, c, hi)


class FigureOverride(_Strict):
    """A figure a scenario or sweep sets for one device (its own source, or the override's)."""

    low: float | None = Field(default=None, ge=0)
    best: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, ge=0)
    source: str | None = None
    per: Literal["unit", "gb"] = "unit"   # embodied_kgco2e only

    @model_validator(mode="after")
    def _ordered(self) -> "FigureOverride":
        vals = [v for v in (self.low, self.best, self.high) if v is not None]
        if not vals:
            raise ValueError("give at least one of low, best, high")
        if vals != sorted(vals):
            raise ValueError("values must satisfy low <= best <= high")
        return self


OVERRIDABLE = ("embodied_kgco2e", "lifetime_years", "idle_w", "active_w", "read_gb_per_s", "write_gb_per_s", "bf16_tflops",
               "fp16_tflops", "endurance_tbw")


class DeviceOverride(_Strict):
    """Figures of one device_db record replaced for one scenario (reported as overrides)."""

    source: str = Field(min_length=3, description="why and from where (every override names a source)")
    embodied_kgco2e: FigureOverride | None = None
    lifetime_years: FigureOverride | None = None
    idle_w: FigureOverride | None = None
    active_w: FigureOverride | None = None
    read_gb_per_s: FigureOverride | None = None
    write_gb_per_s: FigureOverride | None = None
    bf16_tflops: FigureOverride | None = None
    fp16_tflops: FigureOverride | None = None
    endurance_tbw: FigureOverride | None = None

    def figures(self) -> dict[str, FigureOverride]:
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}


class DeviceFile(_Strict):
    devices: list[Device]


class Region(_Strict):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    year: int = Field(ge=1990, le=2100)
    gco2e_per_kwh: Figure


class Pue(_Strict):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    value: Figure

    @field_validator("value")
    @classmethod
    def _ge_one(cls, v: Figure) -> Figure:
        if any(x is not None and x < 1.0 for x in (v.low, v.best, v.high)):
            raise ValueError("PUE is >= 1.0 by definition")
        return v


class GridFile(_Strict):
    regions: list[Region] = Field(default_factory=list)
    pue: list[Pue] = Field(default_factory=list)


def default_db_dir() -> Path:
    """The device_db directory a command reads without ``--db``: ``$STORAGECARBON_DEVICE_DB`` when set
    (the test suite points it at its frozen copy, tests/data/device_db/), else the shipped one."""
    env = os.environ.get(DB_ENV)
    return Path(env) if env else DEFAULT_DB_DIR


class DeviceDB:
    """All records of a device_db directory, indexed by key and alias (exact matches only)."""

    def __init__(self, devices: list[Device], regions: list[Region], pues: list[Pue], files: dict[str, str]):
        self.devices = {d.key: d for d in devices}
        self.regions = {r.key: r for r in regions}
        self.pue = {p.key: p for p in pues}
        self.files = files  # key -> file it came from
        self.overrides: dict[str, dict[str, object]] = {}  # key -> overridden figures (see with_overrides)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "DeviceDB":
        """The records of ``directory``; without one, of ``$STORAGECARBON_DEVICE_DB`` when set, else
        the shipped database (:data:`DEFAULT_DB_DIR`)."""
        directory = Path(directory) if directory is not None else default_db_dir()
        if not directory.is_dir():
            raise ValidationError(str(directory), None, "device_db", "is not a directory")
        devices: list[Device] = []
        regions: list[Region] = []
        pues: list[Pue] = []
        files: dict[str, str] = {}
        seen_alias: dict[str, str] = {}
        for path in sorted(directory.glob("*.yaml")):
            doc = load_yaml(path)
            if not isinstance(doc.data, dict):
                raise ValidationError(str(path), 1, "(top level)", "must be a mapping with 'devices:' or 'regions:'/'pue:'")
            if "devices" in doc.data:
                parsed = validate(DeviceFile, doc)
                for i, dev in enumerate(parsed.devices):
                    if dev.key in files:
                        raise ValidationError(str(path), doc.line_of(("devices", i, "key")), f"devices[{i}].key",
                                              f"duplicate key {dev.key!r} (also in {files[dev.key]})")
                    for j, alias in enumerate(dev.aliases):
                        if alias in seen_alias or alias in files:
                            raise ValidationError(str(path), doc.line_of(("devices", i, "aliases", j)),
                                                  f"devices[{i}].aliases[{j}]",
                                                  f"alias {alias!r} already names {seen_alias.get(alias, alias)!r}")
                        seen_alias[alias] = dev.key
                    files[dev.key] = str(path)
                    devices.append(dev)
            else:
                parsed = validate(GridFile, doc)
                for r in parsed.regions:
                    files[f"region:{r.key}"] = str(path)
                regions.extend(parsed.regions)
                pues.extend(parsed.pue)
        return cls(devices, regions, pues, files)

    @cached_property
    def _alias(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for d in self.devices.values():
            for a in d.aliases:
                out[a] = d.key
        return out

    def resolve(self, key_or_alias: str) -> Device | None:
        """Exact lookup by key or vendor alias string; ``None`` when unknown."""
        if key_or_alias in self.devices:
            return self.devices[key_or_alias]
        k = self._alias.get(key_or_alias.strip())
        return self.devices[k] if k else None

    def get(self, key_or_alias: str) -> Device:
        dev = self.resolve(key_or_alias)
        if dev is None:
            close = difflib.get_close_matches(key_or_alias, list(self.devices) + list(self._alias), n=4, cutoff=0.3)
            hint = f"; closest known: {', '.join(close)}" if close else ""
            raise UnknownKeyError(f"unknown device {key_or_alias!r}{hint} (see `storagecarbon devices list`)")
        return dev

    def region(self, key: str) -> Region:
        if key not in self.regions:
            close = difflib.get_close_matches(key, list(self.regions), n=4, cutoff=0.3)
            hint = f"; closest known: {', '.join(close)}" if close else f"; known: {', '.join(sorted(self.regions))}"
            raise UnknownKeyError(f"unknown grid region {key!r}{hint}")
        return self.regions[key]

    def pue_of(self, key: str) -> Pue:
        if key not in self.pue:
            raise UnknownKeyError(f"unknown PUE preset {key!r}; known: {', '.join(sorted(self.pue))}")
        return self.pue[key]

    def with_overrides(self, overrides: dict[str, DeviceOverride] | None) -> "DeviceDB":
        """A copy whose records carry a scenario's ``device_overrides`` (no overrides: ``self``)."""
        if not overrides:
            return self
        devs = dict(self.devices)
        done: dict[str, dict[str, object]] = {}
        for key, ov in overrides.items():
            rec = self.get(key)
            upd: dict[str, object] = {}
            for fld, fo in ov.figures().items():
                src = f"scenario override: {fo.source or ov.source}"
                upd[fld] = (Embodied(per=fo.per, method="model", low=fo.low, best=fo.best, high=fo.high, source=src)
                            if fld == "embodied_kgco2e"
                            else Figure(low=fo.low, best=fo.best, high=fo.high, source=src))
            devs[rec.key] = rec.model_copy(update=upd)
            done[rec.key] = {**{k: v.model_dump(exclude_none=True) for k, v in ov.figures().items()}, "source": ov.source}
        out = DeviceDB(list(devs.values()), list(self.regions.values()), list(self.pue.values()), dict(self.files))
        out.overrides = {**self.overrides, **done}
        return out

    def of_kind(self, kind: str | None = None) -> list[Device]:
        return [d for d in self.devices.values() if kind is None or d.kind == kind]
