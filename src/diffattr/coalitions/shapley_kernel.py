"""Shapley-kernel coalitions for KernelSHAP (Lundberg & Lee 2017; Covert & Lee 2021).

The Shapley kernel puts mass on a coalition ``S`` with ``0 < |S| < n`` proportional to
``(n - 1) / (C(n, |S|) |S| (n - |S|))``. Sampling first draws the size ``s`` with
``P(s) ∝ (n - 1) / (s (n - s))`` and then a uniform subset of that size, which gives the
same distribution. Rows drawn this way enter the KernelSHAP regression with weight 1
(Covert & Lee 2021, eq. 7). The empty and the full coalition carry no information under
the kernel (their weight is the efficiency constraint), so they are never drawn.

``paired=True`` is Covert & Lee's paired sampling: row ``2j`` is a kernel draw and row
``2j + 1`` its complement, which cancels much of the variance of the estimate.

``replace=False`` (default) draws without replacement, so no coalition (no pair) is drawn
twice and every row is a distinct job: a draw that repeats an earlier one is redrawn
within its size class, and a size class (``k = min(|S|, n - |S|)`` for pairs) whose
coalitions are all drawn is closed, its probability going to the open ones. Within a class
every coalition keeps the same inclusion probability, so KernelSHAP post-stratifies the
rows by class (weight = the class's kernel mass over its number of rows;
``diffattr.estimators.kernel_rows.leverage_weights``), which is exact when a class is
complete and consistent in general. ``replace=True`` is the paper's i.i.d. design (weight
1 per row, Covert & Lee 2021, eq. 7); at ``n = 10`` about 26 of 32 pairs are distinct.
Row ``r`` still depends only on ``(seed, r)``: the stream is deterministic and a prefix
of any longer one.
"""

from __future__ import annotations

import math
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

    def __init__(
        self, n_players: int, seed: int = 0, paired: bool = False, replace: bool = False
    ) -> None:
        super().__init__(n_players, seed)
        for name, value in (("paired", paired), ("replace", replace)):
            if not isinstance(value, (bool, np.bool_)):
                raise DiffattrError(
                    f"shapley-kernel sampler {name} must be true or false, got {value!r}"
                )
        self.paired = bool(paired)
        self.replace = bool(replace)
        n = self.n_players
        self.size_probs = shapley_kernel_size_probs(n)
        self._cdf = np.cumsum(self.size_probs)
        self._cdf[-1] = 1.0
        # without replacement: the units drawn so far (packed bits), the set of those seen
        # per class, and each class's capacity (class = size, or min(size, n - size) pairs)
        self._drawn: list[np.ndarray] = []
        self._seen: dict[int, set[bytes]] = {}
        sizes = np.arange(1, n)
        if self.paired:
            classes = np.minimum(sizes, n - sizes)
            cap = {int(k): math.comb(n, int(k)) // (2 if 2 * k == n else 1) for k in classes}
        else:
            classes = sizes
            cap = {int(s): math.comb(n, int(s)) for s in sizes}
        self._class_of_size = dict(zip(sizes.tolist(), classes.tolist()))
        self._capacity = cap
        self._distinct_rows = (2 if self.paired else 1) * sum(cap.values())
        self.max_rows = None if self.replace else self._distinct_rows

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "paired": self.paired, "replace": self.replace}

    def _draw(self, unit: int) -> np.ndarray:
        rng = unit_rng(self.seed, unit)
        s = int(np.searchsorted(self._cdf, rng.random(), side="right")) + 1
        s = min(s, self.n_players - 1)
        return uniform_subset(rng, self.n_players, s)

    def _draw_distinct(self, unit: int) -> np.ndarray:
        """Unit ``unit``'s mask, drawn without replacement (module doc); units are drawn in
        order, so the stream stays a function of ``(seed, unit)``."""
        n = self.n_players
        while len(self._drawn) <= unit:
            j = len(self._drawn)
            rng = unit_rng(self.seed, j)
            open_sizes = np.array(
                [
                    s
                    for s in range(1, n)
                    if len(self._seen.get(self._class_of_size[s], ()))
                    < self._capacity[self._class_of_size[s]]
                ]
            )
            if open_sizes.size == 0:
                raise DiffattrError(
                    f"the shapley-kernel sampler has drawn all {self._distinct_rows} coalitions of "
                    f"{n} players; there are no more"
                )
            p = self.size_probs[open_sizes - 1]
            cdf = np.cumsum(p / p.sum())
            cdf[-1] = 1.0
            while True:
                s = int(open_sizes[np.searchsorted(cdf, rng.random(), side="right")])
                mask = uniform_subset(rng, n, s)
                cls = self._class_of_size[s]
                # a pair is named by its member holding player 0 (both halves when 2k = n)
                name = np.packbits(mask if (mask[0] or not self.paired) else ~mask).tobytes()
                seen = self._seen.setdefault(cls, set())
                if name not in seen:
                    break
                if len(seen) >= self._capacity[cls]:
                    break  # pragma: no cover - open_sizes excludes closed classes
            seen.add(name)
            self._drawn.append(np.packbits(mask))
        return np.unpackbits(self._drawn[unit], count=n).astype(bool)

    def _unit(self, unit: int) -> np.ndarray:
        return self._draw(unit) if self.replace else self._draw_distinct(unit)

    def _row(self, r: int) -> np.ndarray:
        if not self.paired:
            return self._unit(r)
        mask = self._unit(r // 2)
        return mask if r % 2 == 0 else ~mask

    def rows(self, start: int, stop: int) -> np.ndarray:
        start, stop = int(start), int(stop)
        if self.max_rows is not None:
            stop = min(stop, self.max_rows)
        if not self.paired:
            return super().rows(start, stop)
        out = np.zeros((max(stop - start, 0), self.n_players), dtype=bool)
        cached: tuple[int, np.ndarray] | None = None
        for k, r in enumerate(range(start, stop)):
            if cached is None or cached[0] != r // 2:
                cached = (r // 2, self._unit(r // 2))
            out[k] = cached[1] if r % 2 == 0 else ~cached[1]
        return out
