"""Sensors: one source (and at most one vendor library) per module, behind one protocol.

See :mod:`storagecarbon.record.sensors.base` for the protocol. Importing this package imports no vendor
library: :mod:`.nvml` imports ``pynvml`` only inside ``NvmlSensor.probe()``.
"""

from .base import WORKLOAD_DEVICE, KeepLast, MonotonicCounter, Probe, Sensor, SensorBase
from .diskstats import DiskStat, DiskstatsSensor, parse_diskstats
from .lmcache_tap import LMCacheTapSensor, dir_size_bytes, parse_tap
from .memory import MemorySensor
from .nvml import NvmlSensor
from .procio import ProcIOSensor, ProcTree, parse_proc_io, parse_proc_stat
from .rapl import RaplSensor, discover_zones
from .replay import ReplaySensor, write_replay
from .vllm_metrics import VllmMetricsSensor, parse_prometheus, workload_rows

__all__ = [
    "WORKLOAD_DEVICE", "KeepLast", "MonotonicCounter", "Probe", "Sensor", "SensorBase",
    "DiskStat", "DiskstatsSensor", "parse_diskstats",
    "LMCacheTapSensor", "dir_size_bytes", "parse_tap",
    "MemorySensor", "NvmlSensor",
    "ProcIOSensor", "ProcTree", "parse_proc_io", "parse_proc_stat",
    "RaplSensor", "discover_zones",
    "ReplaySensor", "write_replay",
    "VllmMetricsSensor", "parse_prometheus", "workload_rows",
]
