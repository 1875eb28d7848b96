"""Model constants, their basis, their one loader and the one resolver of ``calibration:`` paths.

``profile``, ``plan``, ``compare`` and ``calibrate`` all obtain a scenario's constants through
:func:`constants_for` (or :func:`load_constants` for an explicit file), so a calibration file
means the same thing to every command.
"""

from __future__ import annotations

from dataclasses import replace, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..errors import ValidationError
from ..renames import upgrade_keys

if TYPE_CHECKING:
    from ..scenario import Scenario


@dataclass(frozen=True)
class ModelConstants:
    """Constants a measured run can calibrate. Defaults and their basis in ``BASIS``."""

    hbm_efficiency: float = 0.70
    compute_efficiency: float = 0.50
    pcie_gb_per_s: float = 25.0
    disk_efficiency: float = 0.80
    overlap: float = 0.5
    tp_efficiency: float = 0.85
    step_overhead_s: float = 0.004
    power_frac_prefill: float = 0.80
    power_frac_decode: float = 0.55
    power_frac_io_wait: float = 0.20
    host_busy_frac: float = 0.25
    layer_overhead_s: float = 0.0
    kv_offload_overlap: float = 0.0
    kv_offload_gb_per_s: float = 50.0
    request_overhead_s: float = 0.0
    weight_reread_tokens: float = 0.0
    weight_stream_gb_per_s: float = 0.0
    tp_layer_s: float = 0.0
    source: str = "defaults"


BASIS = {
    "hbm_efficiency": "achieved / peak HBM bandwidth in memory-bound decode; 0.6-0.8 typical of vLLM decode kernels",
    "compute_efficiency": "achieved / peak dense bf16 FLOP/s in prefill (MFU); 0.4-0.6 typical for large-batch prefill",
    "pcie_gb_per_s": "effective host<->GPU copy bandwidth per GPU; PCIe 4.0 x16 ~25 GB/s; 52-55 GB/s measured on the lent H100 (PCIe 5.0)",
    "disk_efficiency": "achieved / datasheet sequential read of the drives for large reads",
    "overlap": "fraction of offload transfer time hidden behind GPU work (0 = serial, 1 = perfect overlap; FlexGen overlaps IO and compute)",
    "tp_efficiency": "throughput factor for tensor parallelism over more than one GPU (communication)",
    "step_overhead_s": "fixed per-iteration scheduling/launch overhead",
    "power_frac_prefill": "GPU power in prefill as a fraction between idle and active (TDP) power",
    "power_frac_decode": "GPU power in decode as a fraction between idle and active power",
    "power_frac_io_wait": "GPU power while waiting for offloaded weights/KV",
    "host_busy_frac": "host CPU busy share while serving (drives host power between idle and active)",
    "layer_overhead_s": "host time per decoder layer per step (Python + kernel launches of eager execution); "
                        "0 for CUDA-graph engines such as vLLM; a step takes at least layers x this",
    "kv_offload_gb_per_s": "effective host<->GPU rate of an offloaded KV cache's copies (transformers OffloadedCache: non-blocking "
                       "copies through pinned memory, unlike accelerate's per-tensor weight streaming)",
    "request_overhead_s": "latency every request's first token carries outside the GPU steps (the serving "
                          "engine's admission, scheduling and output path); adds to TTFT, not to GPU time",
    "tp_layer_s": "per decoder layer and step, the GPU time tensor parallelism adds (two all-reduces of the "
                  "layer's activations: launch and NVLink latency); 0 on one GPU",
    "weight_stream_gb_per_s": "host-memory -> GPU rate of weights offloaded to DRAM, per GPU (vLLM's UVA zero-copy "
                              "reads: 51 GB/s fitted on the H200's PCIe 5.0 x16); 0: pcie_gb_per_s",
    "weight_reread_tokens": "tokens of a step per extra read of the weights held in host memory: vLLM's UVA weight "
                            "offload (cpu_offload_gb) lets the GEMMs read those weights over PCIe once per tile of "
                            "tokens, so a step of n tokens moves them 1 + n / this times; 0: once per step (accelerate's "
                            "and FlexGen's streaming copy each layer to the GPU once)",
    "kv_offload_overlap": "fraction of the per-step KV round trip of an offloaded KV cache (transformers "
                          "OffloadedCache: every layer's KV to the GPU and back each step) hidden behind compute",
}


def load_constants(path: str | Path | None) -> ModelConstants:
    """The defaults (``path`` None) or the ``constants:`` of a calibration file, checked."""
    if path is None:
        return ModelConstants()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ValidationError(str(p), None, "calibration", "file does not exist") from None
    consts = (data or {}).get("constants", {})
    allowed = {f.name for f in fields(ModelConstants)}
    if not isinstance(consts, dict):
        raise ValidationError(str(p), None, "constants", "must be a mapping (name: value)")
    try:
        consts = upgrade_keys(consts, allowed)  # files from before a rename (e.g. pcie_gbps) keep loading
    except ValueError as exc:
        raise ValidationError(str(p), None, "constants", str(exc)) from None
    for k, v in consts.items():
        if k not in allowed:
            raise ValidationError(str(p), None, f"constants.{k}", f"unknown constant (allowed: {', '.join(sorted(allowed))})")
        if not isinstance(v, (int, float)) or v < 0:
            raise ValidationError(str(p), None, f"constants.{k}", "must be a number >= 0")
    return ModelConstants(**{**consts, "source": f"calibration {p}"})


def resolve_calibration(path: str | None, scenario_path: str | Path | None) -> Path | None:
    """A scenario's ``calibration:`` path: as given (absolute or from the current directory), else
    relative to the scenario's folder or one of its parents (e.g. the repository root)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_absolute() or p.exists() or scenario_path is None:
        return p
    sp = Path(scenario_path).resolve()
    for base in [sp.parent, *sp.parents]:
        if (base / p).exists():
            return base / p
    return p  # load_constants reports it missing, naming the path


# The defaults of every vLLM-shaped scenario without a ``calibration:``: constants fitted to real vLLM
# 0.26 runs on an H200 (written by ``storagecarbon calibrate``; fit, held-out errors and traces inside).
# They are efficiencies and fractions relative to device_db's peak figures, so they carry over to other
# GPUs through those figures (docs/validation.md says how far that is checked).
VLLM_DEFAULTS = Path(__file__).with_name("vllm-h200.yaml")


def constants_for(scn: Scenario, scenario_path: str | Path | None = None) -> ModelConstants:
    """The constants a scenario asks for: its ``calibration:`` (resolved as above); else, for a vLLM or
    modeled scenario, the vLLM-fitted defaults (:data:`VLLM_DEFAULTS`); else (``engine: transformers``
    without a calibration) the generic :class:`ModelConstants` defaults."""
    if scn.calibration is None and scn.engine.kind != "transformers" and VLLM_DEFAULTS.exists():
        k = load_constants(VLLM_DEFAULTS)
        return replace(k, source="vLLM-fitted defaults (vLLM 0.26 on H200, storagecarbon/model/vllm-h200.yaml)")
    return load_constants(resolve_calibration(scn.calibration, scenario_path))
