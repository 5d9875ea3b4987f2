"""Endpoint control variates, distinct coalitions and efficiency (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from diffattr.coalitions import (
    DatamodelSampler,
    LeverageSampler,
    ShapleyKernelSampler,
    UniformSampler,
)
from diffattr.errors import DiffattrError
from diffattr.estimators import ESTIMATORS, CoalitionTable, all_subsets, fit, shapley_from_table
from diffattr.estimators.linalg import efficient
from diffattr.store import mask_to_str

N = 10


class OffTrendGame:
    """FID-like: a convex function of how much data is kept, minus separated per-player
    effects, one pairwise interaction -- and a null value (an untrained model) far above
    the value the coalitions' trend extrapolates to at the empty coalition."""

    def __init__(self, n: int = N, null: float = 90.0) -> None:
        self.n = n
        self.w = np.linspace(0.3, 3.0, n)[np.random.default_rng(0).permutation(n)]
        table = self(all_subsets(n))
        table[0] = null
        self.table = table
        self.exact = shapley_from_table(table)
        self.v0, self.v1 = float(table[0]), float(table[-1])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z).astype(float)
        return 40.0 / (1.0 + 0.4 * z.sum(axis=1)) - z @ self.w + 0.5 * z[:, 0] * z[:, 1]

    def values(self, masks: np.ndarray) -> np.ndarray:
        codes = (masks.astype(np.int64) << np.arange(self.n)).sum(axis=1)
        return self.table[codes]


def _fit_drawn(game, settings: dict, m: int, seed: int):
    s = ESTIMATORS.parse(settings)
    masks, pair_ids = s.draw(game.n, m, seed)
    table = CoalitionTable(masks, game.values(masks), v0=game.v0, v1=game.v1, pair_ids=pair_ids)
    return s.build().fit(table)[0]


CONSTRAINED = [
    {"name": "shapley"},
    {"name": "shapley", "endpoints": "given"},
    {"name": "shapley", "sampler": "leverage"},
    {"name": "shapley", "sampler": {"name": "shapley-kernel", "paired": False}},
    {"name": "shapley-cv"},
    {"name": "shapley-cv", "endpoints": "given"},
    {"name": "shapley-cv", "sampler": {"name": "shapley-kernel", "paired": False}},
    {"name": "permutation-shapley"},
    {"name": "permutation-shapley", "endpoints": "given"},
]


@pytest.mark.parametrize("settings", CONSTRAINED, ids=lambda s: str(s))
def test_efficiency_is_exact_for_every_constrained_estimator(settings):
    game = OffTrendGame()
    att = _fit_drawn(game, {**settings, "use_exact": False}, 72, seed=1)
    assert att.values.sum() == pytest.approx(game.v1 - game.v0, abs=1e-9)


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "shapley", "sampler": "leverage"},
        {"name": "shapley"},  # distinct kernel rows, post-stratified
        {"name": "shapley-cv"},
        {"name": "shapley-cv", "sampler": "shapley-kernel"},
        {"name": "shapley", "sampler": {"name": "shapley-kernel", "paired": False}},
    ],
    ids=lambda s: str(s),
)
def test_fitted_endpoints_give_exact_values_on_a_complete_table(settings):
    game = OffTrendGame(n=7)
    # the regression itself (not the exact-table shortcut) on every coalition
    att = _fit_drawn(game, {**settings, "use_exact": False}, 2**7, seed=0)
    assert att.settings["rows_used"] == 2**7 - 2 and att.settings["endpoints"] == "fitted"
    np.testing.assert_allclose(att.values, game.exact, atol=1e-9)


@pytest.mark.parametrize("estimator", ["shapley", "shapley-cv"])
def test_on_a_complete_table_any_endpoint_gives_the_exact_values_after_the_shift(estimator):
    # why the control variate is exact in the limit: changing v(empty) or v(full) alone moves
    # every exact value by the same amount, which the shift to v1 - v0 puts back
    game = OffTrendGame(n=7)
    z = all_subsets(7)[1:-1]
    y = game.values(z)
    for a, b in [(game.v0, game.v1), (0.0, game.v1), (-100.0, 3.0), (37.0, -12.0)]:
        att = fit(estimator, z, y, v0=a, v1=b, endpoints="given", use_exact=False)
        shifted = efficient(att.values[:, None], np.array([game.v1 - game.v0]))[:, 0]
        np.testing.assert_allclose(shifted, game.exact, atol=1e-9)


