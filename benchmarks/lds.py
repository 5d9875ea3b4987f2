"""The evaluation benchmark on digits (10 class contributors); prints JSON.

One run directory holds everything, so every model is trained once:
  1. ``diffattr run`` with sFT and the estimators shapley, banzhaf, datamodel, loo;
  2. ``diffattr lds`` for sft and ft (alpha = 0.5, retrained test subsets, fidelity);
  3. the compute-matched curve (retrain / ft / sft Shapley);
  4. counterfactual removal of the top and bottom 40 % (retrained), and the HTML report.

    python benchmarks/lds.py --out runs/bench-lds [--test-subsets 32] [--train-steps 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffattr.config import build_config
from diffattr.evaluate.budget import compute_curve
from diffattr.evaluate.counterfactual import run_counterfactual
from diffattr.evaluate.lds import LDSProtocol, run_lds
from diffattr.report import write_report
from diffattr.runner import run_attribution


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--test-subsets", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--subsets", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--train-batch-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--retrain-subsets", type=int, default=None)
    ap.add_argument("--counterfactual-seeds", type=int, default=2)
    args = ap.parse_args()
    cfg = build_config(
        None,
        "default",
        {
            "train.steps": args.train_steps,
            "train.batch_size": args.train_batch_size,
            "sample.num_samples": args.samples,
            "sample.batch_size": args.samples,
            "attribution.subsets": args.subsets,
            "attribution.estimators": ["shapley", "banzhaf", "datamodel", "loo"],
            "method": {"name": "sft", "finetune_steps": 500, "steps": args.k},
            "methods": {"ft": {"steps": args.k}},
            "executor": {"name": "process", "workers": args.workers},
        },
    )
    t = {}
    t0 = time.perf_counter()
    run_attribution(cfg, args.out, progress=False)
    t["run"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    protocol = LDSProtocol((0.5,), args.test_subsets, args.seeds)
    lds = run_lds(args.out, protocol, ["sft"], progress=False).to_dict()
    lds_ft = run_lds(args.out, protocol, ["ft"], ["shapley"], progress=False).to_dict()
    lds["results"] += lds_ft["results"]
    lds["fidelity"] += lds_ft["fidelity"]
    lds["cost"].update(lds_ft["cost"])
    t["lds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    curve = compute_curve(
        args.out, ["retrain", "ft", "sft"], 5, args.retrain_subsets, progress=False
    ).to_dict()
    t["curve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cf = {
        r: run_counterfactual(
            args.out,
            r,
            0.4,
            args.counterfactual_seeds,
            progress=False,
            estimators=["shapley"],
            ranked_by=["fid"],
        ).to_dict()
        for r in ("top", "bottom")
    }
    t["counterfactual"] = time.perf_counter() - t0
    report = write_report(args.out)
    for r in lds["results"]:
        r.pop("points", None)
    for f in lds["fidelity"]:
        f.pop("points", None)
    print(
        json.dumps(
            {
                "lds": lds["results"],
                "fidelity": lds["fidelity"],
                "cost": lds["cost"],
                "curve": curve["curves"],
                "curve_costs": curve["costs"],
                "counterfactual": {
                    k: [
                        {
                            "estimator": x["estimator"],
                            "ranked_by": x["ranked_by"],
                            "removed": x["removed"],
                            "change_pct": {
                                b: c["mean"] for b, c in x["relative_change_pct"].items()
                            },
                        }
                        for x in v["results"]
                    ]
                    for k, v in cf.items()
                },
                "seconds": t,
                "report": str(report),
            },
            indent=2,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
