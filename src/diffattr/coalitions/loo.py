"""Leave-one-out coalitions: row ``i`` holds every player except player ``i``.

The design is finite and deterministic: ``n_required == n_players`` masks. ``sample(m)``
returns the first ``min(m, n_players)`` of them (rows beyond the design are not
repeated), so ``sample(n_required)`` is the whole design. The full coalition ``v(all)``
is the run's ``v1`` and is not part of the design. The seed is accepted for a uniform
interface and ignored.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler


class LeaveOneOutSampler(CoalitionSampler):
    """``n_players`` masks, all true except entry ``i`` in row ``i``."""

    name: ClassVar[str] = "loo"

    def __init__(self, n_players: int, seed: int = 0) -> None:
        super().__init__(n_players, seed)
        self.n_required = self.n_players

    def _row(self, r: int) -> np.ndarray:
        mask = np.ones(self.n_players, dtype=bool)
        mask[r] = False
        return mask
