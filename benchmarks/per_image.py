"""Per-image attribution (the method's workshop experiment) on digits; prints JSON.

Players are single training images (``players = "sample"``; ``limit_per_class`` images per
digit). Datamodels of FID (alpha = 0.5 subsets, ridge) fitted on sFT jobs are compared with
datamodels fitted on models retrained from scratch at equal compute, and with TRAK and
D-TRAK (natively per image), by LDS against held-out alpha = 0.5 subsets retrained from
scratch with several seeds.

    OMP_NUM_THREADS=1 python benchmarks/per_image.py --out runs/bench-per-image \\
        --per-class 50 --sft-subsets 240 --test-subsets 16 --seeds 2 --train-steps 500 \\
        --k 60 --samples 256 --workers 1 > per_image.json

(the command of BENCHMARKS.md's per-image table).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from diffattr.baselines.settings import BASELINES
from diffattr.config import build_config
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS
from diffattr.evaluate.common import held_out_masks, retrain_targets
from diffattr.runner.run import Run, fit_table
from diffattr.store import mask_to_str
from lds_repeats import ceilings
from lds_repeats import score as lds_score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--sft-subsets", type=int, default=400)
    ap.add_argument("--grid", type=int, nargs="+", default=None)
    ap.add_argument("--test-subsets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    datamodel = {"name": "datamodel", "subsets": args.sft_subsets}
    cfg = build_config(
        None,
        "default",
        {
            "data": {"name": "digits", "limit_per_class": args.per_class, "players": "sample"},
            "family.seed": args.seed,
            "train.seed": args.seed,
            "train.steps": args.train_steps,
            "train.batch_size": 64,
            "sample.seed": args.seed,
            "sample.num_samples": args.samples,
            "sample.batch_size": args.samples,
            "attribution.seed": args.seed,
            "attribution.subsets": args.sft_subsets,
            "attribution.estimators": [datamodel],
            "behaviors.measure": ["fid"],
            "method": {"name": "sft", "finetune_steps": 500, "steps": args.k},
            "executor": {"name": "process", "workers": args.workers},
        },
    )
    out: dict = {"results": [], "settings": vars(args) | {"out": str(args.out)}}
    with Run(cfg, args.out, progress=False) as run:
        plan = run.jobs()
        run.execute(plan.specs(), "sft")
        p = plan.prepared
        n = p.n_players
        masks = held_out_masks(n, 0.5, args.test_subsets, args.seed)
        targets = retrain_targets(run, p, masks, args.seeds)
        test_set = {mask_to_str(m) for m in targets.masks}
        (behavior,) = sorted(run.reference_records(plan)["full"].behaviors)
        c_retrain = targets.seconds_per_job()
        fit = run.store.records([s.key for s in plan.specs() if s.kind == "fit"])
        c_sft = float(np.mean([x.t_total for x in fit]))
        out["cost"] = {
            "retrain_seconds_per_job": c_retrain,
            "sft_seconds_per_job": c_sft,
            "sft_prepare_seconds": p.prepare_cost,
        }
        out["players"] = n
        # what the retrained ground truth allows: Spearman between retraining seeds (the
        # additive-fit ceiling needs more test subsets than players: not meaningful here)
        out["seed_to_seed_spearman"] = ceilings(targets, behavior)["seed_to_seed_spearman"]

        def score(values):
            return lds_score(values, targets, behavior)

        est = cfg.attribution.estimators[0]
        grid = args.grid or [args.sft_subsets // 4, args.sft_subsets // 2, args.sft_subsets]
        budgets = {}
        for m in grid:
            t = time.perf_counter()
            attrs = fit_table(est, run.table(plan, "datamodel", test_set, m))
            budgets[m] = p.prepare_cost + m * c_sft
            out["results"].append(
                {
                    "method": "sft",
                    "estimator": "datamodel",
                    "M": m,
                    "seconds": budgets[m],
                    "fit_seconds": time.perf_counter() - t,
                    **score(attrs[0].values),
                }
            )
        # retrain-datamodel at the compute of each sFT budget
        m_max = int(math.floor(max(budgets.values()) / c_retrain))
        rest = ESTIMATORS.parse({"name": "datamodel", "subsets": max(m_max, 3)})
        rplan = run.jobs("retrain", [rest])
        run.execute([s for s in rplan.specs() if s.kind == "fit"], "retrain-datamodel")
        for m_sft, budget in budgets.items():
            m = int(math.floor(budget / c_retrain))
            row = {
                "method": "retrain",
                "estimator": "datamodel",
                "M": m,
                "seconds": budget,
                "equal_compute_to_sft_M": m_sft,
            }
            try:
                attrs = fit_table(rest, run.table(rplan, "datamodel", test_set, m))
                out["results"].append({**row, **score(attrs[0].values)})
            except DiffattrError as e:
                out["results"].append({**row, "error": str(e)})
        for name in ("trak", "d-trak"):
            settings = BASELINES.parse({"name": name, "aggregation": "sum"})
            bplan = run.jobs(estimators=[settings])
            t = time.perf_counter()
            errors: list[str] = []
            run.baseline_costs.clear()
            res = run.estimate(bplan, estimators=[settings], errors=errors)
            costs = [c.get("seconds") for c in run.baseline_costs.values()]
            for a in res.attributions[:1]:
                out["results"].append(
                    {
                        "method": "baseline",
                        "estimator": name,
                        "seconds": time.perf_counter() - t,
                        # featurize (from the cache record on a hit) / score / wall
                        "compute_seconds": costs[0] if costs else None,
                        **score(a.values),
                    }
                )
            if errors:
                out["results"].append({"method": "baseline", "estimator": name, "error": errors})
        out["test_subsets"] = len(targets.masks)
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
