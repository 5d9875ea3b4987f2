"""Standard errors the data can or cannot determine: exact tables, LOO/AOI, no residual df."""

from __future__ import annotations

import numpy as np
import pytest

from diffattr.coalitions import AddOneInSampler, LeaveOneOutSampler
from diffattr.estimators import all_subsets, fit
from diffattr.estimators.exact import banzhaf_from_table, shapley_from_table


def _game(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=1 << n)


@pytest.mark.parametrize(
    "name", ["shapley", "shapley-cv", "permutation-shapley", "banzhaf", "banzhaf-msr"]
)
def test_exact_table_evaluated_once_has_undeterminable_noise(name):
    n = 4
    table = _game(n)
    z = all_subsets(n)
    att = fit(name, z, table)
    exact = shapley_from_table(table) if "shapley" in name else banzhaf_from_table(table)
    np.testing.assert_allclose(att.values, exact, atol=1e-12)
    assert att.settings["exact_table"] is True
    assert np.isnan(att.stderr).all()  # one evaluation per coalition: noise unknown
    assert att.settings["stderr_method"].startswith("none")


@pytest.mark.parametrize("kind", ["shapley", "banzhaf"])
def test_exact_table_with_replicates_propagates_their_variance(kind):
    # every coalition evaluated r times with noise sigma: the exact map phi = L v applied to
    # the means has Var(phi_i) = sigma^2 sum_S L_iS^2 / r; check against repeated experiments
    n, r, sigma = 4, 3, 0.5
    truth_table = _game(n, seed=1)
    z = np.repeat(all_subsets(n), r, axis=0)
    name = "shapley" if kind == "shapley" else "banzhaf-msr"
    exact = (shapley_from_table if kind == "shapley" else banzhaf_from_table)(truth_table)
    codes = z.astype(int) @ (1 << np.arange(n))
    estimates, stderrs = [], []
    for seed in range(200):
        y = truth_table[codes] + sigma * np.random.default_rng(seed).normal(size=z.shape[0])
        att = fit(name, z, y)
        assert att.settings["exact_table"] is True
        assert att.settings["replicate_df"] == (1 << n) * (r - 1)
        estimates.append(att.values)
        stderrs.append(att.stderr)
    estimates, stderrs = np.array(estimates), np.array(stderrs)
    np.testing.assert_allclose(estimates.mean(axis=0), exact, atol=0.05)
    ratio = estimates.std(axis=0, ddof=1) / stderrs.mean(axis=0)
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    # the closed form: sigma^2 sum_S L_iS^2 / r
    if kind == "banzhaf":
        expected = sigma * np.sqrt((1 << n) * 0.25 ** (n - 1) / r)
        np.testing.assert_allclose(stderrs.mean(axis=0), expected, rtol=0.05)


def test_explicit_endpoints_count_as_noiseless_in_exact_tables():
    n = 3
    table = _game(n, seed=2)
    z = all_subsets(n)[1:-1]  # no empty or full row: v0/v1 explicit
    zz = np.repeat(z, 2, axis=0)
    codes = zz.astype(int) @ (1 << np.arange(n))
    y = table[codes] + np.tile([0.1, -0.1], z.shape[0])
    att = fit("shapley", zz, y, v0=table[0], v1=table[-1])
    np.testing.assert_allclose(att.values, shapley_from_table(table), atol=1e-12)
    assert att.settings["replicate_df"] == z.shape[0]
    assert (att.stderr > 0).all()


def test_loo_and_aoi_stderr_is_nan_unless_both_sides_are_replicated():
    n = 4
    loo_rows = LeaveOneOutSampler(n).sample(n)
    full = np.ones((1, n), dtype=bool)
    # one full row (v1 = its value) and replicated LOO rows: v1's noise is unknown -> NaN
    z = np.vstack([full, loo_rows, loo_rows])
    y = np.r_[10.0, np.arange(4.0), np.arange(4.0) + 0.2]
    att = fit("loo", z, y)
    np.testing.assert_allclose(att.values, 10.0 - (np.arange(4.0) + 0.1))
    assert np.isnan(att.stderr).all()
    assert att.settings["endpoint_noise"] == "v1 from 1 table row"
    # two full rows: both sides replicated -> a number
    z2 = np.vstack([full, full, loo_rows, loo_rows])
    y2 = np.r_[10.0, 10.4, np.arange(4.0), np.arange(4.0) + 0.2]
    att2 = fit("loo", z2, y2)
    np.testing.assert_allclose(att2.stderr, np.sqrt(0.1**2 + 0.2**2))
    # an explicit v1 is a constant: the player's replicates alone
    att3 = fit("loo", z2[2:], y2[2:], v1=10.2)
    np.testing.assert_allclose(att3.stderr, 0.1)
    assert att3.settings["endpoint_noise"].startswith("explicit v1")
    # AOI with single rows: NaN
    aoi = AddOneInSampler(n).sample(n)
    att4 = fit("aoi", aoi, np.arange(4.0), v0=0.0)
    assert np.isnan(att4.stderr).all()


@pytest.mark.parametrize("endpoints", ["given", "fitted"])
def test_too_few_residual_degrees_of_freedom_mean_no_standard_error(endpoints):
    # the rule: distinct sampling units - fitted directions >= MIN_RESIDUAL_DOF, else NaN
    from diffattr.estimators.linalg import MIN_RESIDUAL_DOF

    n = 5
    w = np.arange(1.0, n + 1)
    q = n - 1 if endpoints == "given" else n  # fitted directions (pairs: the intercept
    # fits only the pair sums, which no value depends on)
    pairs = all_pairs(n)  # the 15 distinct complementary pairs of 5 players
    for units in (q, q + MIN_RESIDUAL_DOF - 1, q + MIN_RESIDUAL_DOF):
        z = pairs[: 2 * units]
        att = fit("shapley", z, z @ w, v0=0.0, v1=w.sum(), endpoints=endpoints)
        np.testing.assert_allclose(att.values, w, atol=1e-10)  # additive: exact either way
        if units - q < MIN_RESIDUAL_DOF:
            assert np.isnan(att.stderr).all()
            assert att.settings["stderr_method"].startswith("not estimable")
        else:  # a number, and 0 is earned here: the game is additive
            assert np.isfinite(att.stderr).all() and att.stderr.max() < 1e-8
    # repeating units adds no degrees of freedom: 8 copies of q + 1 distinct pairs
    z = np.vstack([pairs[: 2 * (q + 1)]] * 8)
    att = fit("shapley", z, z @ w, v0=0.0, v1=w.sum(), endpoints=endpoints)
    assert np.isnan(att.stderr).all() and att.settings["stderr_dof"] == 1


def all_pairs(n: int) -> np.ndarray:
    """Every (mask, complement) pair of ``n`` players once, rows 2j and 2j+1: the
    singletons first (``n`` of them identify the values), then the larger ones."""
    from itertools import combinations

    firsts = []
    for k in range(1, n // 2 + 1):
        for c in combinations(range(n), k):
            if 2 * k == n and 0 not in c:
                continue
            m = np.zeros(n, dtype=bool)
            m[list(c)] = True
            firsts.append(m)
    out = np.empty((2 * len(firsts), n), dtype=bool)
    out[0::2], out[1::2] = firsts, ~np.array(firsts)
    return out
