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

from diffattr.evaluate.fidelity import fidelity
from diffattr.evaluate.protocol import (
    held_out_masks,
    load_run_config,
    method_state,
    retrain_targets,
)
from diffattr.runner.pipeline import run_jobs
from diffattr.store import Store


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
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cfg = load_run_config(
        args.run_dir, **{"executor.name": "process", "executor.workers": args.workers}
    )
    base = cfg.attribution.settings_for("sft")
    results = []
    with Store(args.run_dir / "store.sqlite") as store:
        state0 = method_state(cfg, args.run_dir, "sft", progress=False)
        masks = held_out_masks(len(state0.players), args.alpha, args.test_subsets, 0)
        recs, _ = retrain_targets(state0, store, masks, 1, "test", progress=False)
        retrain_cost = float(np.mean([r.t_total for r in recs[0] if r is not None]))
        for text in [""] + args.variant:
            settings = {**base, **(parse_variant(text) if text else {})}
            cfg_v = cfg.with_overrides(
                **{
                    "attribution.method_settings": {
                        **cfg.attribution.method_settings,
                        "sft": settings,
                    }
                }
            )
            state = method_state(cfg_v, args.run_dir, "sft", progress=False)
            specs = [state.spec(m, "sft", settings, 0, "fidelity") for m in masks]
            run_jobs(state, specs, store, "sft", progress=False)
            got = store.records([s.key for s in specs])
            by_key = {r.key: r for r in got}
            pairs = [
                (by_key[s.key], recs[0][b])
                for b, s in enumerate(specs)
                if s.key in by_key and recs[0][b] is not None
            ]
            row = {
                "settings": settings,
                "n": len(pairs),
                "seconds_per_job": float(np.mean([p.t_total for p, _ in pairs])),
                "retrain_seconds_per_job": retrain_cost,
                "prepare_seconds": state.timings.get("prepare_cost", 0.0),
            }
            for beh in sorted(pairs[0][0].behaviors):
                row[beh] = fidelity(
                    np.array([p.behaviors[beh] for p, _ in pairs]),
                    np.array([q.behaviors[beh] for _, q in pairs]),
                )
            results.append(row)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
