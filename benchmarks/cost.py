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

from diffattr.evaluate.protocol import held_out_masks, load_run_config, method_state
from diffattr.runner.job import execute_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--methods", nargs="+", default=["retrain", "ft", "sft"])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cfg = load_run_config(args.run_dir)
    out = {}
    for method in args.methods:
        state = method_state(cfg, args.run_dir, method, progress=False)
        mask = held_out_masks(len(state.players), 0.5, 1, cfg.attribution.seed)[0]
        settings = {} if method == "retrain" else state.cfg.attribution.settings_for()
        rows = []
        for r in range(args.repeats):
            # A seed no other job uses, so nothing is cached or skipped.
            spec = state.spec(mask, method, settings, 10_000 + r, "cost")
            rec = execute_job(spec, state.ctx)
            if rec.status != "done":
                raise SystemExit(rec.error)
            rows.append([rec.t_train, rec.t_sample, rec.t_measure, rec.t_total])
        a = np.array(rows).mean(0)
        out[method] = {
            "train": round(a[0], 3),
            "sample": round(a[1], 3),
            "measure": round(a[2], 3),
            "total": round(a[3], 3),
            "prepare_once": round(state.timings.get("prepare_cost", 0.0), 2),
        }
    if "retrain" in out:
        for v in out.values():
            v["speedup_vs_retrain"] = round(out["retrain"]["total"] / v["total"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
