"""Linear datamodeling score (LDS; Park et al. 2023, as used by Lin et al. 2025, Sec. 4).

For held-out coalitions S_b drawn from the datamodel distribution (floor(alpha n) players
kept uniformly), the attribution predicts F(S_b) by the sum of the kept players' values;
LDS = 100 x Spearman(prediction, F of the model *retrained from scratch* on S_b). Per seed
of the retraining, one LDS; the reported number is their mean with a 95 % interval
1.96 sd / sqrt(seeds), plus a bootstrap interval over test subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from diffattr.errors import DiffattrError


def predict(values: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Sum of the kept players' values for each mask: (B, n) @ (n,) -> (B,)."""
    return np.asarray(masks, dtype=float) @ np.asarray(values, dtype=float)


def lds(values: np.ndarray, masks: np.ndarray, targets: np.ndarray) -> float:
    """100 x Spearman rank correlation of predicted and actual behaviors (nan if constant)."""
    masks = np.asarray(masks, dtype=bool)
    targets = np.asarray(targets, dtype=float)
    if masks.shape[0] != targets.shape[0]:
        raise DiffattrError("one target per test mask is required")
    if masks.shape[0] < 3:
        raise DiffattrError("LDS needs at least 3 test subsets")
    pred = predict(values, masks)
    if np.ptp(pred) == 0 or np.ptp(targets) == 0:
        return float("nan")
    return float(100.0 * spearmanr(pred, targets).statistic)


@dataclass
class LDSResult:
    mean: float
    ci95: float  # half-width over seeds, 1.96 sd / sqrt(seeds) (nan for one seed)
    per_seed: list[float]
    bootstrap_low: float
    bootstrap_high: float
    n_test: int

    def to_dict(self) -> dict:
        return {
            "lds": self.mean,
            "ci95": self.ci95,
            "per_seed": self.per_seed,
            "bootstrap_95": [self.bootstrap_low, self.bootstrap_high],
            "n_test": self.n_test,
        }


def lds_over_seeds(
    values: np.ndarray,
    masks: np.ndarray,
    targets_by_seed: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LDSResult:
    """LDS per retraining seed (rows of ``targets_by_seed``: (seeds, B)), mean and intervals.

    The bootstrap resamples test subsets (the same resample for every seed) and recomputes
    the mean over seeds; the interval is its 2.5-97.5 percentile range.
    """
    t = np.atleast_2d(np.asarray(targets_by_seed, dtype=float))
    per_seed = [lds(values, masks, row) for row in t]
    arr = np.array(per_seed)
    mean = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
    ci = float(1.96 * np.nanstd(arr, ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    rng = np.random.default_rng(seed)
    pred = predict(values, masks)
    boots = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, t.shape[1], t.shape[1])
        if np.ptp(pred[idx]) == 0 or any(np.ptp(row[idx]) == 0 for row in t):
            continue
        boots.append(np.mean([100.0 * spearmanr(pred[idx], row[idx]).statistic for row in t]))
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return LDSResult(mean, ci, per_seed, float(lo), float(hi), int(t.shape[1]))
