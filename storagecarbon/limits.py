"""Upper bounds on every size a file handed to storagecarbon can set, and why each one is where it is.

One place for all of them: the YAML loader, the scenario and sweep schemas, the intensity-series
reader and the trace reader import their bounds from here. A value over a bound is refused before
anything is allocated, with an error that names the file, the line, the field, the bound and the
reason (:func:`at_most`). The bounds keep a run within the memory of a small machine (the 2-core,
~23 GB CI host: the largest allowed input stays below a few GB); none of them is near what a real
scenario, device database, sweep or trace uses (the shipped ones are 100-1000x smaller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import AfterValidator


@dataclass(frozen=True)
class Bound:
    value: float
    why: str

    def text(self) -> str:
        return f"the bound is {self.value:,.0f} ({self.why})" if self.value >= 100 else \
            f"the bound is {self.value:g} ({self.why})"


# ---------------------------------------------------------------------------------------- YAML
YAML_BYTES = Bound(4 * 2**20, "a scenario, sweep or device_db file is a few kB; the largest shipped one is 26 kB")
YAML_NODES = Bound(200_000, "nodes after expanding aliases; guards against alias bombs (billion laughs)")
YAML_DEPTH = Bound(64, "nesting depth; the schemas nest at most 6 levels")

# ------------------------------------------------------------------------------------ workload
# The performance model holds one Python tuple per request of every pass and the planner a few
# float64 arrays per request: ~0.5 kB per request, so 1 M requests stay near 0.5 GB.
REQUESTS = Bound(1_000_000, "requests x passes; each modeled request costs ~0.5 kB of memory")
TOKENS = Bound(2**20, "tokens of one request (1 Mi; the longest context of the presets is 128 Ki)")
DURATION_S = Bound(31 * 86400, "31 days of modeled serving")
ARRIVAL_RPS = Bound(100_000, "requests per second")
PASSES = Bound(100, "passes over the same requests")

# -------------------------------------------------------------------------------------- engine
SAMPLE_HZ = Bound(1000, "the recorder cannot sample faster than ~1 kHz; rows grow with the rate")
TIMEOUT_S = Bound(7 * 86400, "one week")
BATCH = Bound(65_536, "sequences in one batch")
BATCH_TOKENS = Bound(2**24, "tokens in one batch")

# -------------------------------------------------------------------------------------- carbon
DRAWS = Bound(1_000_000, "Monte Carlo draws: arrays are devices x phases x draws float64 (1 M draws ~ 0.5 GB)")

# --------------------------------------------------------------------------------------- sweep
SWEEP_CONFIGS = Bound(200_000, "hardware configurations (product of the axes); the model holds ~30 float64 "
                               "arrays of this length and a Python tuple per configuration")
SWEEP_CELLS = Bound(2_000_000, "configurations x lifetimes x grids; each cell keeps its percentiles and ranks")
SWEEP_CELL_DRAWS = Bound(2e9, "configurations x lifetimes x grids x draws evaluated (time, not memory: "
                              "draws are processed in chunks); ~1 min per 1e9 on one core")

# ------------------------------------------------------------------------------ intensity CSV
CSV_BYTES = Bound(64 * 2**20, "an hourly series of 100 years is ~10 MB")
CSV_ROWS = Bound(1_000_000, "hourly values (114 years)")

# --------------------------------------------------------------------------------------- trace
TRACE_HEADER_BYTES = Bound(16 * 2**20, "the header is JSON of the inventory and scenario echo; real ones are < 100 kB")
TRACE_CHANNELS = Bound(100_000, "channels (device x metric)")
TRACE_DEVICES = Bound(10_000, "devices")
TRACE_BATCH_ROWS = Bound(50_000_000, "rows of one record batch (writers flush every second)")
TRACE_BATCH_BYTES = Bound(2 * 2**30, "bytes of one record batch")
TRACE_GZ_BYTES = Bound(4 * 2**30, "a gzip'd trace is decompressed in memory; a day at 20 Hz with 200 channels is ~1 GB")


def check(value: float, bound: Bound) -> str | None:
    """The problem text when ``value`` exceeds ``bound``, else ``None``."""
    if value > bound.value:
        shown = f"{value:,.0f}" if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"
        return f"{shown} is too large: {bound.text()}"
    return None


def at_most(bound: Bound) -> Any:
    """A pydantic validator refusing values above ``bound``, naming the bound and its reason."""

    def _check(v: Any) -> Any:
        if v is not None:
            problem = check(v, bound)
            if problem:
                raise ValueError(problem)
        return v

    return AfterValidator(_check)
