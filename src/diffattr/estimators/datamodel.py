"""Linear datamodels (Ilyas et al. 2022): regress the behavior on the coalition mask.

A datamodel predicts ``v(S) ≈ theta_0 + sum_i theta_i 1[i ∈ S]`` from coalitions drawn
as random ``alpha``-fractions of the players (``diffattr.coalitions.DatamodelSampler``);
``theta_i`` is player ``i``'s attribution. Ilyas et al. fit it with an ℓ1 penalty; here
it is ridge regression with an unpenalised intercept,

    theta = argmin ||y - theta_0 - Z theta||^2 + lambda ||theta||^2,

and ``lambda`` chosen from a log grid by efficient leave-one-out cross-validation
(closed form through the SVD of the centred masks: the LOO residual is
``r_j / (1 - H_jj)``; the grid spans ``10^-6 .. 10^3`` times the mean squared singular
value unless ``alphas``/``alpha`` are given).

Identification: with fixed-size coalitions (the datamodel sampler) ``sum_i z_i`` is the
same in every row, so adding a constant to every ``theta_i`` (and removing it from
the intercept) fits equally well; ridge returns the minimum-norm solution, i.e. the
coefficients are determined only up to that common shift and come out centred on it.
Rankings and differences are unaffected. Uniform coalitions identify every ``theta_i``.

Standard errors: NaN by default (ridge has no clean closed form); ``n_bootstrap > 0``
refits on rows resampled with replacement, at the ``lambda`` chosen on the full table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Estimator, Fit, bootstrap_std


def _svd(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SVD of the centred masks, dropping numerically zero singular values."""
    x = z.astype(np.float64)
    xm = x.mean(axis=0)
    x -= xm
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > (s.max() if s.size else 0.0) * max(x.shape) * np.finfo(np.float64).eps
    return u[:, keep], s[keep], vt[keep], xm


def ridge_loo(
    z: np.ndarray, y: np.ndarray, alphas: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge with intercept, lambda per column by efficient LOO.

    Returns coefficients ``(K, n)``, intercepts ``(K,)``, chosen lambdas ``(K,)`` and the
    LOO mean squared errors ``(K, len(alphas))``.
    """
    m = z.shape[0]
    u, s, vt, xm = _svd(z)
    s2 = s**2
    if alphas is None:
        scale = float(s2.mean()) if s2.size and s2.mean() > 0 else 1.0
        alphas = scale * np.logspace(-6, 3, 28)
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    ym = y.mean(axis=0)
    uty = u.T @ (y - ym)  # (r, K)
    u2 = u**2
    loo = np.empty((y.shape[1], alphas.size))
    for a_i, lam in enumerate(alphas):
        shrink = s2 / (s2 + lam)
        fitted = u @ (shrink[:, None] * uty) + ym
        h = 1.0 / m + u2 @ shrink
        resid = (y - fitted) / np.clip(1.0 - h, 1e-12, None)[:, None]
        loo[:, a_i] = (resid**2).mean(axis=0)
    best = alphas[np.argmin(loo, axis=1)]
    coef = np.empty((y.shape[1], z.shape[1]))
    for j, lam in enumerate(best):
        d = s / (s2 + lam)
        coef[j] = vt.T @ (d * uty[:, j])
    intercept = ym - coef @ xm
    return coef, intercept, best, loo


def ridge_fixed(z: np.ndarray, y: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """Ridge coefficients ``(K, n)`` with intercept at fixed lambdas (one per column)."""
    u, s, vt, _ = _svd(z)
    uty = u.T @ (y - y.mean(axis=0))
    s2 = s**2
    return np.stack([vt.T @ ((s / (s2 + lam)) * uty[:, j]) for j, lam in enumerate(lams)])


class Datamodel(Estimator):
    """Ridge datamodel with LOO-chosen penalty; registry name ``datamodel``.

    Settings: ``alpha`` (a fixed ridge penalty; skips CV), ``alphas`` (the CV grid),
    ``n_bootstrap``/``seed``. Needs at least 3 rows; ``v0``/``v1`` are not used.
    """

    name: ClassVar[str] = "datamodel"
    defaults: ClassVar[dict[str, Any]] = {"alpha": None, "alphas": None}

    def _fit(
        self,
        z: np.ndarray,
        y: np.ndarray,
        v0: np.ndarray | None,
        v1: np.ndarray | None,
        opts: dict[str, Any],
        names: list[str],
    ) -> Fit:
        m, n = z.shape
        k = y.shape[1]
        if m < 3:
            raise DiffattrError(f"datamodel needs at least 3 rows; the table has {m}")
        if (z == z[0]).all():
            raise DiffattrError("datamodel needs different coalitions; every row is the same")
        if opts["alpha"] is not None:
            lam = float(opts["alpha"])
            if not np.isfinite(lam) or lam < 0:
                raise DiffattrError(f"datamodel alpha must be >= 0, got {opts['alpha']!r}")
            lams = np.full(k, lam)
            coef = ridge_fixed(z, y, lams)
        else:
            grid = None
            if opts["alphas"] is not None:
                grid = np.asarray(opts["alphas"], dtype=np.float64).reshape(-1)
                if grid.size == 0 or not np.isfinite(grid).all() or (grid < 0).any():
                    raise DiffattrError("datamodel alphas must be a non-empty list of numbers >= 0")
            coef, _, lams, _ = ridge_loo(z, y, grid)
        info: dict[str, Any] = {
            "rows_used": m,
            "ridge_lambda": lams.tolist() if k > 1 else float(lams[0]),
            "fixed_size": bool(np.unique(z.sum(axis=1)).size == 1),
        }
        if opts["n_bootstrap"] > 0:
            se = bootstrap_std(
                lambda idx: ridge_fixed(z[idx], y[idx], lams),
                m,
                opts["n_bootstrap"],
                opts["seed"],
                (k, n),
            )
            info["stderr_method"] = "bootstrap"
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(coef, se, info)
