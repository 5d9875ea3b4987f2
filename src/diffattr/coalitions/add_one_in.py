"""Add-one-in coalitions: row ``i`` holds player ``i`` alone.

The design is finite and deterministic: ``n_required == n_players`` masks. ``sample(m)``
returns the first ``min(m, n_players)`` of them, so ``sample(n_required)`` is the whole
design. The empty coalition ``v(empty)`` is the run's ``v0`` and is not part of the
design. The seed is accepted for a uniform interface and ignored.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler


class AddOneInSampler(CoalitionSampler):
    """``n_players`` masks, only entry ``i`` true in row ``i``."""

    name: ClassVar[str] = "add-one-in"

    def __init__(self, n_players: int, seed: int = 0) -> None:
        super().__init__(n_players, seed)
        self.n_required = self.n_players

    def _row(self, r: int) -> np.ndarray:
        mask = np.zeros(self.n_players, dtype=bool)
        mask[r] = True
        return mask
