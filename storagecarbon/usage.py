"""Moved to :mod:`storagecarbon.carbon.usage` (kept as an import path)."""

from .carbon.usage import *  # noqa: F401,F403
from .carbon.usage import OTHER, QUANTITIES, WORKLOAD, DeviceUse, Usage, aggregate, uses_from_usage  # noqa: F401
