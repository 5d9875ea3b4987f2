"""Inception Score (Salimans et al. 2016) from any classifier's class probabilities.

IS = exp( E_x KL( p(y|x) || p(y) ) ), with p(y) the mean prediction over the split
(Salimans et al. 2016, "Improved techniques for training GANs", section 4). It is high
when each image is classified confidently and the classes are used evenly; it ranges from 1
(all images predicted alike) to C (confident, uniform over C classes).

The paper this package reproduces computes IS over one split; the usual literature value
uses 10 splits and reports their mean and standard deviation.
"""

from __future__ import annotations

import numpy as np

from diffattr.errors import DiffattrError


def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise DiffattrError(f"probabilities must be (N, C) with N >= 1, got shape {p.shape}")
    if (p < -1e-6).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise DiffattrError("probabilities must be non-negative rows that sum to 1")
    return np.clip(p, 0.0, 1.0)


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """(mean, std) of exp(E[KL(p(y|x) || p(y))]) over ``splits`` consecutive splits.

    Args:
        probs: (N, C) class probabilities p(y|x) of N images.
        splits: number of consecutive splits of (nearly) equal size (``np.array_split``);
            std is 0 with one split.
    """
    p = _check_probs(probs)
    if not 1 <= splits <= p.shape[0]:
        raise DiffattrError(
            f"splits must be in 1..{p.shape[0]} (the number of images), got {splits}"
        )
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        # KL with the convention 0 log 0 = 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(float(np.exp(terms.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))
