import numpy as np
import pytest

from diffattr.errors import DiffattrError
from diffattr.evaluate.lds import lds, lds_over_seeds


def test_linear_game_has_lds_100():
    rng = np.random.default_rng(0)
    w = rng.normal(size=10)
    masks = rng.random((40, 10)) < 0.5
    assert lds(w, masks, masks @ w) == pytest.approx(100.0)
    assert lds(-w, masks, masks @ w) == pytest.approx(-100.0)


def test_noise_lowers_lds_and_intervals():
    rng = np.random.default_rng(1)
    w = rng.normal(size=10)
    masks = rng.random((64, 10)) < 0.5
    clean = masks @ w
    targets = np.stack([clean + rng.normal(scale=1.0, size=64) for _ in range(3)])
    res = lds_over_seeds(w, masks, targets, n_bootstrap=200)
    assert 20 < res.mean < 100
    assert res.ci95 > 0 and res.bootstrap_low < res.mean < res.bootstrap_high
    unrelated = lds_over_seeds(rng.normal(size=10), masks, targets, n_bootstrap=50)
    assert abs(unrelated.mean) < res.mean


def test_bad_inputs():
    with pytest.raises(DiffattrError):
        lds(np.ones(3), np.ones((2, 3), bool), np.ones(2))
    with pytest.raises(DiffattrError):
        lds(np.ones(3), np.ones((4, 3), bool), np.ones(3))


def test_fidelity_numbers():
    from diffattr.evaluate.fidelity import fidelity

    e = np.arange(10.0)
    f = fidelity(2 * e + 1, e)
    assert f["pearson"] == pytest.approx(1.0) and f["spearman"] == pytest.approx(1.0)
    assert f["mae"] == pytest.approx(np.mean(e + 1))
    assert fidelity(-e, e)["spearman"] == pytest.approx(-1.0)


def test_retraining_seed_agreement_and_the_per_seed_pearson():
    """Retraining's seed-to-seed agreement is the mean Pearson over pairs of seeds, and the
    method's per-seed Pearson the mean over seeds; one seed gives neither, not a number."""
    from scipy.stats import pearsonr

    from diffattr.evaluate.fidelity import fidelity, per_seed_pearson, seed_agreement

    rng = np.random.default_rng(0)
    truth = rng.normal(size=20)
    seeds = truth + rng.normal(scale=[[0.3], [0.6], [1.0]], size=(3, 20))
    pairs = [pearsonr(seeds[a], seeds[b]).statistic for a, b in ((0, 1), (0, 2), (1, 2))]
    agree = seed_agreement(seeds)
    assert agree["pearson"] == pytest.approx(np.mean(pairs))
    assert (agree["min"], agree["max"], agree["pairs"]) == (min(pairs), max(pairs), 3)
    approx = truth + rng.normal(scale=0.2, size=20)
    per_seed = [pearsonr(approx, row).statistic for row in seeds]
    assert per_seed_pearson(approx, seeds) == pytest.approx(np.mean(per_seed))
    # the noisier the seeds, the lower the agreement: a ceiling the mean's Pearson hides
    assert per_seed_pearson(approx, seeds) < fidelity(approx, seeds.mean(0))["pearson"]
    assert seed_agreement(seeds[:1]) is None and per_seed_pearson(approx, seeds[:1]) is None
    assert seed_agreement(seeds[:, :2]) is None  # two subsets: no correlation
    flat = np.vstack([seeds[0], np.ones(20)])
    assert seed_agreement(flat)["pairs"] == 0 and np.isnan(seed_agreement(flat)["pearson"])
    with pytest.raises(DiffattrError):
        seed_agreement(truth)


