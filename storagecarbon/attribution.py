"""Moved to :mod:`storagecarbon.carbon` (kept as an import path)."""

from .carbon.attribute import (  # noqa: F401
                               Attribution,
                               CarbonInputs,
                               DeviceBasis,
                               LedgerRow,
                               attribute,
                               attribute_uses,
                               carbon_inputs_for,
                               pct,
)
from .carbon.kernel import CAPACITY_KINDS, UNIT_KINDS  # noqa: F401
from .carbon.sampling import J_PER_KWH, SECONDS_PER_YEAR, Triple, band  # noqa: F401
