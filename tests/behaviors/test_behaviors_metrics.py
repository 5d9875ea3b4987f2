"""Behaviour metrics as plain functions of arrays: closed forms and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from diffattr.behaviors.diversity import (
    assign_clusters,
    class_entropy,
    cluster_entropy,
    entropy_bits,
    fit_clusters,
)
from diffattr.behaviors.fid import fid_from_features, frechet_distance, gaussian_stats
from diffattr.behaviors.inception_score import inception_score
from diffattr.behaviors.local import denoising_loss, mse, nrmse, ssim, ssim_window
from diffattr.behaviors.precision_recall import (
    density_coverage,
    knn_radii,
    precision,
    precision_recall,
    recall,
)
from diffattr.errors import DiffattrError

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    a = RNG.normal(size=(300, 16))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_diagonal_gaussians_matches_closed_form():
    mu1, mu2 = RNG.normal(size=5), RNG.normal(size=5)
    s1, s2 = RNG.uniform(0.1, 3.0, size=5), RNG.uniform(0.1, 3.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_fid_full_covariances_matches_symmetric_formula():
    d = 8
    a, b = RNG.normal(size=(d, d)), RNG.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = RNG.normal(size=d), RNG.normal(size=d)
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric PSD matrix.
    r = linalg.sqrtm(s1).real
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_fid_is_finite_for_singular_covariances():
    # Fewer samples than dimensions: rank-deficient covariances.
    a, b = RNG.normal(size=(5, 32)), RNG.normal(size=(6, 32)) + 1.0
    value = fid_from_features(a, b)
    assert math.isfinite(value) and value > 0
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-4)


def test_fid_grows_with_mean_shift():
    a = RNG.normal(size=(500, 4))
    near, far = fid_from_features(a, a + 0.1), fid_from_features(a, a + 2.0)
    assert near == pytest.approx(4 * 0.01, rel=1e-6)
    assert far == pytest.approx(4 * 4.0, rel=1e-6)


def test_fid_bad_shapes_are_clear_errors():
    with pytest.raises(DiffattrError, match="differ in shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(DiffattrError, match="at least 2"):
        gaussian_stats(np.zeros((1, 3)))


# ----------------------------------------------------------------------------- IS


def test_inception_score_uniform_one_hot_equals_num_classes():
    c = 7
    probs = np.eye(c)[np.arange(700) % c]
    mean, std = inception_score(probs, splits=1)
    assert mean == pytest.approx(c)
    mean10, std10 = inception_score(probs, splits=10)
    assert mean10 == pytest.approx(c) and std10 == pytest.approx(0.0, abs=1e-12)


def test_inception_score_constant_predictions_is_one():
    probs = np.tile(RNG.dirichlet(np.ones(5)), (50, 1))
    assert inception_score(probs)[0] == pytest.approx(1.0)
    assert inception_score(np.eye(5)[np.zeros(50, dtype=int)])[0] == pytest.approx(1.0)


def test_inception_score_rejects_bad_input():
    with pytest.raises(DiffattrError, match="sum to 1"):
        inception_score(np.ones((4, 3)))
    with pytest.raises(DiffattrError, match="splits"):
        inception_score(np.eye(3), splits=5)


# ----------------------------------------------------------------------------- P/R, D/C


def test_knn_radii_on_a_line():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    np.testing.assert_allclose(knn_radii(x, k=1), [1, 1, 2, 3])
    np.testing.assert_allclose(knn_radii(x, k=2), [3, 2, 3, 5])


def test_precision_recall_of_identical_sets_is_one():
    a = RNG.normal(size=(400, 8))
    p, r = precision_recall(a, a, k=3)
    assert p == 1.0 and r == 1.0
    d, c = density_coverage(a, a, k=5)
    assert c == 1.0 and 0.5 < d < 2.0


def test_precision_recall_of_disjoint_sets_is_zero():
    a = RNG.normal(size=(200, 4))
    b = a + 100.0
    assert precision_recall(a, b) == (0.0, 0.0)
    assert density_coverage(a, b) == (0.0, 0.0)


def test_precision_and_recall_separate_fidelity_from_diversity():
    real = RNG.normal(size=(1000, 2))
    collapsed = RNG.normal(size=(1000, 2)) * 0.1  # inside the real manifold, low diversity
    assert precision(real, collapsed) > 0.95
    assert recall(real, collapsed) < 0.5
    radii = knn_radii(real, 3)
    assert precision(real, collapsed, real_radii=radii) == precision(real, collapsed)


def test_manifold_metrics_check_dimensions():
    with pytest.raises(DiffattrError, match="dimension"):
        precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(DiffattrError, match="k-NN"):
        knn_radii(np.zeros((3, 2)), k=3)


# ----------------------------------------------------------------------------- entropies


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_entropy_of_uniform_histogram_is_log2_k(k):
    assert entropy_bits(np.full(k, 7)) == pytest.approx(math.log2(k))


def test_entropy_ignores_empty_bins_and_rejects_empty_histograms():
    assert entropy_bits([5, 0, 5, 0]) == pytest.approx(1.0)
    with pytest.raises(DiffattrError):
        entropy_bits([0, 0])


def test_class_entropy():
    assert class_entropy(np.eye(4)[np.arange(40) % 4]) == pytest.approx(2.0)
    assert class_entropy(np.eye(4)[np.zeros(40, dtype=int)]) == pytest.approx(0.0)


def test_cluster_entropy_uniform_over_clusters_is_log2_k():
    centres = np.arange(20, dtype=float)[:, None] * 10.0 * np.ones((1, 3))
    points = np.repeat(centres, 5, axis=0) + RNG.normal(scale=0.1, size=(100, 3))
    assert cluster_entropy(points, centres) == pytest.approx(math.log2(20))
    assert cluster_entropy(points[:5], centres) == pytest.approx(0.0)


def test_fit_clusters_is_deterministic_and_finds_blobs():
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    points = np.repeat(centres, 50, axis=0) + RNG.normal(size=(200, 2))
    c1 = fit_clusters(points, 4, seed=0)
    c2 = fit_clusters(points, 4, seed=0)
    np.testing.assert_array_equal(c1, c2)
    labels = assign_clusters(points, c1)
    assert sorted(np.bincount(labels, minlength=4)) == [50, 50, 50, 50]
    assert cluster_entropy(points, c1) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- local


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 4, 4)])
def test_ssim_of_an_image_with_itself_is_one(shape):
    x = torch.rand(shape) * 2 - 1
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)
    assert np.all(mse(x, x) == 0) and np.all(nrmse(x, x) == 0)


def test_ssim_of_constant_images_matches_closed_form():
    a, b = torch.full((1, 1, 8, 8), -0.5), torch.full((1, 1, 8, 8), 0.5)  # 0.25 and 0.75
    c1 = 0.01**2
    expected = (2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1)
    assert ssim(a, b)[0] == pytest.approx(expected)


def test_ssim_drops_with_noise_and_is_symmetric():
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    s = ssim(x, y)
    assert np.all(s < 0.95)
    np.testing.assert_allclose(s, ssim(y, x))


def test_ssim_window_for_small_images():
    assert ssim_window(8, 8) == (5, pytest.approx(1.5 * 5 / 11))
    assert ssim_window(16, 16)[0] == 9
    assert ssim_window(32, 32) == (11, pytest.approx(1.5))


def test_mse_and_nrmse_values():
    black, white = torch.full((2, 1, 4, 4), -1.0), torch.full((2, 1, 4, 4), 1.0)
    np.testing.assert_allclose(mse(black, white), 1.0)  # on the [0, 1] scale
    np.testing.assert_allclose(nrmse(black, white), 1.0)  # ||w - b|| / ||w||
    with pytest.raises(DiffattrError, match="differ in shape"):
        mse(black, white[:1])


class _ZeroUNet(torch.nn.Module):
    """Predicts eps = 0, so its loss is the mean squared noise (about 1)."""

    def forward(self, x, t):
        class Out:
            sample = torch.zeros_like(x)

        return Out()


def test_denoising_loss_is_fixed_and_batch_size_invariant():
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    a = denoising_loss(_ZeroUNet(), images, seed=3, batch_size=7)
    b = denoising_loss(_ZeroUNet(), images, seed=3, batch_size=1000)
    assert a.shape == (6,)
    np.testing.assert_allclose(a, b)
    assert np.all(np.abs(a - 1.0) < 0.5)
    c = denoising_loss(_ZeroUNet(), images, seed=4)
    assert not np.allclose(a, c)


def test_denoising_loss_with_a_unet():
    from diffattr.diffusion.unet import make_unet

    unet = make_unet("tiny", 8, 1, seed=0)
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    loss = denoising_loss(unet, images, timesteps=[10, 500, 990], num_noises=2)
    assert loss.shape == (3,) and np.all(np.isfinite(loss)) and np.all(loss > 0)
    np.testing.assert_allclose(
        loss, denoising_loss(unet, images, timesteps=[10, 500, 990], num_noises=2), rtol=1e-6
    )
    with pytest.raises(DiffattrError, match="timesteps"):
        denoising_loss(unet, images, timesteps=[1000])
