"""The performance model's public names, kept where callers have always imported them.

The model lives in :mod:`storagecarbon.model`: constants and their loader
(:mod:`~storagecarbon.model.constants`), workload sampling (:mod:`~storagecarbon.model.workload`),
the per-step physics (:mod:`~storagecarbon.model.physics`) and the iteration-level simulation
(:mod:`~storagecarbon.model.simulate`) that ``run_model`` runs.
"""

from __future__ import annotations

from .model.constants import BASIS, ModelConstants, constants_for, load_constants, resolve_calibration
from .model.simulate import ModelResult, run_model
from .model.workload import sample_workload
from .trace import tool_versions  # cached once per process in trace; kept importable for older callers

__all__ = ["BASIS", "ModelConstants", "ModelResult", "constants_for", "load_constants", "resolve_calibration",
           "run_model", "sample_workload", "tool_versions"]
