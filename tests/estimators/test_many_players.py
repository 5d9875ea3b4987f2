"""Per-image players: Banzhaf and datamodel fits with thousands of players."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from diffattr.coalitions import make_sampler
from diffattr.errors import DiffattrError
from diffattr.estimators import fit
from diffattr.estimators.datamodel import ridge_fixed, ridge_loo

THREADS = int(os.environ.get("DIFFATTR_TEST_THREADS", "2"))


@pytest.fixture(scope="module")
def linear_game():
    """``v(S) = sum_{i in S} w_i + N(0, 1)`` over n = 2,000 players, M = 3,000 rows."""
    n, m = 2000, 3000
    rng = np.random.default_rng(0)
    w = rng.normal(size=n)
    rows = {}
    for sampler in ("uniform", "datamodel"):
        z = make_sampler(sampler, n, seed=1).sample(m)
        rows[sampler] = (z, z @ w + rng.normal(size=m))
    return w, rows


@pytest.mark.parametrize(
    ("name", "sampler", "rho"),
    [
        ("banzhaf", "uniform", 0.99),
        ("banzhaf-msr", "uniform", 0.7),
        ("datamodel", "datamodel", 0.99),
    ],
)
def test_two_thousand_players_recover_the_coefficients_ranking(linear_game, name, sampler, rho):
    # noise sd 1 against weights sd 1: the regression and ridge recover the weights
    # (coefficient sd about 2/sqrt(M - n) = 0.06); MSR averages over the other 1,999 players'
    # contributions (sd about sqrt(4 Var v / M) = 0.8), hence its lower rank correlation
    w, rows = linear_game
    z, y = rows[sampler]
    with threadpool_limits(limits=THREADS):
        att = fit(name, z, y, sampler=sampler)
    assert spearmanr(att.values, w).statistic > rho
    if name == "banzhaf":
        assert np.abs(att.values - w).max() < 0.5
        assert 0.03 < np.median(att.stderr) < 0.12
    if name == "datamodel":  # fixed-size rows: identified up to a common shift
        assert att.settings["fixed_size"] is True
        centred = att.values - att.values.mean()
        assert np.abs(centred - (w - w.mean())).max() < 0.5


def test_regression_below_n_plus_two_rows_points_to_msr():
    z = make_sampler("uniform", 50, seed=0).sample(51)
    with pytest.raises(DiffattrError, match="needs at least n\\+2=52 rows.*use banzhaf-msr"):
        fit("banzhaf", z, np.zeros(51))


@pytest.mark.parametrize("shape", [(40, 25), (25, 40)])
def test_ridge_from_the_smaller_gram_matches_the_normal_equations(shape):
    m, n = shape
    rng = np.random.default_rng(3)
    z = rng.random(shape) < 0.5
    y = rng.normal(size=(m, 2))
    x = z - z.mean(axis=0)
    lams = np.array([0.3, 2.0])
    got = ridge_fixed(z, y, lams)
    for j, lam in enumerate(lams):
        want = np.linalg.solve(x.T @ x + lam * np.eye(n), x.T @ (y[:, j] - y[:, j].mean()))
        np.testing.assert_allclose(got[j], want, atol=1e-9)
    # efficient leave-one-out equals refitting without each row
    coef, intercept, best, loo, rank = ridge_loo(z, y[:, :1], np.array([0.5]))
    assert rank == min(m - 1, n)
    errs = []
    for r in range(m):
        keep = np.delete(np.arange(m), r)
        xk = z[keep] - z[keep].mean(axis=0)
        yk = y[keep, 0]
        b = np.linalg.solve(xk.T @ xk + 0.5 * np.eye(n), xk.T @ (yk - yk.mean()))
        pred = yk.mean() + (z[r] - z[keep].mean(axis=0)) @ b
        errs.append((y[r, 0] - pred) ** 2)
    np.testing.assert_allclose(loo[0, 0], np.mean(errs), rtol=1e-8)
