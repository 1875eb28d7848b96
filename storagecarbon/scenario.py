"""Scenario files: hardware, model, placement, workload, engine, carbon and SLO.

``load_scenario(path)`` returns a validated :class:`Scenario` or raises a one-line
``FILE:LINE: field.path: problem (what is allowed)`` error. Device keys are checked against the
device database (exact keys or aliases).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from . import limits
from .devicedb import DeviceDB, DeviceOverride
from .errors import ValidationError
from .yamlio import LocatedYaml, StrictModel, load_yaml, parse_yaml, validate


_Strict = StrictModel  # strict numbers, no unknown fields (storagecarbon.yamlio)


# ---------------------------------------------------------------------------------- hardware
class TierHardware(_Strict):
    device: str = Field(min_length=1, description="device_db key or exact alias")
    count: int = Field(default=1, ge=1, le=100_000)
    path: str | None = Field(default=None, description="mount point or directory on this tier (measured runs)")
    share: float = Field(default=1.0, gt=0, le=1, description="SCI resource share of each unit held (e.g. 2/128 threads)")


class Hardware(_Strict):
    gpu: TierHardware | None = None
    host: TierHardware | None = None
    cpu: TierHardware | None = Field(default=None, description="host CPUs (power and die embodied), beside the host chassis")
    dram: TierHardware | None = None
    ssd: TierHardware | None = None
    hdd: TierHardware | None = None

    def tiers(self) -> dict[str, TierHardware]:
        return {k: v for k, v in (("gpu", self.gpu), ("host", self.host), ("cpu", self.cpu), ("dram", self.dram),
                                   ("ssd", self.ssd), ("hdd", self.hdd)) if v is not None}


# ------------------------------------------------------------------------------------ model
DType = Literal["bf16", "fp16", "fp32", "fp8", "int8", "int4"]
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1, "int8": 1, "int4": 0.5}


class ModelDims(_Strict):
    name: str
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    params: float | None = Field(default=None, gt=0, description="total parameters; computed from dims if absent")

    def param_count(self) -> float:
        if self.params is not None:
            return self.params
        h, i, L = self.hidden_size, self.intermediate_size, self.layers
        attn = h * self.num_heads * self.head_dim * 2 + h * self.num_kv_heads * self.head_dim * 2
        mlp = 3 * h * i
        return float(L * (attn + mlp + 2 * h) + 2 * self.vocab_size * h + h)


# Architecture presets (public model configs: config.json of each model family).
PRESETS: dict[str, ModelDims] = {
    "llama-3-8b": ModelDims(name="llama-3-8b", layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8,
                            head_dim=128, intermediate_size=14336, vocab_size=128256, params=8.03e9),
    "llama-3-70b": ModelDims(name="llama-3-70b", layers=80, hidden_size=8192, num_heads=64, num_kv_heads=8,
                             head_dim=128, intermediate_size=28672, vocab_size=128256, params=70.6e9),
    "llama-3-405b": ModelDims(name="llama-3-405b", layers=126, hidden_size=16384, num_heads=128, num_kv_heads=8,
                              head_dim=128, intermediate_size=53248, vocab_size=128256, params=405.9e9),
    "llama-2-7b": ModelDims(name="llama-2-7b", layers=32, hidden_size=4096, num_heads=32, num_kv_heads=32,
                            head_dim=128, intermediate_size=11008, vocab_size=32000, params=6.74e9),
    "llama-2-13b": ModelDims(name="llama-2-13b", layers=40, hidden_size=5120, num_heads=40, num_kv_heads=40,
                             head_dim=128, intermediate_size=13824, vocab_size=32000, params=13.0e9),
    "opt-30b": ModelDims(name="opt-30b", layers=48, hidden_size=7168, num_heads=56, num_kv_heads=56,
                         head_dim=128, intermediate_size=28672, vocab_size=50272, params=30.0e9),
    "opt-175b": ModelDims(name="opt-175b", layers=96, hidden_size=12288, num_heads=96, num_kv_heads=96,
                          head_dim=128, intermediate_size=49152, vocab_size=50272, params=175.0e9),
    "tiny-llama": ModelDims(name="tiny-llama", layers=2, hidden_size=128, num_heads=4, num_kv_heads=2,
                            head_dim=32, intermediate_size=256, vocab_size=1024),
}


class ModelSpec(_Strict):
    preset: str | None = None
    name: str | None = None
    layers: int | None = Field(default=None, gt=0)
    hidden_size: int | None = Field(default=None, gt=0)
    num_heads: int | None = Field(default=None, gt=0)
    num_kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    intermediate_size: int | None = Field(default=None, gt=0)
    vocab_size: int | None = Field(default=None, gt=0)
    params: float | None = Field(default=None, gt=0)
    weight_dtype: DType = "bf16"
    kv_dtype: DType = "bf16"
    truncated_layers: int | None = Field(default=None, gt=0, description="run only this many layers (shape kept)")

    @model_validator(mode="after")
    def _preset_or_dims(self) -> "ModelSpec":
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (allowed: {', '.join(PRESETS)})")
        if self.preset is None:
            missing = [f for f in ("layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                                   "intermediate_size", "vocab_size") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"give a preset or all dimensions (missing: {', '.join(missing)})")
        return self

    def dims(self) -> ModelDims:
        base = PRESETS[self.preset].model_dump() if self.preset else {"name": self.name or "custom"}
        for f in ("name", "layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "vocab_size", "params"):
            v = getattr(self, f)
            if v is not None:
                base[f] = v
        if self.preset and any(getattr(self, f) is not None for f in ("layers", "hidden_size", "intermediate_size")) \
                and self.params is None:
            base["params"] = None
        if self.truncated_layers is not None:
            full = ModelDims(**base)
            per_layer = (full.param_count() - 2 * full.vocab_size * full.hidden_size) / full.layers
            base["layers"] = self.truncated_layers
            base["params"] = per_layer * self.truncated_layers + 2 * full.vocab_size * full.hidden_size
        return ModelDims(**base)

    def kv_bytes_per_token(self) -> float:
        d = self.dims()
        return 2 * d.layers * d.num_kv_heads * d.head_dim * DTYPE_BYTES[self.kv_dtype]

    def weight_bytes(self) -> float:
        return self.dims().param_count() * DTYPE_BYTES[self.weight_dtype]


# -------------------------------------------------------------------------------- placement
class WeightPlacement(_Strict):
    hbm: float = Field(default=1.0, ge=0, le=1)
    dram: float = Field(default=0.0, ge=0, le=1)
    ssd: float = Field(default=0.0, ge=0, le=1)
    hdd: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_one(self) -> "WeightPlacement":
        s = self.hbm + self.dram + self.ssd + self.hdd
        if abs(s - 1.0) > 1e-6:
            raise ValueError(f"weight fractions must sum to 1 (they sum to {s:g})")
        return self


class KvTierCfg(_Strict):
    enabled: bool = True
    size_gb: float = Field(gt=0)
    path: str | None = None


class RemoteCfg(_Strict):
    url: str
    size_gb: float = Field(gt=0)


class KvPlacement(_Strict):
    hbm_gb: float | None = Field(default=None, gt=0, description="KV space in HBM, GB over all the engine's GPUs; default: what "
                                                                  "the weights leave")
    chunk_size: int = Field(default=256, gt=0, le=65536)
    backend: Literal["lmcache", "native"] = Field(
        default="lmcache", description="who offloads KV: LMCache (cpu and disk tiers) or vLLM's native "
                                        "OffloadingConnector (local_cpu only; kv_offloading_size)")
    local_cpu: KvTierCfg | None = None
    local_disk: KvTierCfg | None = None
    remote: RemoteCfg | None = None

    @property
    def offloads(self) -> bool:
        """KV leaves HBM for a CPU or disk tier."""
        return any(x is not None and x.enabled for x in (self.local_cpu, self.local_disk))

    @property
    def uses_lmcache(self) -> bool:
        """LMCache does the offloading (its connector, config file and byte taps are needed)."""
        return self.backend == "lmcache" and self.offloads


class Placement(_Strict):
    weights: WeightPlacement = WeightPlacement()
    kv: KvPlacement = KvPlacement()
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)


# --------------------------------------------------------------------------------- workload
class LengthDist(_Strict):
    mean: Annotated[float, limits.at_most(limits.TOKENS)] = Field(gt=0)
    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    min: Annotated[float, limits.at_most(limits.TOKENS)] | None = Field(default=None, gt=0)
    max: Annotated[float, limits.at_most(limits.TOKENS)] | None = Field(default=None, gt=0)
    sigma: float = Field(default=0.5, gt=0)


class SharedPrefix(_Strict):
    tokens: Annotated[int, limits.at_most(limits.TOKENS)] = Field(default=0, ge=0)
    fraction: float = Field(default=1.0, ge=0, le=1, description="share of requests that carry the prefix")
    warm: bool = Field(default=False, description="the prefix is already in the engine's HBM prefix cache when the "
                                                  "run starts (a hot system prompt); false: the first request computes it")


class Workload(_Strict):
    requests: Annotated[int, limits.at_most(limits.REQUESTS)] | None = Field(default=None, gt=0)
    duration_s: Annotated[float, limits.at_most(limits.DURATION_S)] | None = Field(default=None, gt=0)
    arrival_rate_rps: Annotated[float, limits.at_most(limits.ARRIVAL_RPS)] | None = Field(
        default=None, gt=0, description="Poisson arrivals; absent = all at t=0")
    prompt_tokens: LengthDist
    output_tokens: LengthDist
    shared_prefix: SharedPrefix = SharedPrefix()
    passes: Annotated[int, limits.at_most(limits.PASSES)] = Field(default=1, ge=1)
    reset_prefix_cache_between_passes: bool = Field(
        default=False, description="passes run one after another and vLLM's HBM prefix cache is emptied between them "
                                   "(vLLM's reset_prefix_cache(), as the measured GPU matrix does): a later pass's "
                                   "prefixes come from the offload tiers. Simulated by profile; plan takes the passes "
                                   "as one stream")
    seed: int = 0

    @model_validator(mode="after")
    def _count_or_duration(self) -> "Workload":
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests or duration_s")
        if self.duration_s is not None and self.arrival_rate_rps is None and self.requests is None:
            raise ValueError("duration_s needs arrival_rate_rps")
        return self

    @model_validator(mode="after")
    def _bounded(self) -> "Workload":
        n = self.requests if self.requests is not None else (self.duration_s or 0) * (self.arrival_rate_rps or 0)
        problem = limits.check(n * self.passes, limits.REQUESTS)
        if problem:
            raise ValueError(f"requests x passes (duration_s x arrival_rate_rps when requests is absent): {problem}")
        return self

    def num_requests(self) -> int:
        if self.requests is not None:
            return self.requests
        assert self.duration_s is not None and self.arrival_rate_rps is not None
        return max(1, int(round(self.duration_s * self.arrival_rate_rps)))


# ----------------------------------------------------------------------------------- engine
class TransformersCfg(_Strict):
    offload: Literal["none", "cpu", "disk", "kv-cpu"] = "none"
    gpu_weight_fraction: float = Field(default=1.0, gt=0, le=1)
    batch_size: Annotated[int, limits.at_most(limits.BATCH)] = Field(default=1, gt=0)
    offload_dir: str | None = None


class Engine(_Strict):
    kind: Literal["none", "vllm", "transformers", "command"] = "none"
    command: list[str] | None = None
    max_num_seqs: Annotated[int, limits.at_most(limits.BATCH)] = Field(default=256, gt=0)
    max_num_batched_tokens: Annotated[int, limits.at_most(limits.BATCH_TOKENS)] = Field(default=8192, gt=0)
    block_size: Annotated[int, limits.at_most(limits.TOKENS)] = Field(default=16, gt=0)
    max_model_len: Annotated[int, limits.at_most(limits.BATCH_TOKENS)] | None = Field(default=None, gt=0)
    timeout_s: Annotated[float, limits.at_most(limits.TIMEOUT_S)] = Field(default=900, gt=0)
    sample_hz: Annotated[float, limits.at_most(limits.SAMPLE_HZ)] = Field(default=10.0, gt=0)
    transformers: TransformersCfg | None = None

    @model_validator(mode="after")
    def _cmd(self) -> "Engine":
        if self.kind == "command" and not self.command:
            raise ValueError("engine kind 'command' needs command: [argv...]")
        return self


# ----------------------------------------------------------------------------------- carbon
class IntensityFigure(_Strict):
    low: float | None = Field(default=None, ge=0)
    best: float = Field(ge=0)
    high: float | None = Field(default=None, ge=0)
    source: str = "given in the scenario"


class Carbon(_Strict):
    region: str | None = None
    gco2e_per_kwh: IntensityFigure | None = None
    intensity_file: str | None = None
    pue: str | float = "industry-average"
    lifetime_years: dict[str, float] = Field(default_factory=dict, description="device key or tier -> years")
    allocation: Literal["time", "wear", "max"] = "max"
    scope: Literal["dedicated", "shared"] = Field(
        default="dedicated", description="dedicated: every device in hardware, whole, for the run's time; "
                                         "shared: capacity devices by occupancy (resident bytes / capacity)")
    draws: Annotated[int, limits.at_most(limits.DRAWS)] = Field(default=2000, ge=100)
    seed: int = 0

    @model_validator(mode="after")
    def _grid(self) -> "Carbon":
        if self.region is None and self.gco2e_per_kwh is None and self.intensity_file is None:
            raise ValueError("give region, gco2e_per_kwh or intensity_file")
        if isinstance(self.pue, float) and self.pue < 1.0:
            raise ValueError("pue must be >= 1.0")
        for k, v in self.lifetime_years.items():
            if not v > 0:
                raise ValueError(f"lifetime_years.{k} must be > 0")
        return self


class Slo(_Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)


class Scenario(_Strict):
    name: str | None = None
    description: str = ""
    hardware: Hardware
    model: ModelSpec
    placement: Placement = Placement()
    workload: Workload
    engine: Engine = Engine()
    carbon: Carbon
    slo: Slo = Slo()
    calibration: str | None = None
    device_overrides: dict[str, DeviceOverride] = Field(
        default_factory=dict, description="device_db key -> figures replaced for this scenario (each with a source)")

    @model_validator(mode="after")
    def _placement_matches_hardware(self) -> "Scenario":
        tiers = self.hardware.tiers()
        if "gpu" not in tiers and self.engine.kind != "vllm":
            raise ValueError("hardware.gpu is required (the CPU engine scenario may omit it)")
        w = self.placement.weights
        for t in ("dram", "ssd", "hdd"):
            if getattr(w, t) > 0 and t not in tiers:
                raise ValueError(f"placement.weights.{t} > 0 but hardware.{t} is not given")
        kv = self.placement.kv
        if kv.local_cpu is not None and kv.local_cpu.enabled and "dram" not in tiers:
            raise ValueError("placement.kv.local_cpu needs hardware.dram")
        if kv.local_disk is not None and kv.local_disk.enabled and "ssd" not in tiers and "hdd" not in tiers:
            raise ValueError("placement.kv.local_disk needs hardware.ssd or hardware.hdd")
        return self


def _check_devices(scn: Scenario, doc: LocatedYaml, db: DeviceDB) -> None:
    for tier, hw in scn.hardware.tiers().items():
        dev = db.resolve(hw.device)
        path = ("hardware", tier, "device")
        if dev is None:
            import difflib

            close = difflib.get_close_matches(hw.device, list(db.devices), n=3, cutoff=0.3)
            raise ValidationError(doc.file, doc.line_of(path), f"hardware.{tier}.device",
                                  f"unknown device {hw.device!r} (closest known: {', '.join(close) or 'none'})")
        want = {"gpu": ("gpu",), "host": ("host", "cpu"), "cpu": ("cpu",), "dram": ("dram",), "ssd": ("ssd",), "hdd": ("hdd",)}[tier]
        if dev.kind not in want:
            raise ValidationError(doc.file, doc.line_of(path), f"hardware.{tier}.device",
                                  f"{dev.key} is a {dev.kind}, not a {'/'.join(want)}")
    for key in scn.device_overrides:
        if db.resolve(key) is None:
            raise ValidationError(doc.file, doc.line_of(("device_overrides", key)), f"device_overrides.{key}",
                                  "unknown device (give a device_db key or exact alias)")
    if scn.carbon.region is not None and scn.carbon.region not in db.regions:
        raise ValidationError(doc.file, doc.line_of(("carbon", "region")), "carbon.region",
                              f"unknown region {scn.carbon.region!r} (allowed: {', '.join(sorted(db.regions))})")
    if isinstance(scn.carbon.pue, str) and scn.carbon.pue not in db.pue:
        raise ValidationError(doc.file, doc.line_of(("carbon", "pue")), "carbon.pue",
                              f"unknown PUE preset {scn.carbon.pue!r} (allowed: {', '.join(sorted(db.pue))} or a number >= 1)")


def scenario_from_doc(doc: LocatedYaml, db: DeviceDB | None = None) -> Scenario:
    if not isinstance(doc.data, dict):
        raise ValidationError(doc.file, 1, "(top level)", "a scenario is a mapping (hardware, model, workload, carbon, ...)")
    scn = validate(Scenario, doc)
    if scn.name is None:
        scn = scn.model_copy(update={"name": Path(doc.file).stem})
    if db is not None:
        _check_devices(scn, doc, db)
    return scn


def load_scenario(path: str | Path, db: DeviceDB | None = None) -> Scenario:
    return scenario_from_doc(load_yaml(path), db)


def parse_scenario(text: str, name: str = "<scenario>", db: DeviceDB | None = None) -> Scenario:
    return scenario_from_doc(parse_yaml(text, name), db)
