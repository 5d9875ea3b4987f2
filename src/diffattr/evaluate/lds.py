"""Linear datamodeling score (LDS; Park et al. 2023, as used by Lin et al. 2025, Sec. 4).

For held-out coalitions S_b drawn from the datamodel distribution (floor(alpha n) players
kept uniformly, distinct subsets), an attribution predicts F(S_b) by the sum of the kept
players' values; LDS = 100 x Spearman(prediction, F of the model *retrained from scratch*
on S_b). The paper's protocol, the default of ``diffattr lds``: 100 test subsets at
alpha = 0.5 (also 0.25 and 0.75), each retrained with 3 seeds; one LDS per seed, reported
as their mean with a t-interval over seeds (t quantile with seeds - 1 degrees of freedom:
1.96 would understate it for 3 seeds). A bootstrap interval over test subsets (the
attributions held fixed) is also reported.

A local behavior attributed per generated image (``ssim[pixel]#i``, ``[attribution] local =
"per-image"``) is scored as the paper's code does: for each retraining seed, the LDS of every
generated image's attribution against that image's behavior, averaged over the images; then
the mean over seeds with its t-interval, and the bootstrap over test subsets of that average
(:func:`lds_per_image`). One result per local behavior (``per_image`` lists each image's LDS,
the mean over seeds).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from diffattr.behaviors.keys import split_image_key
from diffattr.errors import DiffattrError
from diffattr.evaluate.common import (
    held_out_masks,
    open_run,
    retrain_targets,
    t_quantile,
    write_json,
)
from diffattr.evaluate.fidelity import FidelityResult, method_fidelity
from diffattr.runner.identify import require_evaluation_fits
from diffattr.runner.values import read_values
from diffattr.store import mask_to_str

PAPER_TEST_SUBSETS = 100
PAPER_SEEDS = 3
QUICK_TEST_SUBSETS = 16


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
class LDSScore:
    mean: float
    ci95: float  # half-width over retraining seeds: t(0.975, seeds-1) sd / sqrt(seeds)
    per_seed: list[float]
    bootstrap_low: float  # 2.5 % over test subsets, attributions fixed
    bootstrap_high: float
    n_test: int

    def to_dict(self) -> dict:
        return {
            "lds": self.mean,
            "ci95_over_seeds": self.ci95,
            "per_seed": self.per_seed,
            "bootstrap_95_over_test_subsets": [self.bootstrap_low, self.bootstrap_high],
            "n_test": self.n_test,
        }


def lds_over_seeds(
    values: np.ndarray,
    masks: np.ndarray,
    targets_by_seed: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LDSScore:
    """LDS per retraining seed (rows of ``targets_by_seed``: (seeds, B)), mean and intervals.

    The bootstrap resamples test subsets (the same resample for every seed; the
    attributions are held fixed) and recomputes the mean over seeds; the interval is its
    2.5-97.5 percentile range.
    """
    t = np.atleast_2d(np.asarray(targets_by_seed, dtype=float))
    per_seed = [lds(values, masks, row) for row in t]
    arr = np.array(per_seed)
    finite = arr[np.isfinite(arr)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    if len(finite) > 1:
        ci = float(t_quantile(0.95, len(finite) - 1) * finite.std(ddof=1) / np.sqrt(len(finite)))
    else:
        ci = float("nan")
    rng = np.random.default_rng(seed)
    pred = predict(values, masks)
    boots = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, t.shape[1], t.shape[1])
        if np.ptp(pred[idx]) == 0 or any(np.ptp(row[idx]) == 0 for row in t):
            continue
        boots.append(np.mean([100.0 * spearmanr(pred[idx], row[idx]).statistic for row in t]))
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return LDSScore(mean, ci, per_seed, float(lo), float(hi), int(t.shape[1]))


@dataclass
class LDSDifference:
    """LDS(b) - LDS(a) of two attributions on the same test subsets and retraining seeds."""

    difference: float  # mean over seeds of LDS(b) - mean over seeds of LDS(a)
    bootstrap_low: float  # 2.5 % over test subsets, the same resample for a and b
    bootstrap_high: float
    n_test: int

    @property
    def resolved(self) -> bool:
        """The 95 % paired bootstrap interval excludes 0."""
        return bool(self.bootstrap_low > 0 or self.bootstrap_high < 0)

    def to_dict(self) -> dict:
        return {
            "difference": self.difference,
            "bootstrap_95_over_test_subsets": [self.bootstrap_low, self.bootstrap_high],
            "resolved": self.resolved,
            "n_test": self.n_test,
        }


def lds_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    masks: np.ndarray,
    targets_by_seed: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LDSDifference:
    """The paired LDS difference b - a: both attributions scored on every bootstrap resample
    of the test subsets (the same resample for both, the mean over seeds each time), so the
    interval reflects how the two differ on the same subsets rather than each one's spread."""
    t = np.atleast_2d(np.asarray(targets_by_seed, dtype=float))
    pa, pb = predict(values_a, masks), predict(values_b, masks)

    def mean_lds(pred: np.ndarray, idx: np.ndarray) -> float:
        if np.ptp(pred[idx]) == 0 or any(np.ptp(row[idx]) == 0 for row in t):
            return float("nan")
        return float(np.mean([100.0 * spearmanr(pred[idx], row[idx]).statistic for row in t]))

    full = np.arange(t.shape[1])
    diff = mean_lds(pb, full) - mean_lds(pa, full)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, t.shape[1], t.shape[1])
        d = mean_lds(pb, idx) - mean_lds(pa, idx)
        if np.isfinite(d):
            boots.append(d)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return LDSDifference(float(diff), float(lo), float(hi), int(t.shape[1]))


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """100 x Spearman(a[i], b[i]) for every row at once (I, B) -> (I,): Pearson of the rows'
    average ranks, as ``scipy.stats.spearmanr`` computes it; nan where a row is constant.
    One vectorised call instead of I of spearmanr's -- the bootstraps of per-image LDS call
    this thousands of times."""
    ra = rankdata(np.atleast_2d(a), axis=1)
    rb = rankdata(np.atleast_2d(b), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(axis=1) / den, np.nan)
    return 100.0 * np.clip(rho, -1.0, 1.0)


