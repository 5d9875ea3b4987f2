"""Banzhaf values from uniformly sampled coalitions (Wang & Jia 2023, "Data Banzhaf").

The Banzhaf value of player ``i`` is ``phi_i = E_S[v(S ∪ {i}) - v(S)]`` with ``S`` uniform
over subsets of the other players. Under uniform sampling of coalitions (every player
kept independently with probability 1/2; ``diffattr.coalitions.UniformSampler``) this
equals ``E[v | i ∈ S] - E[v | i ∉ S]``, which gives two estimators:

* ``banzhaf-msr`` — maximum sample reuse (Wang & Jia 2023, Alg. 1):
  ``phi_i = mean(v(S) : i ∈ S) - mean(v(S) : i ∉ S)``; every row is used for every
  player. Standard error: ``sqrt(s_in^2 / n_in + s_out^2 / n_out)`` (Welch). Cost
  ``O(M n)``: any number of players.
* ``banzhaf`` — least squares of ``v`` on the masks coded ``±1/2`` with an intercept
  (the paper's code, digest §3.6, regresses on ``Z - 1/2``). Under uniform sampling the
  coded columns are uncorrelated with variance 1/4, so the population coefficient of
  player ``i`` is ``4 E[(z_i - 1/2) v] = E[v | i ∈ S] - E[v | i ∉ S] = phi_i`` (the
  Banzhaf value is the best additive approximation to ``v`` under the uniform
  distribution; Hammer & Holzman 1992). Regressing removes the chance imbalance of the
  sampled masks, which usually lowers variance compared with MSR. It has ``n + 1``
  coefficients, so it needs ``M >= n + 2`` rows (below that the regression is not
  identified: use ``banzhaf-msr``). Standard error: heteroskedasticity-robust sandwich
  (HC1), since the residual is the game's non-additive part.

With ``p != 1/2`` (``uniform`` sampler option) both estimate the weighted Banzhaf value
(the ``p``-semivalue) instead. Neither needs ``v0``/``v1``; all-0/all-1 rows are ordinary
uniform samples and are used. A table holding every subset gives exact Banzhaf values
(``use_exact``).

Scale: ``X'X`` comes from the exact 0/1 Gram ``Z'Z`` (float32 BLAS ``syrk``, exact for
``M < 2^24``) and the column sums; the HC1 "meat" ``X' diag(r^2) X`` is a chunked ``syrk``.
``n = 2,000`` players from ``M = 3,000`` rows take about a second on two cores
(BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.linalg import Solver, gram_binary, gram_float
from diffattr.estimators.settings import BanzhafMSRSettings, BanzhafSettings
from diffattr.estimators.table import CoalitionTable

_CHUNK = 4096


def _design(z: np.ndarray) -> np.ndarray:
    x = np.empty((z.shape[0], z.shape[1] + 1))
    x[:, 0] = 1.0
    x[:, 1:] = z
    x[:, 1:] -= 0.5
    return x


def coded_gram(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X'X`` of ``X = [1, Z - 1/2]`` from ``Z'Z`` and the column sums; also ``Z'1``."""
    m, n = z.shape
    g = gram_binary(z)
    col = z.sum(axis=0).astype(np.float64)
    xtx = np.empty((n + 1, n + 1))
    xtx[0, 0] = m
    xtx[0, 1:] = xtx[1:, 0] = col - m / 2.0
    g -= 0.5 * col[:, None]
    g -= 0.5 * col[None, :]
    g += m / 4.0
    xtx[1:, 1:] = g
    return xtx, col


