"""Prefix chains of random permutations, for permutation-sampling Shapley values.

Permutation ``j`` (drawn from ``SeedSequence(seed, spawn_key=(j,))``) contributes the
``n - 1`` rows ``j*(n-1) .. j*(n-1) + n-2``: the masks of its prefixes of sizes
``1 .. n-1``. The empty and the full prefix are ``v0`` and ``v1`` of the run and are not
repeated per permutation. Consecutive rows of a chain grow by exactly one player, which
is how the permutation estimator reads the permutation back from a table (Castro et
al. 2009; the marginal contribution of the player added at each step is one sample of
its Shapley value). A prefix of ``sample(m)`` may end inside a chain; the estimator uses
complete chains only, so choose ``m`` as a multiple of ``rows_per_permutation``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, check_count, unit_rng


class PermutationSampler(CoalitionSampler):
    """Rows are prefix masks (sizes 1 .. n-1) of successive random permutations."""

    name: ClassVar[str] = "permutation"
    min_players: ClassVar[int] = 2

    @property
    def rows_per_permutation(self) -> int:
        return self.n_players - 1

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "rows_per_permutation": self.rows_per_permutation}

    def permutation(self, j: int) -> np.ndarray:
        """The ``j``-th permutation of the players."""
        return unit_rng(self.seed, j).permutation(self.n_players)

    def sample_permutations(self, n_permutations: int) -> np.ndarray:
        """The rows of the first ``n_permutations`` complete chains."""
        k = check_count(n_permutations, "n_permutations", 0)
        return self.rows(0, k * self.rows_per_permutation)

    def _row(self, r: int) -> np.ndarray:
        j, k = divmod(r, self.rows_per_permutation)
        mask = np.zeros(self.n_players, dtype=bool)
        mask[self.permutation(j)[: k + 1]] = True
        return mask

    def rows(self, start: int, stop: int) -> np.ndarray:
        start = check_count(start, "start", 0)
        stop = max(check_count(stop, "stop", 0), start)
        out = np.zeros((stop - start, self.n_players), dtype=bool)
        per = self.rows_per_permutation
        r = start
        while r < stop:
            j, k = divmod(r, per)
            perm = self.permutation(j)
            mask = np.zeros(self.n_players, dtype=bool)
            mask[perm[:k]] = True
            while k < per and r < stop:
                mask[perm[k]] = True
                out[r - start] = mask
                k += 1
                r += 1
        return out
