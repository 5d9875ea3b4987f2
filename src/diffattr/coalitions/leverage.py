"""Leverage-score coalitions for KernelSHAP (Musco & Witter 2025, "Provably Accurate Shapley
Value Estimation via Leverage Score Sampling", ICLR 2025).

Musco & Witter show that the rows of the Shapley-kernel regression have leverage scores
proportional to ``1 / C(n, |S|)``: every coalition size ``s = 1 .. n-1`` carries the same
total leverage, and within a size every subset is equally important. Leverage SHAP samples
coalitions in proportion to those scores, in complementary pairs and without replacement,
and reweights each sampled row by ``kernel weight / inclusion probability``.

This sampler draws such a design as a deterministic stream (row ``r`` depends only on
``(seed, r)``, and ``sample(m)`` is a prefix of ``sample(m2)``):

* rows ``2j`` and ``2j + 1`` are a mask and its complement (pair ``j``); a pair's *class*
  is ``k = min(|S|, n - |S|)``, ``k = 1 .. floor(n/2)``; class ``k`` holds the sizes ``k``
  and ``n - k`` (one size when ``2k = n``), so its leverage mass is proportional to the
  number of sizes it holds (2, or 1 for ``2k = n``);
* pair ``j`` goes to the class with the largest ``mass / (pairs so far + 1/2)``
  (Sainte-Laguë apportionment): after ``U`` pairs every class holds its leverage share of
  ``U`` up to rounding. This is leverage sampling with the class counts stratified instead
  of drawn at random, which can only lower the variance (proportional allocation);
* within its class the pair is drawn without replacement (a pair drawn before is
  skipped; a class whose ``C(n, k)`` pairs are all drawn is closed and its share goes to
  the others). With ``balanced=True`` (default) the first mask of a class-``k`` pair is the
  next block of ``k`` distinct players from a stream of random permutations kept per class
  (``SeedSequence(seed, spawn_key=(1 + class, t))``), so every player is in the class's
  coalitions equally often (up to the permutation in progress and the blocks skipped as
  repeats) — a stratification over players that removes the
  chance imbalance which a size-dependent utility turns into spurious differences between
  players. The design is invariant under relabelling the players, so every coalition of a
  class still has the same inclusion probability and the weights below stay exact. With
  ``balanced=False`` the mask is a uniform draw from ``SeedSequence(seed, spawn_key=(j,))``.

The estimator reweights by post-stratification: a row of class ``k`` that holds ``u_k``
sampled pairs gets weight ``K_k / u_k`` with ``K_k = (n-1) / (k (n-k))`` the kernel mass of
one size (halved for ``2k = n``, whose pairs hold two rows of the same size); see
``diffattr.estimators.kernel_rows.leverage_weights``. A closed class is then weighted
exactly, and a table holding every pair gives exact Shapley values.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.coalitions.base import CoalitionSampler, check_count, uniform_subset, unit_rng
from diffattr.errors import DiffattrError

#: Pair counts above this are not tracked exactly (no stream gets near them).
CAPACITY_CAP = 1 << 62


def pair_classes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes ``k = 1 .. floor(n/2)``, their leverage masses and their numbers of pairs
    (``C(n, k)``, halved for ``2k = n``; capped at ``2^62``)."""
    ks = np.arange(1, n // 2 + 1)
    mass = np.where(2 * ks == n, 1.0, 2.0)
    capacity = np.empty(ks.size, dtype=np.int64)
    comb = 1
    for i, k in enumerate(ks):
        if comb < 4 * CAPACITY_CAP:  # beyond, every later class (halved or not) is capped
            comb = comb * (n - int(k) + 1) // int(k)  # C(n, k) from C(n, k - 1)
        c = comb // 2 if 2 * k == n else comb
        capacity[i] = min(c, CAPACITY_CAP)
    return ks, mass, capacity


class LeverageSampler(CoalitionSampler):
    """Complementary pairs with sizes apportioned by leverage score, without replacement.

    The stream is finite only when it has drawn every one of the ``2^(n-1) - 1`` pairs
    (``max_rows = 2^n - 2``); ``n_required`` stays None (the design is not a fixed list).
    """

    name: ClassVar[str] = "leverage"
    min_players: ClassVar[int] = 2
    paired: bool = True

    def __init__(self, n_players: int, seed: int = 0, balanced: bool = True) -> None:
        super().__init__(n_players, seed)
        n = self.n_players
        self.balanced = bool(balanced)
        self.classes, self.mass, self.capacity = pair_classes(n)
        self.max_rows = (1 << n) - 2  # every pair of the 2^(n-1) - 1 drawn once
        self._firsts: list[np.ndarray] = []  # first row of each pair so far, packed bits
        self._counts = np.zeros(self.classes.size, dtype=np.int64)
        self._seen: list[set[bytes]] = [set() for _ in range(self.classes.size)]
        self._queues = [np.zeros(0, dtype=np.int64) for _ in range(self.classes.size)]
        self._perms = np.zeros(self.classes.size, dtype=np.int64)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "paired": True, "balanced": self.balanced}

    def _block(self, c: int, k: int) -> np.ndarray:
        """The next ``k`` distinct players of class ``c``'s stream of random permutations.

        The stream is a queue: the rest of the current permutation, then the next one. A
        block that runs past the end of a permutation takes the rest of it and then the
        next permutation's players that are not in the block yet; the ones it skipped stay
        at the front of the queue.
        """
        queue = self._queues[c]
        if queue.size >= k:
            block, self._queues[c] = queue[:k], queue[k:]
        else:
            t = int(self._perms[c])
            self._perms[c] += 1
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(1 + c, t)))
            )
            new = rng.permutation(self.n_players)
            in_head = np.isin(new, queue)
            fresh = np.flatnonzero(~in_head)[: k - queue.size]
            j = int(fresh[-1]) + 1 if fresh.size else 0
            block = np.concatenate([queue, new[fresh]])
            self._queues[c] = np.concatenate([new[:j][in_head[:j]], new[j:]])
        mask = np.zeros(self.n_players, dtype=bool)
        mask[block] = True
        return mask

    def _next_pair(self) -> None:
        j = len(self._firsts)
        n = self.n_players
        open_ = self._counts < self.capacity
        if not open_.any():
            raise DiffattrError(
                f"the leverage sampler has drawn all {self.max_rows} coalitions of "
                f"{n} players; there are no more"
            )
        priority = np.where(open_, self.mass / (self._counts + 0.5), -np.inf)
        c = int(np.argmax(priority))  # ties: the smallest class
        k = int(self.classes[c])
        rng = unit_rng(self.seed, j)
        while True:
            mask = self._block(c, k) if self.balanced else uniform_subset(rng, n, k)
            # a pair is named by its member holding player 0 (both halves when 2k = n)
            key = np.packbits(mask if mask[0] else ~mask).tobytes()
            if key not in self._seen[c]:
                break
        self._seen[c].add(key)
        self._counts[c] += 1
        self._firsts.append(np.packbits(mask))

    def _row(self, r: int) -> np.ndarray:
        while len(self._firsts) <= r // 2:
            self._next_pair()
        first = np.unpackbits(self._firsts[r // 2], count=self.n_players).astype(bool)
        return first if r % 2 == 0 else ~first

    def rows(self, start: int, stop: int) -> np.ndarray:
        start = check_count(start, "start", 0)
        stop = min(check_count(stop, "stop", 0), self.max_rows)
        stop = max(stop, start)
        out = np.zeros((stop - start, self.n_players), dtype=bool)
        for i, r in enumerate(range(start, stop)):
            out[i] = self._row(r)
        return out
