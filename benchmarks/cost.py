"""Cost of one job per counterfactual method, measured back to back on one run directory
(same mask, same machine state), so the ratios are not skewed by load that changes over a
long run. Prints JSON. Nothing is written to the run's store.

    python benchmarks/cost.py runs/bench-lds [--methods retrain ft sft] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffattr.evaluate.common import held_out_masks, open_run
from diffattr.runner.job import execute_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--methods", nargs="+", default=["retrain", "ft", "sft"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    run = open_run(args.run_dir, progress=False)
    out = {}
    for method in args.methods:
        p = run.prepare(method)
        mask = held_out_masks(p.n_players, 0.5, 1, run.cfg.attribution.seed)[0]
        rows = []
        for r in range(args.repeats):
            # A seed no other job uses, so nothing is cached or skipped.
            spec = run.spec(p, mask, p.method, 10_000 + r, "cost")
            rec = execute_job(spec, p.ctx)
            if rec.status != "done":
                raise SystemExit(rec.error)
            rows.append([rec.t_train, rec.t_sample, rec.t_measure, rec.t_total])
        a = np.array(rows).mean(0)
        out[method] = {
            "train": round(a[0], 3),
            "sample": round(a[1], 3),
            "measure": round(a[2], 3),
            "total": round(a[3], 3),
            "prepare_once": round(p.prepare_cost, 2),
        }
    run.close()
    if "retrain" in out:
        for v in out.values():
            v["speedup_vs_retrain"] = round(out["retrain"]["total"] / v["total"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
