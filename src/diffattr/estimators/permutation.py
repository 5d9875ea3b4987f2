"""Permutation-sampling Shapley values (Castro, Gómez & Tejada 2009).

For a uniformly random permutation ``pi``, the marginal contribution of player ``i``,
``v(Pre_i(pi) ∪ {i}) - v(Pre_i(pi))``, has expectation ``phi_i`` (Shapley 1953). Each
permutation gives one such sample for every player, and the samples of one permutation
telescope to ``v1 - v0``, so the estimate is exactly efficient.

The table must hold prefix chains as ``diffattr.coalitions.PermutationSampler`` writes
them: ``n - 1`` consecutive rows with masks of sizes ``1, 2, .., n-1``, each row adding
one player to the previous one; ``v0`` and ``v1`` close the chain. Rows that belong to
no complete chain (including all-0/all-1 rows and a trailing incomplete chain) are
ignored and counted in ``settings["rows_ignored"]``. Row order matters here.

Endpoints (``endpoints``). The first player of a chain gets ``v({i}) - v0`` and the last
``v1 - v(N \\ {i})``, so an endpoint far off the trend of the coalitions (an untrained null
model) is handed to whichever players happen to come first -- the same failure as
KernelSHAP's (``diffattr.estimators.kernel_shap``). With ``"fitted"`` (default) the chains
are read against the endpoints of the rows' trend -- the intercept ``b`` and ``b +
1'beta`` of the kernel-weighted least-squares fit of the chain rows on ``(z, 1)``, rows
post-stratified by size -- and the same constant is then added to every value so that
they sum to ``v1 - v0``. Replacing an endpoint moves every exact Shapley value by the same
amount, so the estimator stays unbiased for any fixed endpoints (exact in the limit); when
the rows cannot identify the trend (fewer than ``n + 1`` distinct rows) the given
endpoints are used and ``settings["endpoints"]`` says so.

Standard error (running): ``std(marginals_i, ddof=1) / sqrt(T)`` over the ``T``
permutations (NaN for ``T = 1``); ``n_bootstrap > 0`` bootstraps over permutations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.kernel_rows import leverage_weights
from diffattr.estimators.linalg import Solver
from diffattr.estimators.settings import PermutationShapleySettings
from diffattr.estimators.table import CoalitionTable


def find_chains(z: np.ndarray, chunk_rows: int = 4096) -> np.ndarray:
    """Start rows of complete prefix chains (sizes ``1..n-1``, growing by one player)."""
    m, n = z.shape
    length = n - 1
    if length < 1 or m < length:
        return np.zeros(0, dtype=np.int64)
    sizes = z.sum(axis=1)
    grows = np.zeros(m, dtype=bool)
    for s in range(1, m, chunk_rows):
        e = min(s + chunk_rows, m)
        lost = (z[s - 1 : e - 1] & ~z[s:e]).any(axis=1)
        grows[s:e] = (sizes[s:e] == sizes[s - 1 : e - 1] + 1) & ~lost
    # a chain starting at r needs sizes[r] == 1 and grows[r+1 .. r+length-1] all true
    bad = np.concatenate([[0], np.cumsum(~grows)])
    starts = np.flatnonzero(sizes[: m - length + 1] == 1)
    ok = (bad[starts + length] - bad[starts + 1]) == 0
    return starts[ok]


def chain_marginals(
    z: np.ndarray, y: np.ndarray, starts: np.ndarray, v0: np.ndarray, v1: np.ndarray
) -> np.ndarray:
    """Marginal contributions ``(T, K, n)``: ``[t, k, i]`` is player ``i``'s in chain ``t``."""
    n = z.shape[1]
    k = y.shape[1]
    out = np.empty((starts.size, k, n))
    for t, s in enumerate(starts):
        block = z[s : s + n - 1]
        position = n - block.sum(axis=0)  # 1-based position of each player in the permutation
        seq = np.vstack([v0[None, :], y[s : s + n - 1], v1[None, :]])  # values of prefixes 0..n
        diffs = np.diff(seq, axis=0)  # (n, K): contribution of the player at position p
        out[t] = diffs[position - 1].T
    return out


def trend_endpoints(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(b, b + 1'beta)`` of the least-squares fit ``y ≈ b + z'beta`` with rows weighted by
    the Shapley kernel over their size's frequency (post-stratified), or None when the rows
    do not identify it."""
    n = z.shape[1]
    if z.shape[0] < n + 1:
        return None
    w, _ = leverage_weights(z, paired=False)
    d = np.hstack([z.astype(np.float64), np.ones((z.shape[0], 1))])
    dw = d * w[:, None]
    solver = Solver(dw.T @ d)
    if not solver.identified:
        return None
    theta = solver.solve(dw.T @ y)
    return theta[n], theta[n] + theta[:n].sum(axis=0)


class PermutationShapley(Estimator):
    """Permutation-sampling Shapley values; registry name ``permutation-shapley``.

    Settings: :class:`~diffattr.estimators.settings.PermutationShapleySettings`
    (``n_bootstrap``/``seed``: bootstrap over permutations instead of the running standard
    error; ``use_exact``). Needs ``v0`` and ``v1`` and one complete chain (``n - 1`` rows);
    the standard error needs two.
    """

    settings_class = PermutationShapleySettings
    needs_v0 = True
    needs_v1 = True
    exact_kind = "shapley"

    def min_rows(self, n_players: int) -> int:
        return max(n_players - 1, 0)

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        assert v0 is not None and v1 is not None
        z, y = table.masks, table.values
        m, n = z.shape
        if n == 1:
            vals = (v1 - v0)[:, None]
            return Fit(vals, np.full_like(vals, np.nan), {"permutations": 0})
        starts = find_chains(z)
        if starts.size == 0:
            raise DiffattrError(
                f"no complete permutation chain in the table: permutation-shapley needs "
                f"{n - 1} consecutive rows with coalition sizes 1..{n - 1}, each adding one "
                "player (as the 'permutation' sampler writes them)"
            )
        t = starts.size
        info: dict[str, Any] = {"permutations": t, "rows_ignored": int(m - t * (n - 1))}
        e0, e1 = v0, v1
        if self.settings.endpoints == "fitted":
            rows = (starts[:, None] + np.arange(n - 1)).reshape(-1)
            trend = trend_endpoints(z[rows], y[rows])
            if trend is None:
                info["endpoints"] = "given (the rows cannot identify a trend)"
            else:
                e0, e1 = trend
                info["endpoints"] = "fitted"
                info["fitted_v0"], info["fitted_v1"] = e0.tolist(), e1.tolist()
        else:
            info["endpoints"] = "given"
        marg = chain_marginals(z, y, starts, e0, e1)
        # the endpoint shift: every value moves by the same constant (exact values would)
        marg += ((v1 - v0) - (e1 - e0))[None, :, None] / n
        vals = marg.mean(axis=0)
        if self.settings.n_bootstrap > 0 and t >= 2:
            se = bootstrap_std(
                lambda idx: marg[idx].mean(axis=0),
                t,
                self.settings.n_bootstrap,
                self.settings.seed,
                vals.shape,
            )
            info["stderr_method"] = "bootstrap"
        elif t >= 2:
            se = marg.std(axis=0, ddof=1) / np.sqrt(t)
            info["stderr_method"] = "running"
        else:
            se = np.full(vals.shape, np.nan)
            info["stderr_method"] = "none: one permutation"
        return Fit(vals, se, info)
