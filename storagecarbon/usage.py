"""Moved to :mod:`storagecarbon.carbon.usage` (kept as an import path)."""

from .carbon.usage import *  # noqa: F401,F403
from .carbon.usage import (OTHER, QUANTITIES, WORKLOAD, DeviceUse, Usage, _phase_timeline,  # noqa: F401
                           aggregate, increments, quantity_of, uses_from_usage)
