"""KernelSHAP in closed form (Lundberg & Lee 2017; Covert & Lee 2021; paper Eq. 5).

Shapley values solve the weighted least-squares problem
``min_phi sum_S mu(S) (v(S) - v0 - z_S'phi)^2`` subject to ``1'phi = v1 - v0`` over the
coalitions ``0 < |S| < n``, with the Shapley kernel ``mu(S) = (n-1) / (C(n,|S|) |S| (n-|S|))``
(Charnes et al. 1988; Lundberg & Lee 2017). A sample of rows ``z_r`` with weights
``w_r`` (summing to 1) estimates it; Covert & Lee (2021, eq. 7) give the solution

    A = sum_r w_r z_r z_r',   b = sum_r w_r z_r (y_r - v0),
    phi = A^{-1} (b - 1 (1'A^{-1} b - v1 + v0) / (1'A^{-1} 1)).

Weights follow the sampler in the estimator's settings:

* ``shapley-kernel`` rows drawn i.i.d. from the kernel itself (``replace = true``) weigh
  ``1/M`` each (Covert & Lee 2021, eq. 7); drawn without replacement (the default), they
  are post-stratified by size class like leverage rows (inclusion is uniform within a
  class, not across classes);
* ``leverage`` rows (Musco & Witter 2025; ``diffattr.coalitions.LeverageSampler``) are
  post-stratified by class: :func:`leverage_weights`.

Weight 1 is right only for rows drawn from the kernel, so a table must be fitted with the
sampler that drew it (the estimator's ``sampler`` setting; ``diffattr estimate
--sampler``): kernel weights on leverage rows over-weight the middle sizes and are biased.
(Post-stratified weights would also be consistent on kernel rows, which are uniform within
a size; ``shapley`` keeps Covert & Lee's weights for them, as the paper does.)

Rows whose mask is empty or full are excluded (the kernel gives them no weight: they
enter only through the constraint).

Endpoints (``endpoints``). ``"given"`` is the fit above: the constraint carries the true
``v0`` and ``v1``. With sampled rows, ``d phi / d v0 = -u`` with ``u = A^{-1} 1 / (1'A^{-1}
1)``, whose entries are ``1/n`` only in the limit; at ``n = 10`` and ``M = 64`` they spread
over more than their own size, so a ``v0`` (or ``v1``) far off the trend of the sampled
coalitions -- an untrained null model -- hands its gap to players at random.
``"fitted"`` (an endpoint control variate) fits the kernel-weighted regression with a free
intercept and no constraint, ``min_{phi, b} sum_r w_r (y_r - b - z_r'phi)^2``, i.e. with
both endpoints on the trend of the rows, then adds the same constant to every ``phi_i`` so
that ``sum phi = v1 - v0`` holds exactly with the true endpoints. The limit is unchanged:
over every coalition the free fit is the constrained one at the best endpoints ``(b, b +
1'phi)`` (Charnes et al. 1988), i.e. the exact Shapley values of the game with ``v(∅)`` and
``v(N)`` replaced, and replacing an endpoint moves every exact ``phi_i`` by the same amount
(``v(∅)`` enters every player's marginal at ``S = ∅`` with weight ``1/n``), which the shift
puts back. On a complete table it equals the exact values for any endpoints. It needs one
more direction than ``"given"``: ``n`` distinct pairs (``n + 1`` unpaired rows).

Identification. The constrained problem has one solution iff the rows and the all-ones
vector span R^n (``rank [Z; 1'] = n``). ``A`` is replaced by ``A + c 1 1'``, which leaves
the solution unchanged on ``1'phi = v1 - v0`` and is positive definite exactly when the
problem is identified; it is factored by Cholesky (with a LAPACK condition estimate) or,
when that is ill-conditioned, by an eigendecomposition that gives its rank. A rank below
``n`` is an error naming the rank and how many coalitions to sample — never a silent
pseudo-inverse. With paired rows every pair adds one direction besides ``1``, so
``n - 1`` distinct pairs (``2(n-1)`` rows) are needed; unpaired rows need ``n - 1``.
``settings`` records ``solver``, ``rank`` and ``identified`` for every fit.

Pairs (Covert & Lee 2021, paired sampling): rows of a pair are a mask and its complement.
They come from the table's ``pair_ids`` (rows sharing an id), or, without ids, from
consecutive complementary rows (the order paired samplers write). A row whose partner is
missing (a failed job, a row dropped because it equals an LDS test mask) is dropped too,
and the rest of the table stays paired (``rows_unpaired_dropped``). ``paired="auto"``
uses pairs when ``pair_ids`` are given or when consecutive complementary rows make up at
least 3/4 of the usable rows; ``True`` requires pairs; ``False`` treats rows as
independent.

Standard errors (default: closed form). Linearising eq. 7 around its limit gives
``phi_hat - phi ≈ C sum_u g_u`` with ``g_u = sum_{r in u} w_r z_r (y_r - v0 - z_r'phi)``
over sampling units ``u`` (rows, or pairs) and ``C = A^{-1} - A^{-1} 1 1' A^{-1} /
(1'A^{-1} 1)`` — the sandwich form Covert & Lee (2021, Sec. 4) use. ``Var(sum_u g_u)`` is
estimated as if the ``U`` units were drawn with replacement (Hansen–Hurwitz), which for
leverage rows ignores the stratification and is conservative, and scaled by
``U / (U - q)`` for the ``q`` fitted directions (``n - 1``; with fitted endpoints ``n +
1``, or ``n`` for pairs, whose intercept only fits the pair sums; their ``C`` is ``P
G^{-1}`` restricted to the players, ``G`` the Gram matrix of ``(z, 1)`` and ``P = I - 1
1'/n`` the shift). Rule: the residual degrees of freedom are the
*distinct* sampling units minus ``q``; below :data:`MIN_RESIDUAL_DOF` the residuals cannot
support a variance estimate (with one or two they are often exactly zero, and a repeated
unit adds nothing), so the standard error is NaN and ``stderr_method`` says why.
``n_bootstrap > 0`` replaces the closed form by a bootstrap over units; ``stderr=False``
skips standard errors (NaN) — the closed form costs about as much as the point estimate
for large ``n``.

Large tables: with uniform weights ``Z'Z`` is accumulated chunk by chunk with BLAS
``syrk`` on 0/1 float32 blocks, which is exact while ``M < 2^24`` (counts are integers),
then held in float64; with paired rows only the first row of each pair enters the product
(``kernel_gram``). Weighted rows use float64 ``syrk`` on ``sqrt(w) z``.
"""

