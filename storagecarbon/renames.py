"""Field names that were renamed, and the one function that reads a file's old spelling as the new one.

Files written before a rename (calibration files from ``storagecarbon calibrate``, device_db
directories given with ``--db``, scenarios' and sweeps' ``device_overrides``, the scenario echo
inside traces) keep loading: every file schema (:class:`storagecarbon.yamlio.StrictModel`) and the
calibration loader (:func:`storagecarbon.model.constants.load_constants`) pass their mappings
through :func:`upgrade_keys`. Giving a field under both names is refused, so a file never says two
things. New files are written with the new names only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

# old name -> new name. Bandwidths were "gbps", which reads as gigabits per second; they are GB/s.
RENAMED: dict[str, str] = {
    "read_gbps": "read_gb_per_s",
    "write_gbps": "write_gb_per_s",
    "pcie_gbps": "pcie_gb_per_s",
    "kv_offload_gbps": "kv_offload_gb_per_s",
}
OLD_NAME: dict[str, str] = {new: old for old, new in RENAMED.items()}


def upgrade_keys(data: Mapping[str, Any], known: Collection[str]) -> dict[str, Any]:
    """``data`` with every old key whose new name is in ``known`` renamed, order kept.

    Raises ``ValueError`` when a field is given under both its old and its new name.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        new = RENAMED.get(key) if isinstance(key, str) else None
        if new is None or new not in known:
            out[key] = value
            continue
        if new in data:
            raise ValueError(f"{key} and {new} both given: {key} is the old name of {new}; keep only {new}")
        out[new] = value
    return out
