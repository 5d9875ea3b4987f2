"""Linear datamodels (Ilyas et al. 2022): regress the behavior on the coalition mask.

A datamodel predicts ``v(S) ≈ theta_0 + sum_i theta_i 1[i ∈ S]`` from coalitions drawn
as random ``alpha``-fractions of the players (``diffattr.coalitions.DatamodelSampler``);
``theta_i`` is player ``i``'s attribution. Ilyas et al. fit it with an ℓ1 penalty; the
paper's code (digest §3.6) uses ``RidgeCV``, and so does this module: ridge regression with
an unpenalised intercept,

    theta = argmin ||y - theta_0 - Z theta||^2 + lambda ||theta||^2,

``lambda`` chosen from a log grid by efficient leave-one-out cross-validation (the LOO
residual is ``r_j / (1 - H_jj)``; the grid spans ``10^-6 .. 10^3`` times the mean squared
singular value unless ``ridge``/``ridge_grid`` are set).

Scale: everything comes from one symmetric eigendecomposition — of the centred Gram
``X'X`` (``n x n``) when ``M >= n``, of ``X X'`` (``M x M``) otherwise — with ``Z'Z`` from
the exact 0/1 BLAS Gram. ``n = 2,000`` players from ``M = 3,000`` rows take a few seconds on
two cores (BENCHMARKS.md).

Identification: with fixed-size coalitions (the datamodel sampler) ``sum_i z_i`` is the
same in every row, so adding a constant to every ``theta_i`` (and removing it from
the intercept) fits equally well; ridge returns the minimum-norm solution, i.e. the
coefficients are determined only up to that common shift and come out centred on it.
Rankings and differences are unaffected. Uniform coalitions identify every ``theta_i``.
With ``M <= n`` the penalty, not the data, decides the component of ``theta`` outside the
rows' span (``settings["rank"]`` < ``n`` says so).

Standard errors: NaN by default (ridge has no clean closed form); ``n_bootstrap > 0``
refits on rows resampled with replacement, at the ``lambda`` chosen on the full table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.linalg import gram_binary
from diffattr.estimators.settings import DatamodelSettings
from diffattr.estimators.table import CoalitionTable


@dataclass
class CentredSVD:
    """Thin SVD ``X = U S V'`` of the centred masks (numerically zero singular values
    dropped) and the column means ``xm``. ``V`` is None in the ``M < n`` form; then
    ``coef`` uses ``X' U`` instead."""

    u: np.ndarray
    s: np.ndarray
    v: np.ndarray | None
    xm: np.ndarray
    z: np.ndarray

    def coef(self, d: np.ndarray, uty: np.ndarray) -> np.ndarray:
        """``V diag(d) U'y`` for one column ``uty = U'y`` and shrinkage ``d``."""
        if self.v is not None:
            return self.v @ (d * uty)
        a = self.u @ (d / self.s * uty)  # (M,): X' a = V S S^-1 d U'y
        return self.z.astype(np.float64).T @ a - self.xm * a.sum()


def centred_svd(z: np.ndarray) -> CentredSVD:
    """The SVD of ``Z - mean`` from one eigendecomposition of the smaller Gram."""
    m, n = z.shape
    xm = z.mean(axis=0)
    if m >= n:
        g = gram_binary(z)
        g -= m * np.outer(xm, xm)
        s2, v = sla.eigh(g, driver="evd", check_finite=False)
    else:
        zf = z.astype(np.float64)
        zf -= xm
        g = zf @ zf.T
        s2, u = sla.eigh(g, driver="evd", check_finite=False)
        v = None
    top = float(s2.max()) if s2.size else 0.0
    keep = s2 > top * max(m, n) * 1e-12
    s2 = s2[keep][::-1]
    s = np.sqrt(s2)
    if v is not None:
        v = v[:, keep][:, ::-1]
        zv = z.astype(np.float64) @ v - xm @ v
        u = zv / s
    else:
        u = u[:, keep][:, ::-1]
    return CentredSVD(u, s, v, xm, z)


