"""Compute-matched comparison (Lin et al. 2025, Fig. 2): Shapley LDS against compute.

For each counterfactual method the budget is its one-time preparation plus M times its cost
per job, so a cheaper method evaluates more coalitions for the same compute. At each budget
the first M rows of the method's Shapley-kernel stream are fitted; a budget too small for
the estimator to be identified gives no point (it is listed as unidentified), so every
plotted point is an identified estimate. The retrain curve retrains at least 2(n - 1)
coalitions by default, the fewest paired rows that identify KernelSHAP over n players.
Before any training, each method's largest fit (all its rows, those equal to test subsets
left out) must be identified (``runner.identify``), and a curve without one identified
point is an error: nothing is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.evaluate.common import held_out_masks, open_run, retrain_targets, write_json
from diffattr.evaluate.lds import PAPER_SEEDS, QUICK_TEST_SUBSETS, lds_over_seeds
from diffattr.runner.identify import require_identified
from diffattr.store import mask_to_str


@dataclass
class CurvePoint:
    method: str
    budget_seconds: float
    subsets: int
    behavior: str
    lds: float | None
    identified: bool
    note: str | None = None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class CurveReport:
    methods: list[str]
    costs: dict[str, dict[str, float]]
    points: list[CurvePoint] = field(default_factory=list)
    test_subsets: int = 0
    seeds: int = 0

    def to_dict(self) -> dict:
        curves: dict[str, list] = {}
        for p in self.points:
            curves.setdefault(p.method, []).append(p.to_dict())
        return {
            "methods": self.methods,
            "costs": self.costs,
            "curves": curves,
            "test_subsets": self.test_subsets,
            "seeds": self.seeds,
            "created": time.time(),
        }

    def render(self) -> str:
        lines = []
        for p in self.points:
            what = f"LDS {p.lds:.1f}" if p.identified and p.lds is not None else f"({p.note})"
            lines.append(
                f"{p.method}: {p.budget_seconds:.0f} s, {p.subsets} subsets, {p.behavior} {what}"
            )
        return "\n".join(lines)


def compute_curve(
    run_dir: str | Path,
    methods: list[str] | None = None,
    budgets: int = 5,
    retrain_subsets: int | None = None,
    test_subsets: int | None = None,
    seeds: int | None = None,
    progress: bool = True,
) -> CurveReport:
    """LDS of Shapley against compute spent, for each method."""
    run_dir = Path(run_dir)
    if budgets < 2:
        raise DiffattrError(f"--budgets must be at least 2, got {budgets}")
    methods = methods or ["retrain", "ft", "sft"]
    lds_path = run_dir / "lds.json"
    protocol = {}
    if lds_path.exists():
        protocol = json.loads(lds_path.read_text()).get("protocol", {})
    b = test_subsets or protocol.get("test_subsets") or QUICK_TEST_SUBSETS
    s = seeds or protocol.get("seeds") or min(PAPER_SEEDS, 1)
    with open_run(run_dir, {"attribution.estimators": ["shapley"]}, progress) as run:
        shapley = run.cfg.attribution.estimators[0]
        n = run.n_players
        seed = run.cfg.attribution.seed
        masks = held_out_masks(n, 0.5, b, seed)
        test = {mask_to_str(m) for m in masks}
        for method in methods:  # each curve's largest fit identified, before any training
            retrain = method == "retrain"
            m = (retrain_subsets or 2 * (n - 1)) if retrain else run.cfg.attribution.subsets
            require_identified(
                shapley,
                n,
                m,
                seed,
                what=f"curve of {method}",
                fix=lambda k, retrain=retrain: (
                    f"pass --retrain-subsets {k}"
                    if retrain
                    else f"give the run {k} coalitions first (diffattr run --subsets {k} "
                    f"--out {run_dir})"
                ),
                exclude=test,
                excluded_fix="use fewer --test-subsets",
            )
        base = run.prepare()
        targets = retrain_targets(run, base, masks, s)
        if len(targets.masks) < 3:
            raise DiffattrError("fewer than 3 test subsets were retrained; see diffattr status")
        test_set = {mask_to_str(m) for m in targets.masks}
        plans, costs = {}, {}
        for method in methods:
            m = (retrain_subsets or 2 * (n - 1)) if method == "retrain" else None
            plan = run.jobs(method, [shapley], subsets=m)
            run.execute(plan.specs(), f"{method} jobs")
            recs = run.store.records([x.key for x in plan.fit["shapley"]])
            done = [r for r in recs if r.status == "done"]
            if not done:
                continue
            plans[method] = plan
            costs[method] = {
                "prepare_seconds": plan.prepared.prepare_cost,
                "seconds_per_job": float(np.mean([r.t_total for r in done])),
                "subsets": len(plan.fit["shapley"]),
            }
        if not plans:
            raise DiffattrError(
                f"no curve: no job of {', '.join(methods)} finished; see diffattr status {run_dir}"
            )
        report = CurveReport(list(plans), costs, test_subsets=len(targets.masks), seeds=s)
        top = max(
            c["prepare_seconds"] + c["subsets"] * c["seconds_per_job"] for c in costs.values()
        )
        grid = np.geomspace(top / 2 ** (budgets - 1), top, budgets)
        for method, plan in plans.items():
            c = costs[method]
            seen = set()
            for budget in grid:
                m = min(
                    int((budget - c["prepare_seconds"]) / c["seconds_per_job"] + 1e-6), c["subsets"]
                )
                if m < 2 or m in seen:
                    continue
                seen.add(m)
                errors: list[str] = []
                est = run.estimate(plan, exclude_masks=test_set, limit=m, errors=errors)
                if not est.attributions:
                    for beh in sorted(targets.records[0][0].behaviors):
                        report.points.append(
                            CurvePoint(
                                method, float(budget), m, beh, None, False, "; ".join(errors)
                            )
                        )
                    continue
                for a in est.attributions:
                    identified = bool(a.settings.get("identified", True))
                    score = lds_over_seeds(a.values, targets.masks, targets.values(a.behavior), 0)
                    report.points.append(
                        CurvePoint(method, float(budget), m, a.behavior, score.mean, identified)
                    )
    if not any(p.identified and p.lds is not None for p in report.points):
        why = next((p.note for p in report.points if p.note), "no budget was identified")
        raise DiffattrError(f"no point of the curve is identified ({why}); see diffattr status")
    write_json(run_dir / "compute_curve.json", report.to_dict())
    return report
