"""Fidelity of a counterfactual method: does F(method on S) track F(retrain on S)?

Lin et al. (2025, App. D) report Pearson 0.82 between sFT and retraining on CIFAR-20. Here
the method is run on the same held-out subsets the LDS retrains, and compared with the mean
over retraining seeds of each subset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class FidelityResult:
    method: str
    behavior: str
    pearson: float
    spearman: float
    mae: float
    n: int
    approx: list[float] = field(default_factory=list)
    retrain: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "behavior": self.behavior,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "mae": self.mae,
            "n": self.n,
            "points": {"approx": self.approx, "retrain": self.retrain},
        }


def method_fidelity(run, prepared, targets) -> tuple[list[FidelityResult], int]:
    """The method of ``prepared`` on every retrained test mask of ``targets``, compared per
    behavior with the retrained models (mean over seeds). Returns (results, failed jobs)."""
    seed = run.cfg.attribution.seed
    specs = [run.spec(prepared, m, prepared.method, seed, "fidelity") for m in targets.masks]
    ex = run.execute(specs, f"{prepared.method.name} on test subsets")
    got = {r.key: r for r in run.store.records([s.key for s in specs])}
    pairs = [
        (b, got[s.key]) for b, s in enumerate(specs) if s.key in got and got[s.key].status == "done"
    ]
    if len(pairs) < 3:
        return [], ex.failed
    out = []
    for beh in sorted(pairs[0][1].behaviors):
        approx = np.array([r.behaviors[beh] for _, r in pairs])
        exact = targets.values(beh).mean(axis=0)[[b for b, _ in pairs]]
        f = fidelity(approx, exact)
        out.append(
            FidelityResult(
                prepared.method.name,
                beh,
                f["pearson"],
                f["spearman"],
                f["mae"],
                f["n"],
                approx.tolist(),
                exact.tolist(),
            )
        )
    return out, ex.failed
