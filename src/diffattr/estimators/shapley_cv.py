"""KernelSHAP with size control variates; registry name ``shapley-cv``.

Regression adjustment (control variates; in the spirit of Witter, Liu & Musco 2025,
"Regression-adjusted Monte Carlo estimators for Shapley values and probabilistic values"):
estimate ``phi(v) = phi(f) + phi(v - f)`` with a surrogate ``f`` whose Shapley values are
known exactly, so that only the residual's Shapley values are estimated from the sampled
coalitions. An *additive* surrogate cannot help KernelSHAP — the regression is exact on
additive games, so ``phi(f) + KS(v - f) = KS(v)`` — and paired KernelSHAP is also exact on
pairwise interactions (the pair difference ``(v(S) - v(N\\S)) / 2`` of a game of order
``<= 2`` is linear in ``z - 1/2`` with the Shapley values as slopes). What it gets wrong is
the part of the pair differences that is not linear in the mask. In data attribution much
of that part is a function of the coalition *size* (a model trained on more data is
better, with diminishing returns: FID or loss against ``|S|`` is convex, not linear), and
a sample of coalitions whose sizes are not balanced across players turns it into spurious
differences between players.

The surrogates here are size games ``c_p(S) = b_p(|S|)`` with
``b_p(s) = (1 - u^2) u^p``, ``u = 2 s / n - 1``: a symmetric game has equal Shapley values
``(c(N) - c(∅)) / n`` (symmetry and efficiency, Shapley 1953), and ``b_p`` vanishes at
``s = 0`` and ``s = n``, so ``phi(c_p) = 0`` exactly. The estimator is KernelSHAP with the
control variates as extra regressors,

    min_{phi, gamma} sum_r w_r (y_r - v0 - z_r'phi - sum_p gamma_p b_p(|S_r|))^2
    s.t. 1'phi = v1 - v0,

whose ``phi`` equals KernelSHAP applied to ``v - sum_p gamma_p c_p`` (the fitted control
variates removed). It is consistent for any game: at the population optimum ``gamma*``,
``phi = Shapley(v - sum_p gamma*_p c_p) = Shapley(v)``. Rows, pairs and weights are those
of ``shapley`` (kernel or leverage sampler; :mod:`diffattr.estimators.kernel_shap`). With
paired rows the fit uses each pair's difference, where only odd ``p`` (1, 3, ...) enter;
unpaired rows use odd and even ``p``.

Endpoints (``endpoints``, as for ``shapley``): ``"fitted"`` drops the constraint (and, for
unpaired rows, adds a free intercept), then adds the same constant to every value so that
they sum to ``v1 - v0``; ``"given"`` keeps the constraint with the true ``v0`` and ``v1``.

How many control variates (0 .. ``size_terms`` per parity; 0 is plain KernelSHAP) is
chosen per behavior by leave-one-out cross-validation over sampling units (pairs or rows):
``sum_u w_u (e_u / (1 - h_u))^2`` with ``h_u = w_u d_u' C d_u``, ``C`` the restricted
inverse of the constrained problem. Standard errors are the KernelSHAP sandwich with the
control variates among the fitted directions (``U / (U - (n - 1 + J))`` small-sample
factor; NaN without residual degrees of freedom); ``n_bootstrap > 0`` bootstraps the whole
procedure, selection included. Identification is that of KernelSHAP: ``n - 1`` distinct
pairs; a control variate that the rows cannot separate from the players is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Fit, bootstrap_std
from diffattr.estimators.kernel_rows import (
    KernelRows,
    distinct_units,
    dropped_note,
    leverage_weights,
    not_identified,
)
from diffattr.estimators.kernel_shap import KernelShap
from diffattr.estimators.linalg import (
    MIN_RESIDUAL_DOF,
    ConstrainedSolution,
    constrained_solve,
    efficient,
    free_solve,
    sandwich_variance,
)
from diffattr.estimators.settings import ShapleyCVSettings
from diffattr.estimators.table import CoalitionTable


def size_basis(sizes: np.ndarray, n: int, powers: list[int]) -> np.ndarray:
    """``b_p(s) = (1 - u^2) u^p`` with ``u = 2 s / n - 1``, one column per power ``p``."""
    u = 2.0 * np.asarray(sizes, dtype=np.float64) / n - 1.0
    return (
        np.column_stack([(1.0 - u**2) * u**p for p in powers]) if powers else np.zeros((u.size, 0))
    )


def candidate_powers(size_terms: int, paired: bool) -> list[list[int]]:
    """Nested sets of powers tried by cross-validation, from none to ``size_terms`` per
    parity: paired ``[], [1], [1, 3], ...``; unpaired ``[], [0, 1], [0, 1, 2, 3], ...``."""
    out: list[list[int]] = [[]]
    for j in range(1, size_terms + 1):
        out.append([2 * i + 1 for i in range(j)] if paired else list(range(2 * j)))
    return out


@dataclass
class Units:
    """The unit-level regression: targets ``t`` ``(U, K)``, player regressors ``x``
    ``(U, n)``, sizes, weights ``w`` ``(U,)`` (sum 1)."""

    t: np.ndarray
    x: np.ndarray
    sizes: np.ndarray
    w: np.ndarray
    paired: bool


def units_of(rows: KernelRows) -> Units:
    """Pair differences (paired rows) or the rows themselves (module doc)."""
    w = rows.weights()
    if rows.paired:
        za = rows.z[0::2]
        t = 0.5 * (rows.y[0::2] - rows.y[1::2])
        x = za.astype(np.float64) - 0.5
        return Units(t, x, za.sum(axis=1), w[0::2] + w[1::2], True)
    return Units(rows.y, rows.z.astype(np.float64), rows.z.sum(axis=1), w, False)


@dataclass
class CandidateFit:
    """One candidate set of control variates: its solution, design ``(U, n + J)``,
    residuals ``(U, K)`` and cross-validation scores ``(K,)`` (inf where leave-one-out is
    undefined); residuals and scores are None when it is not identified."""

    powers: list[int]
    sol: ConstrainedSolution
    design: np.ndarray
    resid: np.ndarray | None = None
    cv: np.ndarray | None = None

    @property
    def identified(self) -> bool:
        return self.sol.solver.identified


def fit_candidate(
    units: Units, totals: np.ndarray, powers: list[int], fitted: bool = False
) -> CandidateFit:
    """The weighted regression with the size basis ``powers``: constrained to the totals,
    or (``fitted``) free, with an intercept for unpaired rows (pair differences have none).
    The player values are ``theta[:n]`` (not yet shifted to the totals when ``fitted``)."""
    n = units.x.shape[1]
    cols = [units.x]
    if fitted and not units.paired:
        cols.append(np.ones((units.x.shape[0], 1)))
    d = np.hstack([*cols, size_basis(units.sizes, n, powers)])
    dw = d * units.w[:, None]
    if fitted:
        sol = free_solve(dw.T @ d, dw.T @ units.t, n_phi=n)
    else:
        sol = constrained_solve(dw.T @ d, dw.T @ units.t, totals, n_phi=n)
    if not sol.solver.identified:
        return CandidateFit(powers, sol, d)
    resid = units.t - d @ sol.theta
    h = units.w * np.einsum("ij,ij->i", d @ sol.restricted_inverse(), d)
    if (h > 1.0 - 1e-9).any():
        cv = np.full(units.t.shape[1], np.inf)
    else:
        cv = (units.w[:, None] * (resid / (1.0 - h)[:, None]) ** 2).sum(axis=0)
    return CandidateFit(powers, sol, d, resid, cv)


def select(
    units: Units, totals: np.ndarray, size_terms: int, fitted: bool = False
) -> tuple[list[CandidateFit], list[int]]:
    """The candidates (plain KernelSHAP first, then every identified one with control
    variates) and, per behavior, the index of the chosen one: the fewest terms within a
    relative ``1e-9`` of the best cross-validation score. Check ``fits[0].identified``."""
    sets = candidate_powers(size_terms, units.paired)
    base = fit_candidate(units, totals, sets[0], fitted)
    if not base.identified:
        return [base], [0] * units.t.shape[1]
    fits = [base]
    for powers in sets[1:]:
        f = fit_candidate(units, totals, powers, fitted)
        if f.identified:
            fits.append(f)
    k = units.t.shape[1]
    chosen = []
    for j in range(k):
        scores = np.array([f.cv[j] for f in fits if f.cv is not None])
        if not np.isfinite(scores).any():
            chosen.append(0)
            continue
        best = scores.min()
        chosen.append(int(np.flatnonzero(scores <= best * (1 + 1e-9) + 1e-300)[0]))
    return fits, chosen


class ShapleyCV(KernelShap):
    """KernelSHAP with size control variates (module doc); registry name ``shapley-cv``.

    Settings: :class:`~diffattr.estimators.settings.ShapleyCVSettings`.
    """

    settings_class = ShapleyCVSettings
    settings: ShapleyCVSettings

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
        units = units_of(rows)
        fitted = self.settings.endpoints == "fitted"
        fits, chosen = select(units, totals, self.settings.size_terms, fitted)
        if not fits[0].identified:
            rank = fits[0].sol.solver.rank
            p = fits[0].design.shape[1]
            raise not_identified(m, n, rank, self.min_rows(n), rows.paired, dropped_note(info), p)
        phi = np.stack(  # (K, n)
            [
                efficient(fits[c].sol.theta[:n, j : j + 1], totals[j : j + 1])[:, 0]
                for j, c in enumerate(chosen)
            ]
        )
        info.update(
            rows_used=m,
            solver=fits[0].sol.solver.method,
            rank=fits[0].sol.solver.rank,
            identified=True,
            endpoints=self.settings.endpoints,
            size_powers=[fits[c].powers for c in chosen] if k > 1 else fits[chosen[0]].powers,
            cv_scores=[[float(f.cv[j]) for f in fits] for j in range(k)],
        )
        if self.settings.n_bootstrap > 0:
            se = self._bootstrap_cv(rows, totals, k, n)
            info["stderr_method"] = "bootstrap"
        elif self.settings.stderr:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "sandwich"
            u = units.t.shape[0]
            distinct = distinct_units(rows.z, rows.paired)
            for j, c in enumerate(chosen):
                f = fits[c]
                assert f.resid is not None
                g = f.design * (units.w * f.resid[:, j] * u)[:, None]
                q = f.design.shape[1] - (0 if fitted else 1)
                cmap = f.sol.restricted_inverse()[:n]
                if fitted:
                    cmap = cmap - cmap.mean(axis=0, keepdims=True)
                var = None
                if distinct - q >= MIN_RESIDUAL_DOF:
                    var = sandwich_variance([g], cmap, u, q, strata=rows.strata)
                if var is None:
                    info["stderr_method"] = (
                        f"not estimable: {distinct - q} residual degrees of freedom "
                        f"(distinct units - fitted directions < {MIN_RESIDUAL_DOF})"
                    )
                    se[:] = np.nan
                    break
                se[j] = np.sqrt(var / u)
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(phi, se, info)

    def _bootstrap_cv(self, rows: KernelRows, totals: np.ndarray, k: int, n: int) -> np.ndarray:
        leverage = rows.w is not None

        def refit(idx: np.ndarray) -> np.ndarray:
            r = rows.unit_rows(idx)
            zb = rows.z[r]
            wb = leverage_weights(zb, rows.paired)[0] if leverage else None
            ub = units_of(KernelRows(zb, rows.y[r], wb, rows.paired))
            fitted = self.settings.endpoints == "fitted"
            fits, chosen = select(ub, totals, self.settings.size_terms, fitted)
            if not fits[0].identified:
                raise DiffattrError("bootstrap resample not identified")
            return np.stack(
                [
                    efficient(fits[c].sol.theta[:n, j : j + 1], totals[j : j + 1])[:, 0]
                    for j, c in enumerate(chosen)
                ]
            )

        return bootstrap_std(
            refit, rows.n_units, self.settings.n_bootstrap, self.settings.seed, (k, n)
        )
