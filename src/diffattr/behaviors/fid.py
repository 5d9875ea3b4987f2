"""Frechet Inception Distance (Heusel et al. 2017), in any feature space.

FID fits a Gaussian to each set of features and returns the Frechet (2-Wasserstein)
distance between them (Heusel et al. 2017, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium", eq. 6)::

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

The matrix square root follows pytorch-fid: ``scipy.linalg.sqrtm`` of ``S_1 S_2``; if the
result is not finite or inaccurate (singular covariances, e.g. fewer samples than
dimensions) it is recomputed with ``eps`` added to both diagonals; small imaginary parts
from rounding are discarded, large ones are an error.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from diffattr.errors import DiffattrError


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (N, d) features, in float64 (N - 1 normalisation)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise DiffattrError(f"features must be (N, d), got shape {x.shape}")
    if x.shape[0] < 2:
        raise DiffattrError(f"FID needs at least 2 samples per set, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[np.ndarray, float]:
    """sqrtm(sigma1 @ sigma2) and its relative error ||X X - A||_F / ||A||_F."""
    a = sigma1 @ sigma2
    x = linalg.sqrtm(a)
    if not np.isfinite(x).all():
        return x, float("inf")
    norm = np.linalg.norm(a)
    err = np.linalg.norm(x @ x - a) / norm if norm > 0 else 0.0
    return x, float(err)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

    Args:
        eps: diagonal offset used when ``sqrtm(sigma1 @ sigma2)`` is singular or inaccurate,
            as in pytorch-fid.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DiffattrError(
            f"FID: statistics differ in shape: mean {mu1.shape} vs {mu2.shape}, "
            f"covariance {sigma1.shape} vs {sigma2.shape}"
        )
    if sigma1.shape != (mu1.size, mu1.size):
        raise DiffattrError(f"FID: covariance {sigma1.shape} does not match mean {mu1.shape}")
    diff = mu1 - mu2
    covmean, err = _sqrtm_product(sigma1, sigma2)
    if err > 1e-3:
        offset = np.eye(sigma1.shape[0]) * eps
        covmean, err = _sqrtm_product(sigma1 + offset, sigma2 + offset)
        if not np.isfinite(covmean).all():
            raise DiffattrError("FID: the covariance product has no finite square root")
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3 * max(1.0, float(np.max(np.abs(np.diagonal(covmean).real)))):
            raise DiffattrError(f"FID: square root has a large imaginary component ({imag:.3g})")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    # Rounding can make the distance of (near-)identical sets slightly negative.
    scale = float(np.trace(sigma1) + np.trace(sigma2)) + 1.0
    if value < 0 and value > -1e-6 * scale:
        value = 0.0
    return value


def fid_from_features(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """FID between two (N, d) feature sets (Heusel et al. 2017)."""
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)