def test_interval_over_seeds_uses_the_t_quantile():
    """Three per-seed LDS values: half-width t(0.975, 2) sd / sqrt(3), not 1.96 sd / sqrt(3)."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=8)
    masks = rng.random((30, 8)) < 0.5
    targets = np.stack([masks @ w + rng.normal(scale=s, size=30) for s in (0.5, 1.5, 3.0)])
    res = lds_over_seeds(w, masks, targets, n_bootstrap=0)
    per = np.array(res.per_seed)
    expected = 4.302652729911275 * per.std(ddof=1) / np.sqrt(3)
    assert res.ci95 == pytest.approx(expected, rel=1e-6)
    assert res.ci95 > 1.96 * per.std(ddof=1) / np.sqrt(3) * 2


def test_protocol_defaults_follow_the_paper():
    from diffattr.evaluate.lds import LDSProtocol

    p = LDSProtocol.from_options(None, None, None)
    assert (p.alphas, p.test_subsets, p.seeds) == ((0.5,), 100, 3)
    q = LDSProtocol.from_options([0.25, 0.75], None, None, quick=True)
    assert (q.alphas, q.test_subsets, q.seeds) == ((0.25, 0.75), 16, 1)
    with pytest.raises(DiffattrError, match="alpha"):
        LDSProtocol.from_options([1.5], None, None)


def test_per_image_lds_is_each_images_lds_averaged():
    from diffattr.evaluate.lds import lds, lds_per_image

    rng = np.random.default_rng(0)
    masks = rng.random((12, 5)) < 0.5
    values = rng.normal(size=(3, 5))  # three generated images' attributions
    exact = masks @ values.T  # (B, I): behaviors the attributions predict exactly
    t = np.stack([exact.T, -exact.T])  # seed 0: as predicted, seed 1: reversed
    t[1, 2] = exact[:, 2]  # image 2 as predicted under both seeds
    score, per_image = lds_per_image(values, masks, t, n_bootstrap=50)
    assert score.per_seed[0] == pytest.approx(100.0)
    assert score.per_seed[1] == pytest.approx((-100 - 100 + 100) / 3)
    assert score.mean == pytest.approx(np.mean(score.per_seed))
    assert per_image == pytest.approx([0.0, 0.0, 100.0])
    assert per_image[0] == pytest.approx(np.mean([lds(values[0], masks, t[s, 0]) for s in (0, 1)]))
    assert score.n_test == 12 and score.bootstrap_low <= score.bootstrap_high


def test_row_spearman_is_scipys_spearman_per_row_with_ties_and_constant_rows():
    from scipy.stats import spearmanr

    from diffattr.evaluate.lds import _mean_spearman, row_spearman

    rng = np.random.default_rng(5)
    a = np.round(rng.normal(size=(6, 25)), 0)  # many ties
    b = rng.normal(size=(6, 25))
    b[3] = -a[3]  # exactly reversed ranks
    a[4] = 2.0  # a constant row: no rank correlation
    got = row_spearman(a, b)
    want = [100 * spearmanr(x, y).statistic if np.ptp(x) > 0 else np.nan for x, y in zip(a, b)]
    assert np.isnan(got[4]) and np.isnan(want[4])
    assert got[3] == pytest.approx(-100.0)
    assert np.delete(got, 4) == pytest.approx(np.delete(want, 4), abs=1e-9)
    assert _mean_spearman(a, b) == pytest.approx(np.nanmean(want), abs=1e-9)


def test_paired_difference_resolves_a_better_attribution_and_not_a_tie():
    from diffattr.evaluate.lds import lds_difference

    rng = np.random.default_rng(3)
    n, b = 10, 60
    w = rng.normal(size=n)
    masks = rng.random((b, n)) < 0.5
    targets = np.stack([masks @ w + rng.normal(0, 0.5, b) for _ in range(3)])
    noisy = w + rng.normal(0, 2.0, n)
    d = lds_difference(noisy, w, masks, targets, n_bootstrap=300)
    full_b = lds_over_seeds(w, masks, targets, n_bootstrap=0).mean
    full_a = lds_over_seeds(noisy, masks, targets, n_bootstrap=0).mean
    assert d.difference == pytest.approx(full_b - full_a)
    assert d.resolved and d.bootstrap_low > 0 and d.to_dict()["n_test"] == b
    same = lds_difference(w, w.copy(), masks, targets, n_bootstrap=100)
    assert same.difference == 0 and not same.resolved
