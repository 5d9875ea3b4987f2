"""KernelSHAP: identification, pairs with missing partners, leverage weights, control variates."""

from __future__ import annotations

import numpy as np
import pytest

from diffattr.coalitions import LeverageSampler, ShapleyKernelSampler
from diffattr.errors import DiffattrError
from diffattr.estimators import CoalitionTable, all_subsets, fit, make_estimator, shapley_from_table

N = 10


def additive(n: int = N, seed: int = 0):
    w = np.random.default_rng(seed).normal(size=n)
    return w, (lambda z: 1.5 + np.atleast_2d(z).astype(float) @ w), 1.5, 1.5 + w.sum()


class SizeGame:
    """``30 / (1 + z'u) + z'w / 2``: mostly a convex function of how much data is kept
    (like FID against the training set), plus small per-player effects."""

    def __init__(self, n: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=n)
        self.u = rng.uniform(0.5, 1.5, size=n)
        self.n = n
        self.shapley = shapley_from_table(self(all_subsets(n)))
        self.v0 = float(self(np.zeros((1, n)))[0])
        self.v1 = float(self(np.ones((1, n)))[0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z).astype(float)
        return 30.0 / (1.0 + z @ self.u) + 0.5 * (z @ self.w)


class InteractionGame:
    """Additive weights plus unanimity terms on groups of 2, 3 and 5 players (Shapley value
    of a unanimity term: its coefficient split equally among the group)."""

    def __init__(self, n: int, seed: int = 2) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=n)
        self.groups = [rng.choice(n, size=(2, 3, 5)[t % 3], replace=False) for t in range(n)]
        self.c = rng.normal(scale=2.0, size=n)
        self.shapley = self.w.copy()
        for g, c in zip(self.groups, self.c):
            self.shapley[g] += c / len(g)
        self.v0 = 0.0
        self.v1 = float(self.shapley.sum())

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z).astype(bool)
        out = z @ self.w
        for g, c in zip(self.groups, self.c):
            out = out + c * z[:, g].all(axis=1)
        return out


def rel_error(values: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(values - truth) / np.linalg.norm(truth - truth.mean()))


# --------------------------------------------------------------------------- identification


@pytest.mark.parametrize("sampler", ["shapley-kernel", "leverage"])
@pytest.mark.parametrize("endpoints", ["given", "fitted"])
def test_too_few_pairs_is_an_error_not_a_pseudo_inverse(sampler, endpoints):
    # 5 pairs span at most 1 + 5 directions of R^10: the values are not determined
    w, v, v0, v1 = additive()
    z = ShapleyKernelSampler(N, 0, paired=True) if sampler != "leverage" else LeverageSampler(N)
    z = z.sample(10)
    with pytest.raises(DiffattrError) as err:
        fit("shapley", z, v(z), v0=v0, v1=v1, sampler=sampler, endpoints=endpoints)
    msg = str(err.value)
    assert msg.startswith("KernelSHAP on 10 paired rows over 10 players is not identified (rank")
    unknowns = N if endpoints == "given" else N + 1  # the fitted intercept
    assert f"< {unknowns}); sample at least" in msg and "\n" not in msg
    need = 2 * (N - 1) if endpoints == "given" else 2 * N
    assert make_estimator("shapley", sampler=sampler, endpoints=endpoints).min_rows(N) == need


@pytest.mark.parametrize("endpoints", ["given", "fitted"])
def test_the_fewest_pairs_identify_an_additive_game_exactly(endpoints):
    # n - 1 pairs with the given endpoints, n with fitted ones (one more unknown)
    w, v, v0, v1 = additive()
    pairs = N - 1 if endpoints == "given" else N
    for seed in range(20):  # the first draw that identifies the values (some do not)
        z = LeverageSampler(N, seed=seed).sample(2 * pairs)
        try:
            att = fit("shapley", z, v(z), v0=v0, v1=v1, sampler="leverage", endpoints=endpoints)
            break
        except DiffattrError:
            continue
    np.testing.assert_allclose(att.values, w, atol=1e-10)
    s = att.settings
    assert s["identified"] is True and s["solver"] == "cholesky"
    assert s["rank"] == (N if endpoints == "given" else N + 1)
    assert s["pairs"] == pairs and s["rows_used"] == 2 * pairs
    # exactly determined: no residual degrees of freedom, so no standard error
    assert np.isnan(att.stderr).all() and s["stderr_method"].startswith("not estimable")