def banzhaf_regression(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Solver]:
    """Coefficients ``(K, n+1)`` (intercept first) of ``y`` on ``[1, z - 1/2]``.

    Also returns the solver of ``X'X``; raises when ``X'X`` is singular.
    """
    xtx, _ = coded_gram(z)
    xty = np.empty((z.shape[1] + 1, y.shape[1]))
    xty[0] = y.sum(axis=0)
    zty = np.zeros((z.shape[1], y.shape[1]))
    for s in range(0, z.shape[0], _CHUNK):
        zty += z[s : s + _CHUNK].astype(np.float64).T @ y[s : s + _CHUNK]
    xty[1:] = zty - 0.5 * xty[0][None, :]
    solver = Solver(xtx)
    if not solver.identified:
        raise DiffattrError(
            f"banzhaf regression on {z.shape[0]} rows over {z.shape[1]} players is not "
            f"identified (rank {solver.rank} < {z.shape[1] + 1} coefficients); sample more uniform "
            "coalitions or use banzhaf-msr"
        )
    return solver.solve(xty).T, solver


def _hc1_stderr(z: np.ndarray, y: np.ndarray, full: np.ndarray, solver: Solver) -> np.ndarray:
    """HC1 sandwich ``(X'X)^-1 X' diag(r^2) X (X'X)^-1 M / (M - p)``, slope entries."""
    m, n = z.shape
    p = n + 1
    k = y.shape[1]
    inv = solver.inverse()
    se = np.empty((k, n))
    for j in range(k):

        def chunks(j: int = j):
            for s in range(0, m, _CHUNK):
                x = _design(z[s : s + _CHUNK])
                r = y[s : s + _CHUNK, j] - x @ full[j]
                yield x * np.abs(r)[:, None]

        meat, _, _ = gram_float(chunks(), p, single=p >= 512)
        var = np.einsum("ij,ij->i", inv @ meat, inv)[1:] * (m / (m - p))
        se[j] = np.sqrt(np.clip(var, 0.0, None))
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

    Settings: :class:`~diffattr.estimators.settings.BanzhafSettings`. Needs at least
    ``n + 2`` rows.
    """

    settings_class = BanzhafSettings
    exact_kind = "banzhaf"
    settings: BanzhafSettings

    def min_rows(self, n_players: int) -> int:
        return n_players + 2

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        z, y = table.masks, table.values
        m, n = z.shape
        p = n + 1
        if m < p + 1:
            raise DiffattrError(
                f"banzhaf regression needs at least n+2={p + 1} rows for {n} players; "
                f"the table has {m} (use banzhaf-msr below that)"
            )
        _check_membership(z, list(table.names or []), "banzhaf")
        full, solver = banzhaf_regression(z, y)
        coef = full[:, 1:]
        k = y.shape[1]
        info: dict[str, Any] = {"rows_used": m, "solver": solver.method}
        if self.settings.n_bootstrap > 0:
            se = bootstrap_std(
                lambda idx: banzhaf_regression(z[idx], y[idx])[0][:, 1:],
                m,
                self.settings.n_bootstrap,
                self.settings.seed,
                (k, n),
            )
            info["stderr_method"] = "bootstrap"
        elif self.settings.stderr:
            se = _hc1_stderr(z, y, full, solver)
            info["stderr_method"] = "hc1"
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
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

    Settings: :class:`~diffattr.estimators.settings.BanzhafMSRSettings`. Every player must
    be in at least one row and out of at least one (2 rows at the least); the standard
    error of a player needs two rows on each side (NaN otherwise).
    """

    settings_class = BanzhafMSRSettings
    exact_kind = "banzhaf"

    def min_rows(self, n_players: int) -> int:
        return 2

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        z, y = table.masks, table.values
        names = list(table.names or [])
        m = z.shape[0]
        _check_membership(z, names, "banzhaf-msr")
        vals, se = msr(z, y)
        info: dict[str, Any] = {"rows_used": m}
        if self.settings.n_bootstrap > 0:

            def refit(idx: np.ndarray) -> np.ndarray:
                zb = z[idx]
                _check_membership(zb, names, "banzhaf-msr")
                return msr(zb, y[idx])[0]

            se = bootstrap_std(refit, m, self.settings.n_bootstrap, self.settings.seed, vals.shape)
            info["stderr_method"] = "bootstrap"
        else:
            info["stderr_method"] = "welch"
        return Fit(vals, se, info)
