"""Fidelity of a counterfactual method: does F(method on S) track F(retrain on S)?

Lin et al. (2025, App. D) report Pearson 0.82 between sFT and retraining on CIFAR-20.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr

from diffattr.errors import DiffattrError


def fidelity(approx: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and mean absolute error between paired behaviors."""
    a, e = np.asarray(approx, dtype=float), np.asarray(exact, dtype=float)
    if a.shape != e.shape or a.ndim != 1:
        raise DiffattrError("fidelity needs two 1-d arrays of the same length")
    if len(a) < 3:
        raise DiffattrError("fidelity needs at least 3 paired subsets")
    const = np.ptp(a) == 0 or np.ptp(e) == 0
    return {
        "pearson": float("nan") if const else float(pearsonr(a, e).statistic),
        "spearman": float("nan") if const else float(spearmanr(a, e).statistic),
        "mae": float(np.mean(np.abs(a - e))),
        "n": int(len(a)),
    }
