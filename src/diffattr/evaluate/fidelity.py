"""Fidelity of a counterfactual method: does F(method on S) track F(retrain on S)?

Lin et al. (2025, App. D) report Pearson 0.82 between sFT and retraining on CIFAR-20. Here
the method is run on the same held-out subsets the LDS retrains, and compared with the mean
over retraining seeds of each subset.

Retraining is itself noisy: with two or more retraining seeds, each result also carries the
method's Pearson with one retraining seed at a time (mean over seeds) and retraining's own
agreement from seed to seed on the same subsets (mean over pairs of seeds). Those two are
like for like: a method that tracks one retraining seed as well as another retraining seed
does is as faithful as a second retraining, whatever its Pearson with the mean. With seed
noise independent of the subset, the most any method is expected to reach with one seed is
the square root of the seed-to-seed Pearson (a noise-free copy of retraining's expected
behavior).
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


def seed_agreement(values: np.ndarray) -> dict[str, float] | None:
    """How well one retraining seed predicts another on the same subsets: the mean, min
    and max Pearson (and mean Spearman) over pairs of seeds of ``values`` (seeds, B);
    None with fewer than two seeds or three subsets. A pair where either seed is constant
    has no correlation and is left out (NaN when every pair is)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise DiffattrError("seed_agreement needs a (seeds, subsets) array")
    if v.shape[0] < 2 or v.shape[1] < 3:
        return None
    pairs = [fidelity(v[a], v[b]) for a in range(len(v)) for b in range(a + 1, len(v))]
    pearson = [f["pearson"] for f in pairs if np.isfinite(f["pearson"])]
    spearman = [f["spearman"] for f in pairs if np.isfinite(f["spearman"])]
    if not pearson:
        nan = float("nan")
        return {"pearson": nan, "min": nan, "max": nan, "spearman": nan, "pairs": 0}
    return {
        "pearson": float(np.mean(pearson)),
        "min": float(min(pearson)),
        "max": float(max(pearson)),
        "spearman": float(np.mean(spearman)) if spearman else float("nan"),
        "pairs": len(pearson),
    }


def per_seed_pearson(approx: np.ndarray, values: np.ndarray) -> float | None:
    """The mean over retraining seeds of the Pearson between ``approx`` (B,) and one seed's
    behaviors (a row of ``values``, (seeds, B)); None with fewer than two seeds (it would
    equal the Pearson with the mean)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[0] < 2:
        return None
    rs = [fidelity(approx, row)["pearson"] for row in v]
    rs = [r for r in rs if np.isfinite(r)]
    return float(np.mean(rs)) if rs else float("nan")


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
    #: mean over retraining seeds of the Pearson with one seed (None with one seed)
    pearson_per_seed: float | None = None
    #: retraining's own seed-to-seed agreement on these subsets (``seed_agreement``)
    retrain_agreement: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "behavior": self.behavior,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "mae": self.mae,
            "n": self.n,
            "pearson_per_seed": self.pearson_per_seed,
            "retrain_agreement": self.retrain_agreement,
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
        per_seed = targets.values(beh)[:, [b for b, _ in pairs]]
        exact = per_seed.mean(axis=0)
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
                per_seed_pearson(approx, per_seed),
                seed_agreement(per_seed),
            )
        )
    return out, ex.failed
