"""Uniform coalitions for Banzhaf values (Wang & Jia 2023, "Data Banzhaf").

Each player is kept independently with probability ``p`` (0.5 by default). With
``p = 0.5`` every subset is equally likely, which is the distribution under which the
maximum-sample-reuse (MSR) estimator and the ±1/2-coded regression estimate Banzhaf
values; other ``p`` give the weighted (p-)Banzhaf semivalue instead.

``replace=False`` (default) draws distinct masks when ``p = 0.5``: a simple random sample
of the ``2^n`` masks, still uniform, so no job repeats. For ``p != 0.5`` the rows stay
i.i.d. (a mask's probability depends on its size there, and rejecting repeats would
change the semivalue's weights).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, DistinctRows, unit_rng
from diffattr.errors import DiffattrError


class UniformSampler(CoalitionSampler):
    """Independent Bernoulli(``p``) membership for every player (uniform when p = 0.5)."""

    name: ClassVar[str] = "uniform"

    def __init__(
        self, n_players: int, seed: int = 0, p: float = 0.5, replace: bool = False
    ) -> None:
        super().__init__(n_players, seed)
        try:
            self.p = float(p)
        except (TypeError, ValueError):
            raise DiffattrError(f"uniform sampler p must be a number, got {p!r}") from None
        if not 0.0 < self.p < 1.0:
            raise DiffattrError(f"uniform sampler p must be in (0, 1), got {self.p}")
        self.replace = bool(replace)
        self.distinct = not self.replace and self.p == 0.5
        n = self.n_players
        self._distinct = DistinctRows(
            self.seed,
            2**n if n < 62 else 1 << 62,
            lambda rng: rng.random(n) < 0.5,
            "uniform",
        )
        self.max_rows = self._distinct.capacity if self.distinct else None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "p": self.p, "replace": self.replace}

    def _row(self, r: int) -> np.ndarray:
        if self.distinct:
            return self._distinct.row(r)
        return unit_rng(self.seed, r).random(self.n_players) < self.p