from __future__ import annotations

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.kernel_rows import (
    KernelRows,
    dropped_note,
    fitted_directions,
    kernel_rows,
    leverage_weights,
    not_identified,
    residual_dof,
    weighted_gram,
    weighted_zt_y,
    weighting_of,
    with_intercept,
)
from diffattr.estimators.linalg import (
    MIN_RESIDUAL_DOF,
    ConstrainedSolution,
    constrained_solve,
    efficient,
    free_solve,
    sandwich_variance,
)
from diffattr.estimators.settings import ShapleySettings
from diffattr.estimators.table import CoalitionTable


class KernelShap(Estimator):
    """KernelSHAP closed form (Covert & Lee 2021, eq. 7); registry name ``shapley``.

    Settings: :class:`~diffattr.estimators.settings.ShapleySettings`. Needs ``v0`` and
    ``v1``; identified from ``2(n-1)`` paired rows or ``n-1`` unpaired ones (module doc).
    """

    settings_class = ShapleySettings
    needs_v0 = True
    needs_v1 = True
    exact_kind = "shapley"
    settings: ShapleySettings

    def min_rows(self, n_players: int) -> int:
        if n_players <= 1:
            return 0
        paired = self.settings.paired is True or (
            self.settings.paired == "auto" and self.settings.sampler.is_paired
        )
        if self.settings.endpoints == "given":  # n unknowns, one constraint
            return 2 * (n_players - 1) if paired else n_players - 1
        # n + 1 unknowns, no constraint: a pair adds one direction beside the pair sums'
        return 2 * n_players if paired else n_players + 1

    def _rows(self, table: CoalitionTable, v0: np.ndarray) -> KernelRows:
        return kernel_rows(
            table, v0, self.settings.paired, weighting_of(self.settings), self.settings.chunk_rows
        )

    def _solve(self, rows: KernelRows, totals: np.ndarray) -> ConstrainedSolution:
        """The fit of eq. 7 (``endpoints="given"``) or the free fit with an intercept as the
        last entry (``"fitted"``; module doc); ``theta[:n]`` are the raw player values."""
        chunk = self.settings.chunk_rows
        a = weighted_gram(rows.z, rows.w, rows.paired, chunk)
        b = weighted_zt_y(rows.z, rows.y, rows.w, chunk)
        if self.settings.endpoints == "given":
            return constrained_solve(a, b, totals, overwrite_a=True)
        g, rhs = with_intercept(a, b, rows, chunk)
        del a
        return free_solve(g, rhs, rows.z.shape[1], overwrite_a=True)

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        assert v0 is not None and v1 is not None
        n, k = table.n_players, table.n_behaviors
        totals = v1 - v0
        if n == 1:
            vals = totals[:, None].copy()
            info = {"rows_used": 0, "solver": "none (one player)", "rank": 1, "identified": True}
            return Fit(vals, np.full_like(vals, np.nan), info)
        rows = self._rows(table, v0)
        info = dict(rows.info)
        m = rows.z.shape[0]
        fitted = self.settings.endpoints == "fitted"
        p = n + 1 if fitted else n
        if m == 0:
            raise not_identified(0, n, 1, self.min_rows(n), rows.paired, dropped_note(info), p)
        sol = self._solve(rows, totals)
        info.update(rows_used=m, solver=sol.solver.method, rank=sol.solver.rank)
        info["identified"] = sol.solver.identified
        info["endpoints"] = self.settings.endpoints
        if not sol.solver.identified:
            raise not_identified(
                m, n, sol.solver.rank, self.min_rows(n), rows.paired, dropped_note(info), p
            )
        phi = efficient(sol.theta[:n], totals)
        if fitted:
            # the fitted endpoints, as values of the empty and the full coalition
            info["fitted_v0"] = (sol.theta[n] + v0).tolist()
            info["fitted_v1"] = (sol.theta[n] + sol.theta[:n].sum(axis=0) + v0).tolist()
        if self.settings.n_bootstrap > 0:
            se = self._bootstrap(rows, totals, k, n)
            info["stderr_method"] = "bootstrap"
        elif self.settings.stderr:
            se, info["stderr_method"] = self._sandwich(rows, sol)
            info["stderr_dof"] = residual_dof(rows, fitted_directions(n, fitted, rows.paired))
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(phi.T, se, info)

    def _bootstrap(self, rows: KernelRows, totals: np.ndarray, k: int, n: int) -> np.ndarray:
        weighting = "leverage" if rows.w is not None else "kernel"

        def refit(idx: np.ndarray) -> np.ndarray:
            r = rows.unit_rows(idx)
            zb = rows.z[r]
            wb = leverage_weights(zb, rows.paired)[0] if weighting == "leverage" else None
            sol = self._solve(KernelRows(zb, rows.y[r], wb, rows.paired), totals)
            if not sol.solver.identified:
                raise DiffattrError("bootstrap resample not identified")
            return efficient(sol.theta[:n], totals).T

        return bootstrap_std(
            refit, rows.n_units, self.settings.n_bootstrap, self.settings.seed, (k, n)
        )

    def _sandwich(self, rows: KernelRows, sol: ConstrainedSolution) -> tuple[np.ndarray, str]:
        """Unit scores ``g_u`` per behavior, then ``diag(C Var C')`` (module doc); NaN with
        fewer than :data:`MIN_RESIDUAL_DOF` residual degrees of freedom."""
        m, n = rows.z.shape
        theta = sol.theta
        k = theta.shape[1]
        fitted = not sol.constrained
        q = fitted_directions(n, fitted, rows.paired)
        u = rows.n_units
        se = np.full((k, n), np.nan)
        dof = residual_dof(rows, q)
        if dof < MIN_RESIDUAL_DOF:
            return se, (
                f"not estimable: {dof} residual degrees of freedom "
                f"(distinct units - fitted directions < {MIN_RESIDUAL_DOF})"
            )
        c = sol.restricted_inverse()
        if fitted:  # players' rows of G^{-1}, then the shift P = I - 11'/n
            c = c[:n]
            c = c - c.mean(axis=0, keepdims=True)
        w = rows.weights()
        step = max(2, self.settings.chunk_rows - self.settings.chunk_rows % 2)
        for j in range(k):

            def units(j: int = j):
                for s in range(0, m, step):
                    x = rows.z[s : s + step].astype(np.float64)
                    r = rows.y[s : s + step, j] - x @ theta[:n, j]
                    if fitted:
                        r = r - theta[n, j]
                        x = np.hstack([x, np.ones((x.shape[0], 1))])
                    g = x * (w[s : s + step] * r * u)[:, None]  # scaled by U: O(1) entries
                    yield g[0::2] + g[1::2] if rows.paired else g

            var = sandwich_variance(units(), c, u, q, single=n >= 512, strata=rows.strata)
            if var is None:
                return se, "not estimable: no residual degrees of freedom"
            se[j] = np.sqrt(var / u)
        return se, "sandwich"
