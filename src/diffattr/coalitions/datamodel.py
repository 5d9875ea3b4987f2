"""Fixed-fraction random subsets, the training sets of datamodels (Ilyas et al. 2022).

Every coalition keeps exactly ``floor(alpha * n)`` players, uniform over such subsets
(Ilyas et al. 2022 train on random ``alpha``-fractions of the training set; the paper's
LDS test subsets, digest §5.1, use the same distribution). The floor is taken in exact
rational arithmetic on the decimal ``alpha`` as written (``alpha = 0.57``, ``n = 100``
keeps 57 players; the binary float ``0.57 * 100`` is ``56.99999999999999``), see
:func:`kept_players`.

``replace=False`` (default) draws distinct subsets (``diffattr.coalitions.base.DistinctRows``:
a simple random sample of the ``C(n, size)`` subsets, still uniform), so no job repeats;
``replace=True`` gives i.i.d. draws.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, DistinctRows, uniform_subset, unit_rng
from diffattr.errors import DiffattrError


def kept_players(alpha: float, n_players: int) -> int:
    """``floor(alpha * n_players)`` with ``alpha`` read as the decimal it prints as.

    ``Fraction(repr(alpha))`` is the shortest decimal that round-trips to the float (what a
    user wrote in a config file), so the product is exact: ``kept_players(0.57, 100) == 57``.
    """
    return math.floor(Fraction(repr(float(alpha))) * int(n_players))


class DatamodelSampler(CoalitionSampler):
    """Uniform subsets of size ``floor(alpha * n_players)``, which must be in ``1 .. n-1``."""

    name: ClassVar[str] = "datamodel"
    min_players: ClassVar[int] = 2

    def __init__(
        self, n_players: int, seed: int = 0, alpha: float = 0.5, replace: bool = False
    ) -> None:
        super().__init__(n_players, seed)
        try:
            self.alpha = float(alpha)
        except (TypeError, ValueError):
            raise DiffattrError(f"datamodel alpha must be a number, got {alpha!r}") from None
        if not math.isfinite(self.alpha):
            raise DiffattrError(f"datamodel alpha must be a finite number, got {alpha!r}")
        self.size = kept_players(self.alpha, self.n_players)
        if not 1 <= self.size <= self.n_players - 1:
            raise DiffattrError(
                f"datamodel alpha={self.alpha} keeps floor(alpha*n)={self.size} of "
                f"{self.n_players} players; it must keep between 1 and {self.n_players - 1}"
            )
        self.replace = bool(replace)
        n, k = self.n_players, self.size
        self._distinct = DistinctRows(
            self.seed, math.comb(n, k), lambda rng: uniform_subset(rng, n, k), "datamodel"
        )
        self.max_rows = None if self.replace else self._distinct.capacity

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "alpha": self.alpha,
            "size": self.size,
            "replace": self.replace,
        }

    def _row(self, r: int) -> np.ndarray:
        if not self.replace:
            return self._distinct.row(r)
        return uniform_subset(unit_rng(self.seed, r), self.n_players, self.size)
