"""Fidelity sweep: how closely sFT tracks retraining, as k and the pruning ratio vary.

Reuses a run directory whose held-out subsets were already retrained (``diffattr lds`` or
``benchmarks/lds.py``), so only the sFT jobs of each variant run. Prints JSON.

    python benchmarks/fidelity.py runs/bench-lds --variant steps=50 --variant steps=200 \\
        --variant ratio=0.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffattr.evaluate.common import held_out_masks, open_run, retrain_targets
from diffattr.evaluate.fidelity import method_fidelity


def parse_variant(text: str) -> dict:
    out = {}
    for part in text.split(","):
        k, v = part.split("=")
        out[k] = float(v) if "." in v else int(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--variant", action="append", default=[], help="e.g. steps=50,ratio=0.5")
    ap.add_argument("--test-subsets", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    executor = {"executor": {"name": "process", "workers": args.workers}}
    results = []
    with open_run(args.run_dir, executor, progress=False) as run:
        base = run.cfg.method_settings("sft")
        p0 = run.prepare(base)
        masks = held_out_masks(p0.n_players, args.alpha, args.test_subsets, 0)
        targets = retrain_targets(run, p0, masks, args.seeds)
        for text in [""] + args.variant:
            settings = base.model_copy(update=parse_variant(text) if text else {})
            p = run.prepare(settings) if text else p0
            fid, _ = method_fidelity(run, p, targets)
            recs = run.store.records(
                [run.spec(p, m, settings, run.cfg.attribution.seed, "fidelity").key for m in masks]
            )
            row = {
                "settings": settings.to_dict(),
                "n": len(targets.masks),
                "seconds_per_job": float(np.mean([r.t_total for r in recs])),
                "retrain_seconds_per_job": targets.seconds_per_job(),
                "prepare_seconds": p.prepare_cost,
            }
            for f in fid:
                row[f.behavior] = {"pearson": f.pearson, "spearman": f.spearman, "mae": f.mae}
            results.append(row)
            run._prepared.pop(settings.name, None)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
