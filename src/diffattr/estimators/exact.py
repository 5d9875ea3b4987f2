"""Exact Shapley and Banzhaf values by full enumeration of the ``2^n`` coalitions.

Shapley (1953): ``phi_i = sum_{S ⊆ N \\ {i}} |S|! (n-|S|-1)! / n! (v(S ∪ {i}) - v(S))``.
Banzhaf (Banzhaf 1965; as a data value, Wang & Jia 2023):
``phi_i = 2^{-(n-1)} sum_{S ⊆ N \\ {i}} (v(S ∪ {i}) - v(S))``.

Both are computed from a table of ``v`` indexed by the subset code (bit ``i`` set when
player ``i`` is in the coalition) in ``O(n 2^n)``. Feasible for ``n`` up to about 20.
The estimators use the same functions when a table holds every subset of its players:
such a table gives exact values (standard error 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import MAX_EXACT_PLAYERS


def all_subsets(n: int) -> np.ndarray:
    """Every subset of ``n`` players as a ``(2^n, n)`` bool array; row ``c`` has code ``c``."""
    _check_n(n)
    codes = np.arange(1 << n, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise DiffattrError(f"number of players must be a positive integer, got {n!r}")
    if n > MAX_EXACT_PLAYERS:
        raise DiffattrError(
            f"exact values enumerate 2^n coalitions; n={n} > {MAX_EXACT_PLAYERS} is too many"
        )


def _popcount(codes: np.ndarray, n: int) -> np.ndarray:
    pc = np.zeros(codes.shape, dtype=np.int64)
    for b in range(n):
        pc += (codes >> b) & 1
    return pc


def _n_from_table(table: np.ndarray) -> int:
    size = table.shape[0]
    n = size.bit_length() - 1
    if n < 1 or size != 1 << n:
        raise DiffattrError(f"a full table has 2^n rows; got {size}")
    return n


def _marginal_sums(table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_{S not containing i} weights[|S|] (v(S+i) - v(S))`` for every ``i``."""
    n = _n_from_table(table)
    codes = np.arange(1 << n, dtype=np.int64)
    pc = _popcount(codes, n)
    out = np.zeros((n,) + table.shape[1:], dtype=np.float64)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        diff = table[without | (1 << i)] - table[without]
        out[i] = np.tensordot(weights[pc[without]], diff, axes=(0, 0))
    return out


def shapley_weights(n: int) -> np.ndarray:
    """``w[s] = s! (n-s-1)! / n! = 1 / (n C(n-1, s))`` for ``s = 0 .. n-1``."""
    return np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])


def shapley_from_table(table: np.ndarray) -> np.ndarray:
    """Exact Shapley values from ``v`` for every subset code: ``(2^n[, K]) -> (n[, K])``."""
    table = np.asarray(table, dtype=np.float64)
    n = _n_from_table(table)
    return _marginal_sums(table, shapley_weights(n))


def banzhaf_from_table(table: np.ndarray) -> np.ndarray:
    """Exact Banzhaf values from ``v`` for every subset code: ``(2^n[, K]) -> (n[, K])``."""
    table = np.asarray(table, dtype=np.float64)
    n = _n_from_table(table)
    return _marginal_sums(table, np.full(n, 0.5 ** (n - 1)))


def _evaluate_all(v: Callable[[np.ndarray], float], n: int, vectorized: bool) -> np.ndarray:
    masks = all_subsets(n)
    if vectorized:
        vals = np.asarray(v(masks), dtype=np.float64).reshape(-1)
        if vals.shape[0] != masks.shape[0]:
            raise DiffattrError(f"v returned {vals.shape[0]} values for {masks.shape[0]} masks")
    else:
        vals = np.array([float(v(m)) for m in masks], dtype=np.float64)
    if not np.isfinite(vals).all():
        raise DiffattrError("v returned a non-finite value")
    return vals


def exact_shapley(v: Callable[[np.ndarray], float], n: int, vectorized: bool = False) -> np.ndarray:
    """Exact Shapley values of the game ``v`` on ``n`` players (``2^n`` calls of ``v``).

    ``v`` maps an ``(n,)`` bool mask to a number, or with ``vectorized=True`` a
    ``(B, n)`` bool array to ``(B,)`` numbers.
    """
    return shapley_from_table(_evaluate_all(v, n, vectorized))


def exact_banzhaf(v: Callable[[np.ndarray], float], n: int, vectorized: bool = False) -> np.ndarray:
    """Exact Banzhaf values of the game ``v`` on ``n`` players (``2^n`` calls of ``v``)."""
    return banzhaf_from_table(_evaluate_all(v, n, vectorized))
