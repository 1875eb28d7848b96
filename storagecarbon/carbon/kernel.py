"""The one carbon kernel: energy model, SCI shares, flash wear, operational carbon.

Every formula of the accounting lives here, written over numpy arrays that broadcast: a scalar
per device (``attribute``, one run), ``[phase, draw]`` cells, or ``[configuration, draw]`` arrays
(``plan``). Nothing here reads files or knows where the numbers came from; missing inputs are the
caller's business (they never reach these functions as 0). docs/methodology.md states each one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .sampling import J_PER_KWH, SECONDS_PER_YEAR

UNIT_KINDS = ("gpu", "host", "cpu")          # charged as whole units in both scopes
CAPACITY_KINDS = ("dram", "ssd", "hdd")      # charged whole (dedicated) or by occupancy (shared)
Scope = Literal["dedicated", "shared"]
Allocation = Literal["time", "wear", "max"]
DAY_S = 86400.0


def held_units_s(kind: str, scope: str, count: float | np.ndarray, share: float, time_s, occupied_units_s):
    """Unit-seconds of a device the run is charged for (the SCI resource share x time reserved).

    Unit devices (GPU, host, CPU) and, under ``dedicated`` scope, capacity devices: every unit
    for the run's time, times the scenario's resource ``share``; capacity devices under ``shared``
    scope: the unit-seconds occupied (resident bytes / capacity), ``None`` when there is no
    occupancy reading.
    """
    if kind in CAPACITY_KINDS and scope == "shared":
        return occupied_units_s
    return count * share * np.asarray(time_s, dtype=np.float64)


def idle_energy_j(idle_w, held_units_s):
    """Idle (baseline) energy: idle power per unit x unit-seconds held."""
    return idle_w * held_units_s


def dynamic_energy_j(dyn_w, busy_s, share: float = 1.0):
    """Activity energy: (active - idle) power x unit-seconds busy x resource share."""
    return dyn_w * busy_s * share


def average_energy_j(avg_w, held_units_s):
    """One average power per unit (per GB for CCF's per-capacity coefficients) x unit-seconds held."""
    return avg_w * held_units_s


def operational_g(energy_j, ci_g_per_kwh, pue):
    """O = E x I x PUE (E in J, I in gCO2e/kWh)."""
    return energy_j / J_PER_KWH * (ci_g_per_kwh * pue)


def time_share_g(units_s, te_g, life_s):
    """SCI embodied share: TE x (unit-seconds held / lifetime)."""
    return units_s * te_g / life_s


def wear_g(written_b, te_g, tbw_b):
    """Flash wear share: TE x bytes written / rated endurance (reads never wear)."""
    return written_b * te_g / tbw_b


def allocate(time_g, wear_g_, policy: str, rated: bool, phase_axis: int | None = None):
    """Embodied charge under the allocation policy, and where wear beat time (per draw).

    ``time``: time share; ``wear``: wear share for rated flash, time share for everything else;
    ``max``: per draw, the larger of the device's two totals (summed over ``phase_axis``).
    """
    if policy == "time" or not rated:
        return time_g, np.zeros(np.shape(time_g)[-1:], dtype=bool)
    if policy == "wear":
        return wear_g_, np.ones(np.shape(time_g)[-1:], dtype=bool)
    if phase_axis is None:
        won = wear_g_ > time_g
        return np.where(won, wear_g_, time_g), won
    won = np.sum(wear_g_, axis=phase_axis) > np.sum(time_g, axis=phase_axis)
    return np.where(np.expand_dims(won, phase_axis), wear_g_, time_g), won


def idle_capacity_share(occupied_units_s: float | None, held_units_s: float | None) -> float | None:
    """Share of the charged unit-seconds the run never occupied (None when either is unknown)."""
    if occupied_units_s is None or held_units_s is None or not held_units_s > 0:
        return None
    return float(min(max(1.0 - occupied_units_s / held_units_s, 0.0), 1.0))


def drive_writes_per_day(written_b: float, capacity_b: float, count: int, duration_s: float) -> float | None:
    """Full-drive writes per day implied by the run (writes spread over ``count`` drives)."""
    if not (capacity_b > 0 and duration_s > 0 and count > 0):
        return None
    return written_b / (capacity_b * count) / (duration_s / DAY_S)


def rated_dwpd(tbw_b: float, capacity_b: float, rating_years: float) -> float:
    """A TBW rating as drive writes per day over its rating period."""
    return tbw_b / capacity_b / (rating_years * 365.0)


def implied_lifetime_years(tbw_b: float, written_b: float, count: int, duration_s: float) -> float | None:
    """Years until the rated endurance is written at the run's write rate (None: no writes)."""
    if not (written_b > 0 and duration_s > 0):
        return None
    per_drive_per_s = written_b / max(count, 1) / duration_s
    return tbw_b / per_drive_per_s / SECONDS_PER_YEAR


def recompute_saved_j(hit_tokens, prefill_energy_j, computed_prefill_tokens):
    """Prefill energy avoided by KV hits: hit tokens x the run's prefill energy per computed token."""
    return hit_tokens * prefill_energy_j / computed_prefill_tokens