def test_an_off_trend_null_breaks_the_given_endpoints_and_the_default_recovers_the_ranking():
    game = OffTrendGame()
    old = {"name": "shapley", "endpoints": "given", "sampler": {"name": "shapley-kernel"}}
    given, default, cv = [], [], []
    for seed in range(12):
        given.append(spearmanr(_fit_drawn(game, old, 64, seed).values, game.exact).statistic)
        att = _fit_drawn(game, {"name": "shapley"}, 64, seed)
        default.append(spearmanr(att.values, game.exact).statistic)
        cv.append(spearmanr(_fit_drawn(game, {"name": "shapley-cv"}, 64, seed).values, game.exact))
    # the null's gap is handed to players at random by the given-endpoint fit
    assert np.mean(given) < 0.4
    assert np.mean(default) > 0.9 and np.min(default) > 0.8
    # with the size control variates as well, every draw gives the exact ranking
    assert min(c.statistic for c in cv) > 0.999


@pytest.mark.parametrize(
    "sampler, low, high",
    [
        ("shapley-kernel", 0.75, 1.35),  # distinct rows: stratified variance with the fpc
        ({"name": "shapley-kernel", "replace": True}, 0.75, 1.35),  # i.i.d.: Hansen-Hurwitz
        ({"name": "leverage", "balanced": False}, 0.75, 1.35),
        # balanced leverage rows also stratify by player, which the variance does not see
        ("leverage", 0.2, 1.0),
    ],
    ids=str,
)
def test_fitted_standard_errors_match_the_spread_of_the_estimates(sampler, low, high):
    game = OffTrendGame()
    settings = {"name": "shapley", "sampler": sampler, "use_exact": False}
    values, stderrs = [], []
    for seed in range(40):
        att = _fit_drawn(game, settings, 160, seed)
        values.append(att.values)
        stderrs.append(att.stderr)
    ratio = np.std(values, axis=0, ddof=1) / np.mean(stderrs, axis=0)
    assert low < ratio.mean() < high


# --------------------------------------------------------------------------- distinct rows


@pytest.mark.parametrize(
    "sampler",
    [
        ShapleyKernelSampler(10, seed=3, paired=True),
        ShapleyKernelSampler(10, seed=3, paired=False),
        LeverageSampler(10, seed=3),
        DatamodelSampler(10, seed=3),
        UniformSampler(10, seed=3),
    ],
    ids=lambda s: f"{s.name}{'-paired' if s.paired else ''}",
)
def test_no_sampler_feeding_jobs_repeats_a_coalition(sampler):
    z = sampler.sample(400)
    keys = [mask_to_str(m) for m in z]
    assert len(set(keys)) == len(keys)
    # and the stream runs out when every coalition is drawn, instead of repeating
    small = type(sampler)(
        5, seed=1, **({"paired": sampler.paired} if sampler.name == "shapley-kernel" else {})
    )
    every = small.sample(10_000)
    assert len({mask_to_str(m) for m in every}) == every.shape[0] == small.max_rows


def test_distinct_kernel_rows_repeat_nothing_where_iid_rows_do():
    iid = ShapleyKernelSampler(N, seed=0, paired=True, replace=True).sample(64)
    distinct = ShapleyKernelSampler(N, seed=0, paired=True).sample(64)
    assert len({mask_to_str(m) for m in iid}) < 64 == len({mask_to_str(m) for m in distinct})
    # sizes still follow the kernel until a class runs out (10 pairs of sizes {1, 9})
    sizes = np.minimum(distinct.sum(axis=1), N - distinct.sum(axis=1))
    assert (sizes == 1).sum() <= 20 and (sizes == 1).sum() >= 10


def test_a_singular_design_is_not_identified_whatever_lapack_estimates():
    # 9 complementary pairs span 10 directions of the 11 the fitted endpoints need; LAPACK's
    # condition estimate once read this draw's Gram matrix as well conditioned (rcond 2e-4)
    settings = ESTIMATORS.parse({"name": "shapley", "sampler": "leverage"})
    z = settings.sampler.build(N, 140).sample(18)
    assert np.linalg.matrix_rank(np.column_stack([z, np.ones(18)])) == N
    with pytest.raises(DiffattrError, match=r"is not identified \(rank 10 < 11\)"):
        settings.build().fit(z, z @ np.arange(1.0, N + 1), v0=0.0, v1=55.0)