@pytest.mark.parametrize("endpoints", ["given", "fitted"])
def test_every_fit_is_exact_or_refused_at_the_identification_boundary(endpoints):
    w, v, v0, v1 = additive()
    outcomes = []
    pairs = N - 1 if endpoints == "given" else N
    for seed in range(20):
        z = LeverageSampler(N, seed=seed).sample(2 * pairs)
        try:
            att = fit("shapley", z, v(z), v0=v0, v1=v1, sampler="leverage", endpoints=endpoints)
        except DiffattrError as e:
            assert "is not identified" in str(e)
            outcomes.append(False)
            continue
        np.testing.assert_allclose(att.values, w, atol=1e-9)
        outcomes.append(True)
    assert 0 < sum(outcomes) < 20  # both happen at exactly the fewest pairs


def test_a_direction_the_rows_do_not_reach_is_found_by_rank():
    from diffattr.estimators.linalg import constrained_solve

    # the rows never separate players 0 and 1 (a direction orthogonal to 1'phi)
    v = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    a = np.eye(3) - np.outer(v, v)
    sol = constrained_solve(a, np.ones((3, 1)), np.array([1.0]))
    assert not sol.solver.identified and sol.solver.rank == 2 and sol.solver.method == "eigh"
    # a direction along 1 is fixed by the constraint: identified
    ones = np.ones(3) / np.sqrt(3.0)
    sol = constrained_solve(np.eye(3) - np.outer(ones, ones), np.zeros((3, 1)), np.array([3.0]))
    assert sol.solver.identified and sol.solver.rank == 3
    np.testing.assert_allclose(sol.theta[:, 0], [1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- pairs


def test_a_row_without_its_partner_drops_the_partner_not_the_pairing():
    game = InteractionGame(8)
    z = ShapleyKernelSampler(8, seed=3, paired=True).sample(120)
    y = game(z)
    full = fit("shapley", z, y, v0=game.v0, v1=game.v1, use_exact=False)
    assert full.settings["paired"] is True and full.settings["rows_unpaired_dropped"] == 0
    # a failed job: row 41 is missing; consecutive complements still pair the rest
    keep = np.delete(np.arange(120), 41)
    att = fit("shapley", z[keep], y[keep], v0=game.v0, v1=game.v1, use_exact=False)
    s = att.settings
    assert s["paired"] is True and s["pairing"] == "adjacent rows"
    assert s["pairs"] == 59 and s["rows_unpaired_dropped"] == 1 and s["rows_used"] == 118
    pairs = np.delete(np.arange(120), [40, 41])
    ref = fit("shapley", z[pairs], y[pairs], v0=game.v0, v1=game.v1, use_exact=False)
    np.testing.assert_allclose(att.values, ref.values, atol=1e-12)
    np.testing.assert_allclose(att.stderr, ref.stderr, rtol=1e-9)


def test_pair_ids_pair_rows_in_any_order():
    game = InteractionGame(8)
    sampler = ShapleyKernelSampler(8, seed=3, paired=True)
    z = sampler.sample(120)
    y = game(z)
    ids = sampler.pair_ids(np.arange(120))
    keep = np.delete(np.arange(120), [7, 64])  # two failed jobs in two pairs
    order = np.random.default_rng(0).permutation(keep)
    table = CoalitionTable(z[order], y[order], v0=game.v0, v1=game.v1, pair_ids=ids[order])
    (att,) = make_estimator("shapley", use_exact=False).fit(table)
    s = att.settings
    assert s["pairing"] == "pair_ids" and s["pairs"] == 58 and s["rows_unpaired_dropped"] == 2
    both = np.delete(np.arange(120), [6, 7, 64, 65])
    ref = fit("shapley", z[both], y[both], v0=game.v0, v1=game.v1, use_exact=False)
    np.testing.assert_allclose(att.values, ref.values, atol=1e-10)


def test_pair_ids_that_do_not_name_complements_are_an_error():
    z = ShapleyKernelSampler(6, seed=0, paired=True).sample(20)
    bad = np.arange(20) // 2
    bad[[1, 2]] = bad[[2, 1]]
    with pytest.raises(DiffattrError, match="not a mask and its complement"):
        fit("shapley", z, np.ones(20), v0=0.0, v1=1.0, pair_ids=bad)
    with pytest.raises(DiffattrError, match="held by 3 rows"):
        fit("shapley", z, np.ones(20), v0=0.0, v1=1.0, pair_ids=np.r_[0, 0, 0, np.arange(17) + 1])


def test_unpaired_rows_are_not_read_as_pairs():
    game = InteractionGame(8)
    z = ShapleyKernelSampler(8, seed=1, paired=False, replace=True).sample(300)
    att = fit("shapley", z, game(z), v0=game.v0, v1=game.v1, use_exact=False)
    assert att.settings["paired"] is False and att.settings["rows_unpaired_dropped"] == 0
    assert att.settings["rows_used"] == 300
    assert (
        make_estimator("shapley", sampler={"name": "shapley-kernel", "paired": False}).min_rows(8)
        == 9  # 8 values and the fitted intercept
    )


# --------------------------------------------------------------------------- leverage


def test_leverage_weights_are_exact_on_the_full_design():
    # every pair present: post-stratified weights equal the kernel weights, so the weighted
    # regression (not the exact-table shortcut) gives the exact Shapley values
    n = 7
    game = InteractionGame(n, seed=5)
    z = LeverageSampler(n, seed=0).sample(10_000)
    assert z.shape[0] == 2**n - 2
    att = fit("shapley", z, game(z), v0=game.v0, v1=game.v1, sampler="leverage", use_exact=False)
    np.testing.assert_allclose(att.values, game.shapley, atol=1e-10)
    # the same design with uniform (kernel-sampling) weights is wrong: weights matter
    iid = {"name": "shapley-kernel", "replace": True}
    plain = fit("shapley", z, game(z), v0=game.v0, v1=game.v1, sampler=iid, use_exact=False)
    assert np.abs(plain.values - game.shapley).max() > 1e-3


def test_leverage_weights_match_the_kernel_mass_per_size():
    from diffattr.estimators.kernel_rows import leverage_weights

    n = 6
    z = LeverageSampler(n, seed=0).sample(40)
    w, strata = leverage_weights(z, paired=True)
    assert strata == 3 and w.sum() == pytest.approx(1.0)
    sizes = z.sum(axis=1)
    per_size = np.array([w[sizes == s].sum() for s in range(1, n)])
    kernel = np.array([(n - 1) / (s * (n - s)) for s in range(1, n)])
    np.testing.assert_allclose(per_size, kernel / kernel.sum())


@pytest.mark.parametrize("estimator", ["shapley", "shapley-cv"])
def test_leverage_estimates_are_close_to_exact_values_and_errors_calibrated(estimator):
    game = InteractionGame(N)
    est = make_estimator(estimator, sampler="leverage", use_exact=False)
    values, stderrs = [], []
    for seed in range(25):
        z = LeverageSampler(N, seed=seed).sample(200)
        att = est.fit(
            z, game(z) + 0.3 * np.random.default_rng(seed).normal(size=200), v0=game.v0, v1=game.v1
        )
        values.append(att.values)
        stderrs.append(att.stderr)
    values, stderrs = np.array(values), np.array(stderrs)
    assert rel_error(values.mean(axis=0), game.shapley) < 0.05  # nearly unbiased
    assert np.mean([rel_error(v, game.shapley) for v in values]) < 0.2
    # Hansen-Hurwitz over pairs ignores the stratification: conservative, not far off
    ratio = values.std(axis=0, ddof=1) / stderrs.mean(axis=0)
    assert 0.4 < ratio.mean() < 1.3


# --------------------------------------------------------------------------- equal budgets


def _mean_error(game, estimator, sampler, m, seeds=12, noise=0.0, endpoints="fitted"):
    errs = []
    for seed in range(seeds):
        s = LeverageSampler(game.n if hasattr(game, "n") else N, seed=seed)
        if sampler == "shapley-kernel":
            s = ShapleyKernelSampler(s.n_players, seed=seed, paired=True)
        z = s.sample(m)
        y = game(z) + noise * np.random.default_rng(seed + 100).normal(size=m)
        att = fit(
            estimator,
            z,
            y,
            v0=game.v0,
            v1=game.v1,
            sampler=sampler,
            use_exact=False,
            endpoints=endpoints,
        )
        errs.append(rel_error(att.values, game.shapley))
    return float(np.mean(errs))


def test_leverage_and_control_variates_need_fewer_coalitions_on_a_size_driven_game():
    game = SizeGame(N)
    kernel = _mean_error(game, "shapley", "shapley-kernel", 100, endpoints="given")
    leverage = _mean_error(game, "shapley", "leverage", 100, endpoints="given")
    cv = _mean_error(game, "shapley-cv", "leverage", 100, endpoints="given")
    cv_half = _mean_error(game, "shapley-cv", "leverage", 50, endpoints="given")
    assert leverage < 0.6 * kernel
    assert cv < 0.2 * leverage
    assert cv_half < kernel / 4  # half the coalitions, a fraction of the error
    # fitted endpoints take much of the size trend out of plain KernelSHAP too
    assert _mean_error(game, "shapley", "shapley-kernel", 100) < 0.3 * kernel
    assert _mean_error(game, "shapley", "leverage", 100) < 0.4 * leverage
    assert _mean_error(game, "shapley-cv", "leverage", 100) < 1.1 * cv


def test_control_variates_do_not_hurt_where_there_is_nothing_to_control():
    game = InteractionGame(N)
    plain = _mean_error(game, "shapley", "leverage", 100, noise=0.5)
    cv = _mean_error(game, "shapley-cv", "leverage", 100, noise=0.5)
    assert cv < 1.15 * plain


def test_shapley_cv_without_terms_is_kernel_shap_and_is_exact_on_additive_games():
    game = InteractionGame(N)
    z = ShapleyKernelSampler(N, seed=4, paired=True).sample(80)
    y = game(z)
    ks = fit("shapley", z, y, v0=game.v0, v1=game.v1, use_exact=False)
    kernel = "shapley-kernel"
    cv0 = fit("shapley-cv", z, y, game.v0, game.v1, sampler=kernel, use_exact=False, size_terms=0)
    np.testing.assert_allclose(cv0.values, ks.values, atol=1e-10)
    np.testing.assert_allclose(cv0.stderr, ks.stderr, rtol=1e-8)
    w, v, v0, v1 = additive()
    cv = fit("shapley-cv", z, v(z), v0=v0, v1=v1, sampler=kernel, use_exact=False)
    np.testing.assert_allclose(cv.values, w, atol=1e-9)
    assert cv.settings["size_powers"] == []  # nothing left for a control variate to fit


def test_size_control_variates_have_zero_shapley_values():
    from diffattr.estimators.shapley_cv import size_basis

    n = 8
    z = all_subsets(n)
    for p in range(5):
        game = size_basis(z.sum(axis=1), n, [p])[:, 0]
        np.testing.assert_allclose(shapley_from_table(game), 0.0, atol=1e-12)


@pytest.mark.parametrize("estimator", ["shapley", "shapley-cv"])
def test_every_fit_records_solver_rank_and_identification(estimator):
    n = 4
    z = all_subsets(n)
    y = z @ np.arange(1.0, n + 1)
    exact = fit(estimator, z, y)
    sampled = fit(estimator, z[1:-1], y[1:-1], v0=0.0, v1=10.0, use_exact=False)
    one = fit(estimator, np.array([[True], [False]]), np.array([2.0, 0.0]))
    for att in (exact, sampled, one):
        assert {"solver", "rank", "identified"} <= set(att.settings)
        assert att.settings["identified"] is True
    assert exact.settings["solver"] == "exact enumeration" and exact.settings["rank"] == n
    np.testing.assert_allclose(one.values, [2.0])