def ridge_loo(
    z: np.ndarray, y: np.ndarray, grid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Ridge with intercept, lambda per column by efficient LOO.

    Returns coefficients ``(K, n)``, intercepts ``(K,)``, chosen lambdas ``(K,)``, the
    LOO mean squared errors ``(K, len(grid))`` and the rank of the centred masks.
    """
    m = z.shape[0]
    svd = centred_svd(z)
    s2 = svd.s**2
    if grid is None:
        scale = float(s2.mean()) if s2.size and s2.mean() > 0 else 1.0
        grid = scale * np.logspace(-6, 3, 28)
    grid = np.asarray(grid, dtype=np.float64).reshape(-1)
    ym = y.mean(axis=0)
    uty = svd.u.T @ (y - ym)  # (r, K)
    u2 = svd.u**2
    loo = np.empty((y.shape[1], grid.size))
    for a_i, lam in enumerate(grid):
        shrink = s2 / (s2 + lam) if lam > 0 else np.ones_like(s2)
        fitted = svd.u @ (shrink[:, None] * uty) + ym
        h = 1.0 / m + u2 @ shrink
        resid = (y - fitted) / np.clip(1.0 - h, 1e-12, None)[:, None]
        loo[:, a_i] = (resid**2).mean(axis=0)
    best = grid[np.argmin(loo, axis=1)]
    coef = np.empty((y.shape[1], z.shape[1]))
    for j, lam in enumerate(best):
        coef[j] = svd.coef(svd.s / (s2 + lam), uty[:, j])
    intercept = ym - coef @ svd.xm
    return coef, intercept, best, loo, int(svd.s.size)


def ridge_fixed(z: np.ndarray, y: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Ridge coefficients ``(K, n)`` with intercept at fixed lambdas (one per column)."""
    svd = centred_svd(z)
    uty = svd.u.T @ (y - y.mean(axis=0))
    s2 = svd.s**2
    return np.stack([svd.coef(svd.s / (s2 + lam), uty[:, j]) for j, lam in enumerate(lams)])


class Datamodel(Estimator):
    """Ridge datamodel with LOO-chosen penalty; registry name ``datamodel``.

    Settings: :class:`~diffattr.estimators.settings.DatamodelSettings`. Needs at least 3
    distinct rows; ``v0``/``v1`` are not used.
    """

    settings_class = DatamodelSettings
    settings: DatamodelSettings

    def min_rows(self, n_players: int) -> int:
        return 3

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        z, y = table.masks, table.values
        m, n = z.shape
        k = y.shape[1]
        if m < 3:
            raise DiffattrError(f"datamodel needs at least 3 rows; the table has {m}")
        if (z == z[0]).all():
            raise DiffattrError("datamodel needs different coalitions; every row is the same")
        if self.settings.ridge is not None:
            lams = np.full(k, float(self.settings.ridge))
            coef = ridge_fixed(z, y, lams)
            rank = int(centred_svd(z).s.size) if m < n else None
        else:
            grid = None
            if self.settings.ridge_grid is not None:
                grid = np.asarray(self.settings.ridge_grid, dtype=np.float64)
            coef, _, lams, _, rank = ridge_loo(z, y, grid)
        info: dict[str, Any] = {
            "rows_used": m,
            "ridge_lambda": lams.tolist() if k > 1 else float(lams[0]),
            "fixed_size": bool(np.unique(z.sum(axis=1)).size == 1),
        }
        if rank is not None:
            info["rank"] = rank
        if self.settings.n_bootstrap > 0:
            se = bootstrap_std(
                lambda idx: ridge_fixed(z[idx], y[idx], lams),
                m,
                self.settings.n_bootstrap,
                self.settings.seed,
                (k, n),
            )
            info["stderr_method"] = "bootstrap"
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(coef, se, info)
