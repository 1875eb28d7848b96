"""The report model: the one typed shape of ``report.json`` that :func:`storagecarbon.report.build.build_report` builds
once and every reporter (terminal, JSON, HTML, Parquet) reads.

The contract is ``docs/methodology.md`` ("report.json"): bands are ``{p5, p50, p95}`` or ``None``; a figure
without data is ``None`` and appears in ``missing``; totals are sums of what is known and ``excludes`` names what
they leave out. The types let mypy check that the builder writes what the reporters read; older report files
(``report_version`` 1) may lack the newer sections, so reporters read optional sections with ``.get``.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Optional, TypedDict

Band = TypedDict("Band", {"p5": float, "p50": float, "p95": float})
EnergyBasis = Literal["measured", "modeled", "missing"]


class CarbonCells(TypedDict):
    embodied_gco2e: Optional[Band]
    operational_gco2e: Optional[Band]
    total_gco2e: Optional[Band]


class EnergyCells(TypedDict):
    energy_j: Optional[Band]
    energy_kwh: Optional[Band]
    energy_basis: EnergyBasis


class StorageShare(TypedDict):
    embodied: Optional[Band]
    operational: Optional[Band]
    total: Optional[Band]


class Headline(TypedDict):
    total_g: Optional[Band]
    per_1k_tokens_g: Optional[Band]
    energy_kwh: Optional[Band]
    storage_share: StorageShare


class Totals(CarbonCells, EnergyCells):
    excludes: list[str]


class TierRow(CarbonCells, EnergyCells):
    tier: str
    devices: list[str]
    # bytes and busy time: only when the attribution has usage (a measured or modeled trace)
    bytes_read: NotRequired[float]
    bytes_written: NotRequired[float]
    app_bytes_read: NotRequired[float]
    app_bytes_written: NotRequired[float]
    busy_s: NotRequired[float]
    mean_resident_bytes: NotRequired[Optional[float]]
    block_vs_app_gap_bytes: NotRequired[float]
    energy_methods: list[str]
    occupancy_basis: list[str]
    excludes: list[str]


class DeviceRow(CarbonCells, EnergyCells):
    id: str
    tier: str
    db_key: Optional[str]
    name: Optional[str]
    count: int
    stand_in: bool
    energy_method: str
    occupancy_basis: str
    idle_capacity_share: Optional[float]
    held_unit_s: Optional[float]
    occupied_unit_s: Optional[float]
    embodied_unit_kgco2e: Optional[dict[str, float]]
    lifetime_years: Optional[dict[str, Any]]
    wear_beat_time_share_of_draws: float
    overridden: Any


class PhaseRow(CarbonCells, EnergyCells):
    time_s: float


class LedgerRow(TypedDict):
    tier: str
    kind: str
    devices: list[str]
    cost_g: Optional[Band]
    wear_g: Optional[Band]
    saving_g: Optional[Band]
    net_g: Optional[Band]
    p_pays_for_itself: Optional[float]
    hit_tokens: Optional[float]
    basis: str


class Latency(TypedDict):
    ttft_ms: Optional[dict[str, Any]]
    tpot_ms: Optional[dict[str, Any]]
    slo: dict[str, dict[str, Any]]


class Timeline(TypedDict):
    t_s: list[float]
    bin_s: float
    power_w: dict[str, list[float]]
    power_basis: dict[str, str]
    read_bytes_per_s: dict[str, list[float]]
    write_bytes_per_s: dict[str, list[float]]
    source: str


class Command(TypedDict):
    argv: Optional[list[str]]
    exit_code: Optional[int]
    failed: bool


class Report(TypedDict):
    report_version: int
    scenario: str
    mode: str
    trace: Optional[str]
    truncated: bool
    scope: str
    scope_description: str
    requests: int
    tokens: dict[str, int]
    duration_s: float
    headline: Headline
    totals: Totals
    per_request_gco2e: Optional[Band]
    per_1k_tokens_gco2e: Optional[Band]
    per_unit_basis: str
    missing_devices: list[str]
    command: Optional[Command]
    serving: Optional[dict[str, Any]]
    missing: list[dict[str, Any]]
    excludes: list[str]
    coverage: Optional[float]
    tiers: list[TierRow]
    devices: list[DeviceRow]
    phases: dict[str, PhaseRow]
    ledger: list[LedgerRow]
    wear: list[dict[str, Any]]
    latency: Latency
    sources: dict[str, dict[str, Optional[str]]]
    device_overrides: Any
    assumptions: dict[str, Any]
    provenance: dict[str, Any]
    warnings: list[str]
    tool_versions: dict[str, Any]
    timeline: Optional[Timeline]
    files: NotRequired[dict[str, str]]   # where profile/report wrote the report files
    mode_reason: NotRequired[str]        # profile: why the run was measured or modeled
