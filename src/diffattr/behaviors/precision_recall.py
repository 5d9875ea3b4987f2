"""k-NN manifold metrics: precision and recall (Kynkaanniemi et al. 2019), density and
coverage (Naeem et al. 2020).

Each feature set stands for a manifold: the union of balls around its points whose radius is
the distance to the point's k-th nearest neighbour in the same set.

* precision: fraction of generated points inside the real manifold; recall: fraction of
  real points inside the generated manifold (Kynkaanniemi et al. 2019, "Improved precision
  and recall metric for assessing generative models", eq. 1-3; k = 3).
* density: (1 / kM) sum over generated points of the number of real balls holding them
  (can exceed 1); coverage: fraction of real balls holding at least one generated point
  (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models",
  eq. 3-4; they recommend k = 5).

Distances are computed in row chunks with ``torch.cdist`` in float64, so memory stays at
``chunk x M`` whatever the set sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from diffattr.errors import DiffattrError

CHUNK = 2048


def _as_tensor(x: np.ndarray, what: str) -> torch.Tensor:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise DiffattrError(f"{what} features must be (N, d) with N >= 1, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def _check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise DiffattrError(
            f"real and generated features differ in dimension: {real.shape[1]} vs {fake.shape[1]}"
        )


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = CHUNK) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    x = _as_tensor(features, "manifold")
    n = x.shape[0]
    if not 1 <= k < n:
        raise DiffattrError(f"k-NN radii need 1 <= k < number of points ({n}), got k = {k}")
    out = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, chunk):
        d = torch.cdist(x[s : s + chunk], x)
        # The point itself is at distance 0, so the k-th neighbour is the (k+1)-th smallest.
        out[s : s + chunk] = d.kthvalue(k + 1, dim=1).values
    return out.numpy()


def _inside(d: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """d[i, j] <= radii[j], with a relative tolerance for rounding of the distances."""
    return d <= radii[None, :] * (1 + 1e-9) + 1e-12


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each point: is it inside at least one ball (centre, radius)?"""
    out = torch.empty(points.shape[0], dtype=torch.bool)
    for s in range(0, points.shape[0], CHUNK):
        out[s : s + CHUNK] = _inside(torch.cdist(points[s : s + CHUNK], centres), radii).any(1)
    return out


def _radii_tensor(radii: np.ndarray | None, x: np.ndarray, k: int) -> torch.Tensor:
    if radii is None:
        radii = knn_radii(x, k)
    r = torch.as_tensor(np.asarray(radii, dtype=np.float64))
    if r.shape != (np.asarray(x).shape[0],):
        raise DiffattrError(f"radii must hold one value per point, got shape {tuple(r.shape)}")
    return r


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = 3,
    real_radii: np.ndarray | None = None,
    fake_radii: np.ndarray | None = None,
) -> tuple[float, float]:
    """Improved precision and recall of Kynkaanniemi et al. (2019) with k-NN balls.

    Args:
        real, fake: (M, d) real and (N, d) generated features.
        k: neighbourhood size (3 in the paper).
        real_radii, fake_radii: precomputed ``knn_radii`` of each set (same k), e.g. cached
            radii of a fixed real reference.
    """
    r, f = _as_tensor(real, "real"), _as_tensor(fake, "generated")
    _check_pair(r, f)
    precision = _covered(f, r, _radii_tensor(real_radii, real, k)).double().mean()
    recall = _covered(r, f, _radii_tensor(fake_radii, fake, k)).double().mean()
    return float(precision), float(recall)


def precision(real: np.ndarray, fake: np.ndarray, k: int = 3, real_radii=None) -> float:
    """Fraction of generated points inside the real k-NN manifold (Kynkaanniemi et al. 2019)."""
    r, f = _as_tensor(real, "real"), _as_tensor(fake, "generated")
    _check_pair(r, f)
    return float(_covered(f, r, _radii_tensor(real_radii, real, k)).double().mean())


def recall(real: np.ndarray, fake: np.ndarray, k: int = 3, fake_radii=None) -> float:
    """Fraction of real points inside the generated k-NN manifold (Kynkaanniemi et al. 2019)."""
    r, f = _as_tensor(real, "real"), _as_tensor(fake, "generated")
    _check_pair(r, f)
    return float(_covered(r, f, _radii_tensor(fake_radii, fake, k)).double().mean())


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Density and coverage of Naeem et al. (2020), eq. 3-4, from real k-NN balls only.

    Args:
        real, fake: (M, d) real and (N, d) generated features.
        k: neighbourhood size (5 is the paper's recommendation).
        real_radii: precomputed ``knn_radii(real, k)``.
    """
    r, f = _as_tensor(real, "real"), _as_tensor(fake, "generated")
    _check_pair(r, f)
    radii = _radii_tensor(real_radii, real, k)
    count = 0.0
    covered = torch.zeros(r.shape[0], dtype=torch.bool)
    for s in range(0, f.shape[0], CHUNK):
        inside = _inside(torch.cdist(f[s : s + CHUNK], r), radii)
        count += float(inside.sum())
        covered |= inside.any(0)
    density = count / (k * f.shape[0])
    return float(density), float(covered.double().mean())
