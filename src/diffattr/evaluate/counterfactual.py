"""Counterfactual removal (Lin et al. 2025, Fig. 3): retrain without the top or bottom
contributors of each ranking and report the relative change of each behavior.

"Top" follows each behavior's direction: for FID (lower is better) the top contributors
are those with the most negative values. The change is measured against the full model
theta*, as in the paper, over ``seeds`` retraining seeds (mean, sd and a t-interval).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.behaviors.keys import BehaviorKey
from diffattr.errors import DiffattrError
from diffattr.evaluate.common import open_run, t_quantile, write_json
from diffattr.runner.values import read_values


@dataclass
class Removal:
    estimator: str
    ranked_by: str
    removed: list[str]
    seeds_done: int
    relative_change_pct: dict[str, dict[str, float]]  # behavior -> mean, sd, ci95, value

    def to_dict(self) -> dict:
        return {
            "estimator": self.estimator,
            "ranked_by": self.ranked_by,
            "removed": self.removed,
            "seeds_done": self.seeds_done,
            "relative_change_pct": self.relative_change_pct,
        }


@dataclass
class CounterfactualReport:
    remove: str
    fraction: float
    seeds: int
    results: list[Removal] = field(default_factory=list)
    failed_jobs: int = 0

    def to_dict(self) -> dict:
        return {
            "remove": self.remove,
            "fraction": self.fraction,
            "seeds": self.seeds,
            "results": [r.to_dict() for r in self.results],
            "failed_jobs": self.failed_jobs,
        }

    def render(self) -> str:
        lines = []
        for r in self.results:
            changes = ", ".join(f"{b} {c['mean']:+.1f}%" for b, c in r.relative_change_pct.items())
            lines.append(
                f"{r.estimator} (ranked by {r.ranked_by}), without {', '.join(r.removed)}: "
                f"{changes}"
            )
        return "\n".join(lines)


def removal_mask(values: np.ndarray, behavior: str, remove: str, k: int) -> np.ndarray:
    """Keep-mask without the top (or bottom) ``k`` players by ``values`` for ``behavior``."""
    sign = -1.0 if BehaviorKey.parse(behavior).lower_is_better else 1.0
    order = np.argsort(-sign * np.asarray(values, dtype=float), kind="stable")  # best first
    drop = order[:k] if remove == "top" else order[::-1][:k]
    mask = np.ones(len(values), dtype=bool)
    mask[drop] = False
    return mask


def run_counterfactual(
    run_dir: str | Path,
    remove: str = "top",
    fraction: float = 0.4,
    seeds: int = 3,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    estimators: list[str] | None = None,
    ranked_by: list[str] | None = None,
) -> CounterfactualReport:
    """Retrain without the top (bottom) ``fraction`` of players of each attribution."""
    run_dir = Path(run_dir)
    if remove not in ("top", "bottom"):
        raise DiffattrError("--remove must be 'top' or 'bottom'")
    if not 0 < fraction < 1:
        raise DiffattrError(f"--fraction must be in (0, 1), got {fraction}")
    if seeds < 1:
        raise DiffattrError(f"--seeds must be at least 1, got {seeds}")
    payload = read_values(run_dir)
    report = CounterfactualReport(remove, fraction, seeds)
    chosen = []
    for a in payload["attributions"]:
        if estimators and a["estimator"] not in estimators:
            continue
        key = BehaviorKey.parse(a["behavior"])
        if key.image is not None:  # one generated image's credit: not a ranking to retrain by
            continue
        if ranked_by and not any(key.matches(q) for q in ranked_by):
            continue
        chosen.append(a)
    if not chosen:
        raise DiffattrError("no attribution in values.json matches --estimator/--ranked-by")
    with open_run(run_dir, overrides, progress) as run:
        n = run.n_players  # every ranking checked before anything is trained
        k = max(1, int(round(fraction * n)))
        if k >= n:
            raise DiffattrError(
                f"--fraction {fraction} removes {k} of the {n} players, leaving no data; give "
                "a smaller fraction"
            )
        for a in chosen:
            values = np.asarray(a["values"], dtype=float)
            if len(values) != n:
                raise DiffattrError(f"values.json has {len(values)} players, the run {n}")
            if not np.isfinite(values).all():
                raise DiffattrError(
                    f"values.json: the {a['estimator']} values for {a['behavior']} are not all "
                    "finite, so they give no ranking; rerun diffattr run"
                )
        p = run.prepare()
        retrain = run.cfg.method_settings("retrain")
        rp = run.prepare(retrain)
        full = run.store.get(run.reference_specs(p)["full"].key)
        if full is None or full.status != "done":
            raise DiffattrError("the full model's behaviors are missing: run diffattr run first")
        plans = []
        for a in chosen:
            mask = removal_mask(np.asarray(a["values"], dtype=float), a["behavior"], remove, k)
            dropped = [a["names"][i] for i in np.flatnonzero(~mask)]
            specs = [run.spec(rp, mask, retrain, s, "counterfactual") for s in range(seeds)]
            plans.append((a, specs, dropped))
        ex = run.execute([s for _, specs, _ in plans for s in specs], "counterfactual retrain")
        report.failed_jobs = ex.failed
        for a, specs, dropped in plans:
            recs = [r for r in run.store.records([s.key for s in specs]) if r.status == "done"]
            if not recs:
                continue
            changes = {}
            for beh, v1 in full.behaviors.items():
                vals = np.array([r.behaviors[beh] for r in recs])
                rel = 100.0 * (vals - v1) / abs(v1) if v1 else np.full(len(vals), np.nan)
                sd = float(rel.std(ddof=1)) if len(rel) > 1 else float("nan")
                ci = (
                    t_quantile(0.95, len(rel) - 1) * sd / np.sqrt(len(rel))
                    if len(rel) > 1
                    else float("nan")
                )
                changes[beh] = {
                    "mean": float(rel.mean()),
                    "sd": sd,
                    "ci95": float(ci),
                    "value": float(vals.mean()),
                }
            report.results.append(
                Removal(a["estimator"], a["behavior"], dropped, len(recs), changes)
            )
    if not report.results:  # nothing to write: every retraining failed
        raise DiffattrError(
            f"no counterfactual result: every retraining failed (first: {ex.first_error}); "
            f"see diffattr status {run_dir}"
        )
    write_json(run_dir / f"counterfactual-{remove}.json", report.to_dict())
    return report