def _mean_spearman(pred: np.ndarray, targets: np.ndarray) -> float:
    """Mean over images of 100 x Spearman(pred[i], targets[i]) (images with a constant side
    left out; nan if all are)."""
    vals = row_spearman(pred, targets)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if len(vals) else float("nan")


def lds_per_image(
    values: np.ndarray,
    masks: np.ndarray,
    targets: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[LDSScore, list[float]]:
    """LDS of per-image attributions, as the paper's code scores local behaviors.

    ``values`` (I, n): image i's attribution; ``targets`` (seeds, I, B): image i's behavior on
    each retrained test subset. Per seed: the mean over images of image i's LDS; reported as
    the mean over seeds with a t-interval, and a bootstrap over test subsets (the same
    resample for every image and seed). Also returns each image's LDS (mean over seeds).
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    t = np.asarray(targets, dtype=float)
    if t.ndim == 2:
        t = t[None]
    if t.shape[1] != values.shape[0]:
        raise DiffattrError("one row of targets per generated image is required")
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] < 3:
        raise DiffattrError("LDS needs at least 3 test subsets")
    pred = predict(values.T, masks).T  # (I, B): image i's prediction of each subset
    per_seed = [_mean_spearman(pred, t[s]) for s in range(t.shape[0])]
    arr = np.array(per_seed)
    finite = arr[np.isfinite(arr)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    if len(finite) > 1:
        ci = float(t_quantile(0.95, len(finite) - 1) * finite.std(ddof=1) / np.sqrt(len(finite)))
    else:
        ci = float("nan")
    per_image = []
    for i in range(values.shape[0]):
        each = [lds(values[i], masks, t[s, i]) for s in range(t.shape[0])]
        each = [v for v in each if np.isfinite(v)]
        per_image.append(float(np.mean(each)) if each else float("nan"))
    rng = np.random.default_rng(seed)
    boots = []
    b = masks.shape[0]
    for _ in range(n_bootstrap):
        idx = rng.integers(0, b, b)
        v = np.array([_mean_spearman(pred[:, idx], t[s][:, idx]) for s in range(t.shape[0])])
        if np.isfinite(v).all():
            boots.append(float(v.mean()))
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return LDSScore(mean, ci, per_seed, float(lo), float(hi), int(b)), per_image


@dataclass(frozen=True)
class LDSProtocol:
    """Which held-out subsets, how many, retrained with how many seeds."""

    alphas: tuple[float, ...] = (0.5,)
    test_subsets: int = PAPER_TEST_SUBSETS
    seeds: int = PAPER_SEEDS

    @classmethod
    def from_options(
        cls,
        alphas: list[float] | None,
        test_subsets: int | None,
        seeds: int | None,
        quick: bool = False,
    ) -> LDSProtocol:
        alphas = tuple(alphas or (0.5,))
        for a in alphas:
            if not 0 < a < 1:
                raise DiffattrError(f"--alpha must be in (0, 1), got {a}")
        b = test_subsets or (QUICK_TEST_SUBSETS if quick else PAPER_TEST_SUBSETS)
        s = seeds or (1 if quick else PAPER_SEEDS)
        if b < 3:
            raise DiffattrError(f"--test-subsets must be at least 3, got {b}")
        if s < 1:
            raise DiffattrError(f"--seeds must be at least 1, got {s}")
        return cls(alphas, b, s)


@dataclass
class LDSResult:
    """The LDS of one (alpha, method, estimator, behavior)."""

    alpha: float
    method: str
    estimator: str
    behavior: str
    score: LDSScore
    fit_rows: int | None
    estimate: dict[str, Any]  # identified / solver / rank of the fit (when recorded)
    predicted: list[float]
    actual: list[float]  # mean over seeds
    #: a local behavior attributed per generated image: each image's LDS (mean over seeds)
    per_image: list[float] | None = None

    def to_dict(self) -> dict:
        out = {
            "alpha": self.alpha,
            "method": self.method,
            "estimator": self.estimator,
            "behavior": self.behavior,
            "fit_rows": self.fit_rows,
            "estimate": self.estimate,
            **self.score.to_dict(),
            "points": {"predicted": self.predicted, "actual": self.actual},
        }
        if self.per_image is not None:
            out["per_image_lds"] = self.per_image
            out["images"] = len(self.per_image)
        return out


@dataclass
class LDSReport:
    protocol: LDSProtocol
    distinct_test_subsets: dict[float, int]
    results: list[LDSResult] = field(default_factory=list)
    fidelity: list[FidelityResult] = field(default_factory=list)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    estimator_errors: list[str] = field(default_factory=list)
    failed_jobs: int = 0

    def to_dict(self) -> dict:
        return {
            "protocol": asdict(self.protocol),
            "distinct_test_subsets": {str(k): v for k, v in self.distinct_test_subsets.items()},
            "results": [r.to_dict() for r in self.results],
            "fidelity": [f.to_dict() for f in self.fidelity],
            "cost": self.cost,
            "estimator_errors": self.estimator_errors,
            "failed_jobs": self.failed_jobs,
        }

    def render(self) -> str:
        p = self.protocol
        lines = [
            f"LDS: {p.test_subsets} test subsets per alpha, {p.seeds} retraining seed(s); "
            "mean over seeds, t-interval over seeds, bootstrap over test subsets"
        ]
        for r in self.results:
            s = r.score
            lines.append(
                f"  alpha={r.alpha} {r.method} {r.estimator} {r.behavior}: LDS {s.mean:.1f} "
                f"± {s.ci95:.1f} (seeds), bootstrap [{s.bootstrap_low:.1f}, "
                f"{s.bootstrap_high:.1f}], n={s.n_test}, fit rows {r.fit_rows}"
                + (f", mean over {len(r.per_image)} images" if r.per_image is not None else "")
            )
        for f in self.fidelity:
            line = (
                f"  fidelity {f.method} {f.behavior}: pearson {f.pearson:.3f} "
                f"spearman {f.spearman:.3f} mae {f.mae:.4g} (n={f.n})"
            )
            if f.pearson_per_seed is not None and f.retrain_agreement is not None:
                line += (
                    f"; with one retraining seed {f.pearson_per_seed:.3f}, retraining seed "
                    f"to seed {f.retrain_agreement['pearson']:.3f}"
                )
            lines.append(line)
        for m, c in self.cost.items():
            lines.append(f"  cost {m}: " + ", ".join(f"{k} {v:.3g}" for k, v in c.items()))
        lines += [f"  not fitted: {e}" for e in self.estimator_errors]
        return "\n".join(lines)


def run_lds(
    run_dir: str | Path,
    protocol: LDSProtocol | None = None,
    methods: list[str] | None = None,
    estimators: list[str] | None = None,
    with_fidelity: bool = True,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> LDSReport:
    """LDS of every (alpha, method, estimator, behavior); fidelity and cost of each method.

    Test subsets are retrained through the run's store (resumable; a retrain is never done
    twice); fit rows equal to a test mask are left out of the fit. Before any retraining,
    the run's values.json must be whole and every fit identified once the rows equal to
    test subsets are left out (``runner.identify``); a call that computes no LDS at all is
    an error and writes nothing.
    """
    protocol = protocol or LDSProtocol()
    overrides = dict(overrides or {})
    if estimators:
        overrides["attribution.estimators"] = list(estimators)
    run_dir = Path(run_dir)
    read_values(run_dir)  # the run's own attributions: a finished run, values.json whole
    with open_run(run_dir, overrides, progress) as run:
        methods = methods or [run.cfg.method.name]
        n = run.n_players
        seed = run.cfg.attribution.seed
        test = {a: held_out_masks(n, a, protocol.test_subsets, seed) for a in protocol.alphas}
        for alpha, masks in test.items():  # every fit identified, before any retraining
            require_evaluation_fits(
                run.cfg,
                n,
                {mask_to_str(m) for m in masks},
                what=f"lds at alpha={alpha}",
                fix=lambda est, m: (
                    f"set subsets = {m} for {est.name} in {run_dir / 'config.toml'}"
                    if est.subsets is not None
                    else f"pass --subsets {m}"
                ),
            )
        base = run.prepare(methods[0])
        report = LDSReport(protocol, {})
        for alpha in protocol.alphas:
            masks = test[alpha]
            report.distinct_test_subsets[alpha] = len(masks)
            targets = retrain_targets(run, base, masks, protocol.seeds)
            report.failed_jobs += targets.failed
            if len(targets.masks) < 3:
                raise DiffattrError(
                    f"fewer than 3 test subsets were retrained at alpha={alpha}"
                    + (f" (first failure: {targets.first_error})" if targets.first_error else "")
                    + "; see diffattr status"
                )
            retrain_cost = targets.seconds_per_job()
            report.cost["retrain"] = {"seconds_per_job": retrain_cost, "prepare_seconds": 0.0}
            test_set = {mask_to_str(m) for m in targets.masks}
            for method in methods:
                plan = run.jobs(method)
                ex = run.execute(plan.specs(), f"{method} jobs")
                report.failed_jobs += ex.failed
                errors: list[str] = []
                est = run.estimate(plan, exclude_masks=test_set, errors=errors)
                report.estimator_errors += [f"{method} {e}" for e in errors]
                groups: dict[tuple[str, str], list] = {}
                for a in est.attributions:
                    base, image = split_image_key(a.behavior)
                    if image is not None:  # scored together, below
                        groups.setdefault((a.estimator, base), []).append(a)
                        continue
                    t = targets.values(a.behavior)
                    score = lds_over_seeds(a.values, targets.masks, t)
                    report.results.append(
                        LDSResult(
                            alpha=alpha,
                            method=method,
                            estimator=a.estimator,
                            behavior=a.behavior,
                            score=score,
                            fit_rows=a.settings.get("rows"),
                            estimate={
                                k: a.settings[k]
                                for k in ("identified", "solver", "rank", "exact")
                                if k in a.settings
                            },
                            predicted=predict(a.values, targets.masks).tolist(),
                            actual=t.mean(axis=0).tolist(),
                        )
                    )
                for (_, base), attrs in groups.items():
                    report.results.append(_per_image_result(alpha, method, base, attrs, targets))
                fit = [s for s in plan.specs() if s.kind == "fit"]
                recs = run.store.records([s.key for s in fit])
                cost = float(np.mean([r.t_total for r in recs])) if recs else float("nan")
                report.cost[method] = {
                    "seconds_per_job": cost,
                    "prepare_seconds": plan.prepared.prepare_cost,
                    "speedup_vs_retrain": retrain_cost / cost if cost else float("nan"),
                }
                if with_fidelity and method != "retrain" and alpha == protocol.alphas[0]:
                    fid, failed = method_fidelity(run, plan.prepared, targets)
                    report.fidelity += fid
                    report.failed_jobs += failed
    if not report.results:  # nothing to write: no LDS was computed
        why = report.estimator_errors[0] if report.estimator_errors else "no estimator was fitted"
        raise DiffattrError(f"no LDS result: {why}; see diffattr status {run_dir}")
    write_json(run_dir / "lds.json", _merge(run_dir / "lds.json", report.to_dict()))
    return report


def _per_image_result(alpha: float, method: str, base: str, attrs: list, targets) -> LDSResult:
    """One result for the per-image attributions ``attrs`` of the local behavior ``base``."""
    values = np.array([a.values for a in attrs], dtype=float)  # (I, n)
    t = np.stack([targets.values(a.behavior) for a in attrs], axis=1)  # (seeds, I, B)
    score, per_image = lds_per_image(values, targets.masks, t)
    first = attrs[0]
    return LDSResult(
        alpha=alpha,
        method=method,
        estimator=first.estimator,
        behavior=base,
        score=score,
        fit_rows=first.settings.get("rows"),
        estimate={
            k: first.settings[k]
            for k in ("identified", "solver", "rank", "exact")
            if k in first.settings
        },
        # points: the images' mean prediction and mean behavior (the score averages each
        # image's rank correlation instead)
        predicted=predict(values.mean(axis=0), targets.masks).tolist(),
        actual=t.mean(axis=(0, 1)).tolist(),
        per_image=per_image,
    )


def _merge(path: Path, new: dict) -> dict:
    """Keep earlier results of other methods/estimators evaluated under the same protocol."""
    if not path.exists():
        return new
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return new
    if old.get("protocol") != json.loads(json.dumps(new["protocol"])):  # tuples read as lists
        return new
    merged = dict(new)
    key = ("alpha", "method", "estimator", "behavior")
    seen = {tuple(r[k] for k in key) for r in new["results"]}
    merged["results"] = [
        r for r in old.get("results", []) if tuple(r.get(k) for k in key) not in seen
    ] + new["results"]
    seen_f = {(f["method"], f["behavior"]) for f in new["fidelity"]}
    merged["fidelity"] = [
        f for f in old.get("fidelity", []) if (f["method"], f["behavior"]) not in seen_f
    ] + new["fidelity"]
    merged["cost"] = {**old.get("cost", {}), **new["cost"]}
    return merged
