"""Capacity planning, by its old name: every name this module had, now from :mod:`storagecarbon.plan`.

The code lives in the package, one concern per module: ``sweep`` (the sweep file), ``options``
(compare's inputs), ``world`` (the keyed sampler bound to a device_db), ``compare``, ``footprint``
(carbon of many configurations at once), ``pareto`` (front and picks), ``plan`` (``plan()`` and what
to buy) and ``cli`` (the ``compare`` and ``plan`` commands). The forecast-error models are data
(``storagecarbon/carbon/forecast_errors.yaml``, read by :mod:`storagecarbon.carbon.grid`).
"""
# ruff: noqa: F401  (this module only re-exports)

from __future__ import annotations

from typing import Any

from .carbon import kernel as ck
from .carbon.attribute import Allocation, Attribution, CarbonInputs, Scope, attribute_uses, carbon_inputs_for
from .carbon.grid import (CARBONCAST_CISO, ERROR_MODELS, HALF_NORMAL_Z, NO_ERROR, QUANTILES, ErrorBand,
                          ForecastErrorModel, IntensitySeries, error_band_from_mape, error_model_from_mape,
                          grid_for_region, grid_spec_for, load_intensity_csv, pue_triple)
from .carbon.sampling import (J_PER_KWH, SECONDS_PER_YEAR, DeviceDraws, GridSpec, KeyedSampler, Triple, band,
                              logtri_ppf, stream)
from .carbon.usage import DeviceUse, uses_from_usage
from .model.configs import HwConfigs, configs_from_scenarios, platform, tier_of
from .model.steady_state import PerfResult, analytic_model
from .model.workload import WorkloadStats, workload_stats
from .plan.compare import COMPARE_VERSION, TIER_ORDER, compare
from .plan.footprint import carbon_db, plan_carbon
from .plan.options import Option, grid_of_carbon, load_option, option_attribution, option_draws, option_names
from .plan.pareto import pareto_front, robust_picks
from .plan.plan import PLAN_VERSION, plan
from .plan.sweep import (CAPACITY_KINDS, SLOT_TIER, SLOTS, DeviceCountAxis, DeviceOverride, ErrorBandSpec, KvAxis,
                         LifetimeVariant, LoadedSweep, PowerRange, SeriesSpec, Sweep, SweepSlo, WeightsAxis,
                         check_sweep_size, expand_sweep, load_sweep, sweep_from_doc)
from .plan.world import World

KeyDraws = DeviceDraws
_stream = stream


def bands(x: Any, axis: int = -1) -> dict[str, float]:
    return band(x)
