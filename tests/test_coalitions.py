"""Coalition samplers: distributions, determinism, the prefix property, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from diffattr.coalitions import (
    SAMPLER_FOR_ESTIMATOR,
    SAMPLERS,
    AddOneInSampler,
    DatamodelSampler,
    LeaveOneOutSampler,
    PermutationSampler,
    ShapleyKernelSampler,
    UniformSampler,
    make_sampler,
    sampler_for_estimator,
    shapley_kernel_size_probs,
)
from diffattr.errors import DiffattrError
from diffattr.estimators import ESTIMATORS


def test_shapley_kernel_size_probs_match_the_kernel():
    # P(s) ∝ (n-1)/(s(n-s)); for n=4: weights 3/3, 3/4, 3/3 -> [4/11, 3/11, 4/11]
    np.testing.assert_allclose(shapley_kernel_size_probs(4), [4 / 11, 3 / 11, 4 / 11])
    # equivalently the kernel weight per subset times the number of subsets of that size
    n = 9
    kernel = np.array([(n - 1) / (math.comb(n, s) * s * (n - s)) for s in range(1, n)])
    per_size = kernel * np.array([math.comb(n, s) for s in range(1, n)])
    np.testing.assert_allclose(shapley_kernel_size_probs(n), per_size / per_size.sum())


def test_shapley_kernel_sizes_follow_the_kernel():
    n, m = 10, 12000
    z = ShapleyKernelSampler(n, seed=3).sample(m)
    sizes = z.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    observed = np.bincount(sizes, minlength=n)[1:n]
    expected = shapley_kernel_size_probs(n) * m
    assert chisquare(observed, expected).pvalue > 1e-3
    # given the size, the subset is uniform: every player is in half of the rows
    assert np.abs(z.mean(axis=0) - 0.5).max() < 0.03


def test_paired_rows_are_complements():
    z = ShapleyKernelSampler(7, seed=1, paired=True).sample(201)
    assert z.shape == (201, 7)
    np.testing.assert_array_equal(z[1::2], ~z[0:200:2])
    # the first row of each pair is an ordinary kernel draw of its own stream
    sizes = z[0::2].sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 6


@pytest.mark.parametrize(
    "sampler",
    [
        ShapleyKernelSampler(8, seed=5),
        ShapleyKernelSampler(8, seed=5, paired=True),
        DatamodelSampler(8, seed=5, alpha=0.3),
        UniformSampler(8, seed=5),
        PermutationSampler(8, seed=5),
        LeaveOneOutSampler(8, seed=5),
        AddOneInSampler(8, seed=5),
    ],
    ids=lambda s: f"{s.name}{'-paired' if getattr(s, 'paired', False) else ''}",
)
def test_deterministic_prefix_property_and_windows(sampler):
    cls, settings = type(sampler), sampler.settings()
    kwargs = {k: v for k, v in settings.items() if k in ("paired", "alpha", "p")}
    again = cls(sampler.n_players, sampler.seed, **kwargs)
    big = sampler.sample(40)
    np.testing.assert_array_equal(big, again.sample(40))
    for m in (0, 1, 5, 13, 21):
        np.testing.assert_array_equal(sampler.sample(m), big[: min(m, big.shape[0])])
    np.testing.assert_array_equal(sampler.rows(3, 17), big[3:17])
    assert big.dtype == bool and big.shape[1] == 8
    assert settings["sampler"] == sampler.name and settings["seed"] == 5


def test_different_seeds_give_different_rows():
    for cls in (ShapleyKernelSampler, DatamodelSampler, UniformSampler, PermutationSampler):
        a, b = cls(12, seed=0).sample(30), cls(12, seed=1).sample(30)
        assert not np.array_equal(a, b)


def test_datamodel_keeps_exactly_floor_alpha_n():
    z = DatamodelSampler(11, seed=2, alpha=0.4).sample(3000)
    assert (z.sum(axis=1) == math.floor(0.4 * 11)).all()
    # uniform over subsets of that size: each player in 4/11 of the rows
    assert np.abs(z.mean(axis=0) - 4 / 11).max() < 0.04
    assert DatamodelSampler(10).size == 5


@pytest.mark.parametrize("alpha", [0.01, 1.0, 1.5, -0.5])
def test_datamodel_rejects_alpha_that_keeps_none_or_all(alpha):
    with pytest.raises(DiffattrError, match="keeps floor"):
        DatamodelSampler(10, alpha=alpha)


def test_uniform_keeps_each_player_with_probability_half():
    z = UniformSampler(20, seed=4).sample(5000)
    assert abs(z.mean() - 0.5) < 0.01
    assert np.abs(z.mean(axis=0) - 0.5).max() < 0.03
    # independence: sizes are Binomial(20, 1/2), variance 5
    assert abs(z.sum(axis=1).var() - 5.0) < 0.5
    with pytest.raises(DiffattrError):
        UniformSampler(5, p=1.0)


def test_loo_and_add_one_in_designs():
    loo, aoi = LeaveOneOutSampler(5), AddOneInSampler(5)
    assert loo.n_required == aoi.n_required == 5
    np.testing.assert_array_equal(loo.sample(10), ~np.eye(5, dtype=bool))
    np.testing.assert_array_equal(aoi.sample(10), np.eye(5, dtype=bool))
    np.testing.assert_array_equal(aoi.sample(2), np.eye(5, dtype=bool)[:2])
    assert loo.sample(0).shape == (0, 5)


def test_permutation_rows_are_prefix_chains_of_permutations():
    n, perms = 6, 300
    sampler = PermutationSampler(n, seed=9)
    z = sampler.sample_permutations(perms)
    assert z.shape == (perms * (n - 1), n)
    firsts = []
    for t in range(perms):
        chain = z[t * (n - 1) : (t + 1) * (n - 1)]
        np.testing.assert_array_equal(chain.sum(axis=1), np.arange(1, n))
        assert (chain[:-1] <= chain[1:]).all()  # each row adds one player
        order = np.argsort(-chain.sum(axis=0), kind="stable")
        np.testing.assert_array_equal(order, sampler.permutation(t))
        firsts.append(int(np.argmax(chain[0])))
    # the first player of a uniform permutation is uniform
    assert chisquare(np.bincount(firsts, minlength=n)).pvalue > 1e-3


def test_registry_and_sampler_for_estimator():
    assert {"shapley-kernel", "datamodel", "uniform", "loo", "add-one-in", "permutation"} <= set(
        SAMPLERS.names()
    )
    assert SAMPLERS.get("banzhaf") is UniformSampler and SAMPLERS.get("aoi") is AddOneInSampler
    with pytest.raises(DiffattrError, match="unknown coalition sampler"):
        SAMPLERS.get("nope")
    assert set(SAMPLER_FOR_ESTIMATOR) == set(ESTIMATORS.names())
    for name in ESTIMATORS.names():
        s = sampler_for_estimator(name, 6, seed=1)
        assert s.sample(5).shape[1] == 6
    assert sampler_for_estimator("shapley", 6).paired is True
    assert make_sampler("datamodel", 10, 0, alpha=0.3).size == 3
    with pytest.raises(DiffattrError, match="bad settings"):
        make_sampler("uniform", 4, 0, alpha=0.3)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ShapleyKernelSampler(1), "n_players"),
        (lambda: UniformSampler(0), "n_players"),
        (lambda: UniformSampler(4, seed=-1), "seed"),
        (lambda: UniformSampler(4).sample(-2), "number of coalitions"),
        (lambda: UniformSampler(4).sample(2.5), "integer"),
    ],
)
def test_bad_arguments_are_clear_errors(build, match):
    with pytest.raises(DiffattrError, match=match):
        build()
