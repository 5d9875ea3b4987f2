"""Uniform coalitions for Banzhaf values (Wang & Jia 2023, "Data Banzhaf").

Each player is kept independently with probability ``p`` (0.5 by default). With
``p = 0.5`` every subset is equally likely, which is the distribution under which the
maximum-sample-reuse (MSR) estimator and the ±1/2-coded regression estimate Banzhaf
values; other ``p`` give the weighted (p-)Banzhaf semivalue instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, unit_rng
from diffattr.errors import DiffattrError


class UniformSampler(CoalitionSampler):
    """Independent Bernoulli(``p``) membership for every player (uniform when p = 0.5)."""

    name: ClassVar[str] = "uniform"

    def __init__(self, n_players: int, seed: int = 0, p: float = 0.5) -> None:
        super().__init__(n_players, seed)
        try:
            self.p = float(p)
        except (TypeError, ValueError):
            raise DiffattrError(f"uniform sampler p must be a number, got {p!r}") from None
        if not 0.0 < self.p < 1.0:
            raise DiffattrError(f"uniform sampler p must be in (0, 1), got {self.p}")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "p": self.p}

    def _row(self, r: int) -> np.ndarray:
        return unit_rng(self.seed, r).random(self.n_players) < self.p
