"""The keyed sampler bound to a device_db (:class:`World`): one value of every uncertain input per draw.

Streams are keyed by name, so two options (or two configurations) that use the same device see the same
draws; ``compare`` and ``plan`` are paired draw by draw through it.
"""

from __future__ import annotations

import numpy as np

from ..carbon import kernel as ck
from ..carbon.sampling import SECONDS_PER_YEAR, DeviceDraws, KeyedSampler
from ..devicedb import DeviceDB
from ..errors import StoragecarbonError


class World(KeyedSampler):
    """The keyed sampler bound to a device_db: figures by device_db key, grid and PUE by draw index."""

    def __init__(self, db: DeviceDB, draws: int, seed: int = 0) -> None:
        if draws < 1:
            raise StoragecarbonError("draws must be >= 1")
        super().__init__(draws, seed)
        self.db = db

    def key(self, key: str) -> DeviceDraws:
        return self.device(self.db.get(key))

    def ratio(self, key: str, life_years: float | None) -> np.ndarray:
        """Embodied g per unit-second held: TE / lifetime (per draw); 0 where TE is missing (flagged by callers)."""
        kd = self.key(key)
        if kd.te_g is None:
            return np.zeros(self.draws)
        life = kd.life_s if life_years is None else life_years * SECONDS_PER_YEAR
        return ck.time_share_g(1.0, kd.te_g, life)
