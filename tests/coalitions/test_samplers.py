"""Coalition samplers: distributions, determinism, the prefix property, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chisquare

from diffattr.coalitions import (
    AddOneInSampler,
    DatamodelSampler,
    LeaveOneOutSampler,
    LeverageSampler,
    PermutationSampler,
    ShapleyKernelSampler,
    UniformSampler,
    kept_players,
    shapley_kernel_size_probs,
)
from diffattr.coalitions.leverage import pair_classes
from diffattr.errors import DiffattrError


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
    z = ShapleyKernelSampler(n, seed=3, replace=True).sample(m)  # i.i.d. draws
    sizes = z.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    observed = np.bincount(sizes, minlength=n)[1:n]
    expected = shapley_kernel_size_probs(n) * m
    assert chisquare(observed, expected).pvalue > 1e-3
    # given the size, the subset is uniform: every player is in half of the rows
    assert np.abs(z.mean(axis=0) - 0.5).max() < 0.03


def test_paired_rows_are_complements():
    z = ShapleyKernelSampler(7, seed=1, paired=True, replace=True).sample(201)
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
        LeverageSampler(8, seed=5),
        LeverageSampler(8, seed=5, balanced=False),
    ],
    ids=lambda s: "-".join(
        [
            s.name,
            *(["paired"] if s.paired else []),
            *(["iid"] if not getattr(s, "balanced", 1) else []),
        ]
    ),
)
def test_deterministic_prefix_property_and_windows(sampler):
    cls, settings = type(sampler), sampler.settings()
    kwargs = {k: v for k, v in settings.items() if k in ("alpha", "p", "balanced")}
    if cls is ShapleyKernelSampler:
        kwargs["paired"] = settings["paired"]
    again = cls(sampler.n_players, sampler.seed, **kwargs)
    big = sampler.sample(40)
    np.testing.assert_array_equal(big, again.sample(40))
    for m in (0, 1, 5, 13, 21):
        np.testing.assert_array_equal(sampler.sample(m), big[: min(m, big.shape[0])])
    np.testing.assert_array_equal(sampler.rows(3, 17), big[3:17])
    assert big.dtype == bool and big.shape[1] == 8
    assert settings["sampler"] == sampler.name and settings["seed"] == 5


def test_different_seeds_give_different_rows():
    for cls in (
        ShapleyKernelSampler,
        DatamodelSampler,
        UniformSampler,
        PermutationSampler,
        LeverageSampler,
    ):
        a, b = cls(12, seed=0).sample(30), cls(12, seed=1).sample(30)
        assert not np.array_equal(a, b)


def test_datamodel_keeps_exactly_floor_alpha_n():
    z = DatamodelSampler(11, seed=2, alpha=0.4).sample(3000)
    assert (z.sum(axis=1) == math.floor(0.4 * 11)).all()
    # uniform over subsets of that size: each player in 4/11 of the rows
    assert np.abs(z.mean(axis=0) - 4 / 11).max() < 0.04
    assert DatamodelSampler(10).size == 5


def test_datamodel_floor_is_exact_for_decimal_alpha():
    # 0.57 * 100 is 56.99999999999999 in binary floating point; the decimal floor is 57
    assert math.floor(0.57 * 100) == 56
    assert kept_players(0.57, 100) == 57
    assert DatamodelSampler(100, alpha=0.57).size == 57
    assert (DatamodelSampler(100, seed=1, alpha=0.57).sample(20).sum(axis=1) == 57).all()
    assert kept_players(0.29, 100) == 29 and kept_players(0.1, 30) == 3
    assert kept_players(1 / 3, 3) == 0  # 0.3333333333333333 * 3 < 1


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


def test_pair_ids_name_the_pair_of_each_stream_row():
    for sampler in (ShapleyKernelSampler(6, seed=0, paired=True), LeverageSampler(6, seed=0)):
        np.testing.assert_array_equal(sampler.pair_ids([5, 0, 1, 4, 9]), [2, 0, 0, 2, 4])
        z = sampler.sample(20)
        ids = sampler.pair_ids(np.arange(20))
        for pid in range(10):
            a, b = np.flatnonzero(ids == pid)
            np.testing.assert_array_equal(z[a], ~z[b])
    assert ShapleyKernelSampler(6, paired=False).pair_ids([0, 1]) is None
    assert UniformSampler(6).pair_ids([0, 1]) is None
    with pytest.raises(DiffattrError, match=">= 0"):
        LeverageSampler(6).pair_ids([-1])


# --------------------------------------------------------------------------- leverage


def test_leverage_pair_classes_and_capacities():
    ks, mass, cap = pair_classes(6)
    np.testing.assert_array_equal(ks, [1, 2, 3])
    np.testing.assert_array_equal(mass, [2.0, 2.0, 1.0])  # sizes {1,5}, {2,4}, {3}
    np.testing.assert_array_equal(cap, [6, 15, 10])  # C(6,3) = 20 halves make 10 pairs
    assert LeverageSampler(6).max_rows == 2 * (2**5 - 1)
    # large classes are capped, exactly where C(n, k) passes 2^62
    _, _, cap = pair_classes(70)
    exact = [min(math.comb(70, k) // (2 if 2 * k == 70 else 1), 1 << 62) for k in range(1, 36)]
    np.testing.assert_array_equal(cap, exact)


@pytest.mark.parametrize("balanced", [True, False])
def test_leverage_sizes_are_apportioned_uniformly_over_sizes(balanced):
    # leverage scores are equal for every coalition size (Musco & Witter 2025): after U
    # pairs each class holds its share mass_k / sum(mass) of U, up to rounding
    n, pairs = 12, 300
    z = LeverageSampler(n, seed=4, balanced=balanced).sample(2 * pairs)
    assert (z[1::2] == ~z[0::2]).all()
    k = np.minimum(z[0::2].sum(axis=1), n - z[0::2].sum(axis=1))
    counts = np.bincount(k, minlength=n // 2 + 1)[1:]
    _, mass, cap = pair_classes(n)
    share = pairs * mass / mass.sum()
    # class 1 holds only C(12, 1) = 12 pairs; its surplus share goes to the other classes
    assert counts[0] == cap[0]
    rest = share[1:] * (pairs - cap[0]) / share[1:].sum()
    assert np.abs(counts[1:] - rest).max() <= 1.0
    # without replacement: no pair twice
    keys = {row.tobytes() if row[0] else (~row).tobytes() for row in z[0::2]}
    assert len(keys) == pairs


def test_leverage_balanced_blocks_spread_players_evenly_within_a_class():
    n = 10
    z = LeverageSampler(n, seed=2).sample(2 * 90)[0::2]
    sizes = z.sum(axis=1)
    for k in (2, 3, 4):
        rows = z[sizes == k]
        per_player = rows.sum(axis=0)
        assert per_player.max() - per_player.min() <= 2  # blocks of permutations
    iid = LeverageSampler(n, seed=2, balanced=False).sample(2 * 90)[0::2]
    spreads = [np.ptp(iid[iid.sum(axis=1) == k].sum(axis=0)) for k in (2, 3, 4)]
    assert max(spreads) > 2


def test_leverage_within_a_class_every_subset_is_equally_likely():
    # blocks of random permutations are uniform subsets marginally: the first pair of
    # class 2 (row 2 of the stream for n = 5) over many seeds
    n = 5
    firsts = [LeverageSampler(n, seed=s).sample(4)[2] for s in range(2000)]
    codes = [int(m.astype(int) @ (1 << np.arange(n))) for m in firsts]
    sizes = {bin(c).count("1") for c in codes}
    assert sizes == {2}
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 10 and chisquare(counts).pvalue > 1e-3


def test_leverage_exhausts_small_designs_without_repeats():
    s = LeverageSampler(4, seed=0)
    z = s.sample(100)
    assert z.shape == (14, 4)  # 2^4 - 2 coalitions, every one once
    assert len({row.tobytes() for row in z}) == 14
    with pytest.raises(DiffattrError, match="no more"):
        s._row(14)


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
