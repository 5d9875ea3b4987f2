"""Banzhaf values from uniformly sampled coalitions (Wang & Jia 2023, "Data Banzhaf").

The Banzhaf value of player ``i`` is ``phi_i = E_S[v(S ∪ {i}) - v(S)]`` with ``S`` uniform
over subsets of the other players. Under uniform sampling of coalitions (every player
kept independently with probability 1/2; ``diffattr.coalitions.UniformSampler``) this
equals ``E[v | i ∈ S] - E[v | i ∉ S]``, which gives two estimators:

* ``banzhaf-msr`` — maximum sample reuse (Wang & Jia 2023, Alg. 1):
  ``phi_i = mean(v(S) : i ∈ S) - mean(v(S) : i ∉ S)``; every row is used for every
  player. Standard error: ``sqrt(s_in^2 / n_in + s_out^2 / n_out)`` (Welch).
* ``banzhaf`` — least squares of ``v`` on the masks coded ``±1/2`` with an intercept.
  Under uniform sampling the coded columns are uncorrelated with variance 1/4, so the
  population coefficient of player ``i`` is ``4 E[(z_i - 1/2) v] = E[v | i ∈ S] -
  E[v | i ∉ S] = phi_i`` (the Banzhaf value is the best additive approximation to
  ``v`` under the uniform distribution; Hammer & Holzman 1992). Regressing removes the
  chance imbalance of the sampled masks, which usually lowers variance compared with
  MSR. Standard error: heteroskedasticity-robust sandwich (HC1), since the residual is
  the game's non-additive part; needs more rows than players.

Neither needs ``v0``/``v1``; all-0/all-1 rows are ordinary uniform samples and are used.
A table holding every subset gives exact Banzhaf values (``use_exact``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg as sla

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Estimator, Fit, bootstrap_std

_CHUNK = 4096


def _design(z: np.ndarray) -> np.ndarray:
    x = np.empty((z.shape[0], z.shape[1] + 1))
    x[:, 0] = 1.0
    x[:, 1:] = z
    x[:, 1:] -= 0.5
    return x


def _factor(xtx: np.ndarray) -> Any:
    try:
        cho = sla.cho_factor(xtx, lower=False, check_finite=False)
        d = np.abs(np.diagonal(cho[0]))
        if not np.isfinite(d).all() or d.min() <= 1e-6 * d.max():
            raise np.linalg.LinAlgError
    except (np.linalg.LinAlgError, ValueError):
        raise DiffattrError(
            "banzhaf regression is singular: some player is in every row or in none, or "
            "there are too few rows; sample more uniform coalitions"
        ) from None
    return cho


def banzhaf_regression(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Any]:
    """Coefficients ``(K, n+1)`` (intercept first) of ``y`` on ``[1, z - 1/2]``.

    Also returns the Cholesky factor of ``X'X``. ``X'X`` and ``X'y`` are accumulated over
    row chunks, so memory stays ``O(n^2)`` plus one chunk.
    """
    p = z.shape[1] + 1
    xtx = np.zeros((p, p))
    xty = np.zeros((p, y.shape[1]))
    for s in range(0, z.shape[0], _CHUNK):
        x = _design(z[s : s + _CHUNK])
        xtx += x.T @ x
        xty += x.T @ y[s : s + _CHUNK]
    cho = _factor(xtx)
    coef = sla.cho_solve(cho, xty, check_finite=False)
    return coef.T, cho


def _hc1_stderr(z: np.ndarray, y: np.ndarray, full: np.ndarray, cho: Any) -> np.ndarray:
    """HC1 sandwich ``(X'X)^-1 X' diag(r^2) X (X'X)^-1 M / (M - p)``, slope entries."""
    m, n = z.shape
    p = n + 1
    k = y.shape[1]
    meats = np.zeros((k, p, p))
    for s in range(0, m, _CHUNK):
        x = _design(z[s : s + _CHUNK])
        r = y[s : s + _CHUNK] - x @ full.T  # (rows, K)
        for j in range(k):
            meats[j] += (x * r[:, j : j + 1] ** 2).T @ x
    inv = sla.cho_solve(cho, np.eye(p), check_finite=False)
    se = np.empty((k, n))
    for j in range(k):
        cov = inv @ meats[j] @ inv * (m / (m - p))
        se[j] = np.sqrt(np.clip(np.diag(cov)[1:], 0.0, None))
    return se


def _check_membership(z: np.ndarray, names: list[str], estimator: str) -> None:
    m = z.shape[0]
    counts = z.sum(axis=0)
    for i in np.flatnonzero((counts == 0) | (counts == m)):
        where = "every" if counts[i] == m else "no"
        raise DiffattrError(
            f"player {names[i]!r} is in {where} row, so {estimator} cannot compare coalitions "
            "with and without it; sample more uniform coalitions"
        )


class BanzhafRegression(Estimator):
    """Banzhaf values by ±1/2-coded least squares; registry name ``banzhaf``.

    Settings: ``n_bootstrap``/``seed`` (bootstrap over rows instead of HC1),
    ``use_exact``. Needs at least ``n + 2`` rows.
    """

    name: ClassVar[str] = "banzhaf"
    exact_kind: ClassVar[str | None] = "banzhaf"

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
        p = n + 1
        if m < p + 1:
            raise DiffattrError(
                f"banzhaf regression needs at least n+2={p + 1} rows for {n} players; "
                f"the table has {m}"
            )
        _check_membership(z, names, "banzhaf")
        full, cho = banzhaf_regression(z, y)
        coef = full[:, 1:]
        k = y.shape[1]
        info: dict[str, Any] = {"rows_used": m}
        if opts["n_bootstrap"] > 0:
            se = bootstrap_std(
                lambda idx: banzhaf_regression(z[idx], y[idx])[0][:, 1:],
                m,
                opts["n_bootstrap"],
                opts["seed"],
                (k, n),
            )
            info["stderr_method"] = "bootstrap"
        else:
            se = _hc1_stderr(z, y, full, cho)
            info["stderr_method"] = "hc1"
        return Fit(coef, se, info)


def msr(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-sample-reuse means: ``(K, n)`` values and Welch standard errors."""
    m, n = z.shape
    y = y - y.mean(axis=0)  # centring keeps the variance sums free of cancellation
    n_in = z.sum(axis=0).astype(np.float64)
    n_out = m - n_in
    s_in = np.zeros((y.shape[1], n))
    q_in = np.zeros((y.shape[1], n))
    for s in range(0, m, _CHUNK):
        zf = z[s : s + _CHUNK].astype(np.float64)
        s_in += y[s : s + _CHUNK].T @ zf
        q_in += (y[s : s + _CHUNK] ** 2).T @ zf
    s_all = y.sum(axis=0)[:, None]
    mean_in = s_in / n_in
    mean_out = (s_all - s_in) / n_out
    q_out = (y**2).sum(axis=0)[:, None] - q_in
    with np.errstate(invalid="ignore", divide="ignore"):
        var_in = (q_in - n_in * mean_in**2) / (n_in - 1)
        var_out = (q_out - n_out * mean_out**2) / (n_out - 1)
        se = np.sqrt(np.clip(var_in, 0, None) / n_in + np.clip(var_out, 0, None) / n_out)
    se = np.where((n_in >= 2) & (n_out >= 2), se, np.nan)
    return mean_in - mean_out, se


class BanzhafMSR(Estimator):
    """Banzhaf values by maximum sample reuse; registry name ``banzhaf-msr``.

    Settings: ``n_bootstrap``/``seed`` (bootstrap over rows instead of Welch),
    ``use_exact``. Every player must be in at least one row and out of at least one.
    """

    name: ClassVar[str] = "banzhaf-msr"
    exact_kind: ClassVar[str | None] = "banzhaf"

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
        _check_membership(z, names, "banzhaf-msr")
        vals, se = msr(z, y)
        info: dict[str, Any] = {"rows_used": m}
        if opts["n_bootstrap"] > 0:

            def refit(idx: np.ndarray) -> np.ndarray:
                zb = z[idx]
                _check_membership(zb, names, "banzhaf-msr")
                return msr(zb, y[idx])[0]

            se = bootstrap_std(refit, m, opts["n_bootstrap"], opts["seed"], vals.shape)
            info["stderr_method"] = "bootstrap"
        else:
            info["stderr_method"] = "welch"
        return Fit(vals, se, info)
