"""Shapley-kernel coalitions for KernelSHAP (Lundberg & Lee 2017; Covert & Lee 2021).

The Shapley kernel puts mass on a coalition ``S`` with ``0 < |S| < n`` proportional to
``(n - 1) / (C(n, |S|) |S| (n - |S|))``. Sampling first draws the size ``s`` with
``P(s) ∝ (n - 1) / (s (n - s))`` and then a uniform subset of that size, which gives the
same distribution. Rows drawn this way enter the KernelSHAP regression with weight 1
(Covert & Lee 2021, eq. 7). The empty and the full coalition carry no information under
the kernel (their weight is the efficiency constraint), so they are never drawn.

``paired=True`` is Covert & Lee's paired sampling: row ``2j`` is a kernel draw and row
``2j + 1`` its complement, which cancels much of the variance of the estimate.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, uniform_subset, unit_rng
from diffattr.errors import DiffattrError


def shapley_kernel_size_probs(n: int) -> np.ndarray:
    """``P(s)`` for ``s = 1 .. n-1`` (index ``s - 1``): proportional to ``(n-1)/(s(n-s))``."""
    s = np.arange(1, n, dtype=np.float64)
    w = (n - 1) / (s * (n - s))
    return w / w.sum()


class ShapleyKernelSampler(CoalitionSampler):
    """Coalitions from the Shapley kernel; ``paired=True`` interleaves complements.

    Needs ``n_players >= 2`` (with one player there is no coalition strictly between the
    empty and the full one).
    """

    name: ClassVar[str] = "shapley-kernel"
    min_players: ClassVar[int] = 2

    def __init__(self, n_players: int, seed: int = 0, paired: bool = False) -> None:
        super().__init__(n_players, seed)
        if not isinstance(paired, (bool, np.bool_)):
            raise DiffattrError(
                f"shapley-kernel sampler paired must be true or false, got {paired!r}"
            )
        self.paired = bool(paired)
        self.size_probs = shapley_kernel_size_probs(self.n_players)
        self._cdf = np.cumsum(self.size_probs)
        self._cdf[-1] = 1.0

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "paired": self.paired}

    def _draw(self, unit: int) -> np.ndarray:
        rng = unit_rng(self.seed, unit)
        s = int(np.searchsorted(self._cdf, rng.random(), side="right")) + 1
        s = min(s, self.n_players - 1)
        return uniform_subset(rng, self.n_players, s)

    def _row(self, r: int) -> np.ndarray:
        if not self.paired:
            return self._draw(r)
        mask = self._draw(r // 2)
        return mask if r % 2 == 0 else ~mask

    def rows(self, start: int, stop: int) -> np.ndarray:
        if not self.paired:
            return super().rows(start, stop)
        start, stop = int(start), int(stop)
        out = np.zeros((max(stop - start, 0), self.n_players), dtype=bool)
        cached: tuple[int, np.ndarray] | None = None
        for k, r in enumerate(range(start, stop)):
            if cached is None or cached[0] != r // 2:
                cached = (r // 2, self._draw(r // 2))
            out[k] = cached[1] if r % 2 == 0 else ~cached[1]
        return out
