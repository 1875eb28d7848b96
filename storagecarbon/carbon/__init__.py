"""Carbon accounting: device data, one keyed sampler, one kernel, usage, attribute, the offload ledger.

* :mod:`.sampling` -- :class:`Triple`, log-triangular quantiles (scipy.stats), :class:`KeyedSampler`;
* :mod:`.grid` -- grid intensity (regions, fixed figures, hourly series) and PUE;
* :mod:`.kernel` -- every formula (energy model, SCI time share, flash wear, operational carbon);
* :mod:`.usage` -- trace -> usage per device and phase (:class:`DeviceUse`);
* :mod:`.attribute` -- :func:`attribute`: usage x device data x grid -> per-draw carbon cells;
* :mod:`.ledger` -- what each offload tier cost and saved.

The device database itself is :mod:`storagecarbon.devicedb` (data in ``storagecarbon/device_db/``).
"""

from .attribute import (
           Attribution,
           CarbonInputs,
           DeviceBasis,
           LedgerRow,
           attribute,
           attribute_uses,
           carbon_inputs_for,
)
from .grid import GridSpec, grid_for_region, grid_spec_for, pue_triple
from .sampling import (
           J_PER_KWH,
           SECONDS_PER_YEAR,
           DeviceDraws,
           KeyedSampler,
           Triple,
           band,
           logtri_ppf,
)
from .usage import DeviceUse, Usage, aggregate, uses_from_usage

__all__ = [
           "J_PER_KWH",
           "SECONDS_PER_YEAR",
           "Attribution",
           "CarbonInputs",
           "DeviceBasis",
           "DeviceDraws",
           "DeviceUse",
           "GridSpec",
           "KeyedSampler",
           "LedgerRow",
           "Triple",
           "Usage",
           "aggregate",
           "attribute",
           "attribute_uses",
           "band",
           "carbon_inputs_for",
           "grid_for_region",
           "grid_spec_for",
           "logtri_ppf",
           "pue_triple",
           "uses_from_usage",
]
