"""Text-to-image benchmark on the embedded demo (a LoRA credited to 20 artists); prints JSON.

One run directory holds everything, so every model is trained once:
  1. ``diffattr run`` with sFT-Shapley (the preset's LoRA, pruned to half its parameters);
  2. held-out subsets (alpha = 0.5) retrained from scratch -- a fresh LoRA on the base --
     with ``--seeds`` seeds, and the LDS of sFT-Shapley against them (``run_lds``);
  3. fidelity of sFT and of ft (k steps from the unpruned LoRA) on the same subsets:
     Pearson / Spearman / MAE of each behavior against the retrained LoRAs (mean over
     seeds), and the cost per job (training, and training + sampling + measuring) of each
     method against retraining.

``--methods`` picks the methods of steps 2 and 3 (default sft, ft); with the
``t2i-captions-quick`` preset (each artist one class, every model prompted with its own
data's captions) ``surrogate`` is the training-free prompt-level game, judged the same way::

    python benchmarks/t2i.py --out runs/t2i-cap --preset t2i-captions-quick \\
        --methods sft surrogate --estimators shapley-cv datamodel

The paper's ArtBench numbers (miniSD + rank-256 LoRA, 258 artists, 90th-percentile aesthetic
score): sFT tracks retraining with Pearson 0.68 at 18.6x lower cost; LDS of sFT-Shapley 61.4.

    python benchmarks/t2i.py --out runs/bench-t2i [--preset t2i] [--test-subsets 16]
        [--seeds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffattr.config import build_config
from diffattr.evaluate.common import held_out_masks, open_run, retrain_targets
from diffattr.evaluate.fidelity import method_fidelity
from diffattr.evaluate.lds import LDSProtocol, run_lds
from diffattr.runner import run_attribution

PAPER = {"sft_pearson": 0.68, "speedup": 18.6, "lds_sft_shapley": 61.44}


def job_costs(run, prepared, masks, settings) -> dict[str, float]:
    seed = run.cfg.attribution.seed
    keys = [run.spec(prepared, m, settings, seed, "fidelity").key for m in masks]
    recs = run.store.records(keys, status="done")
    return {
        "train_seconds": float(np.mean([r.t_train for r in recs])) if recs else float("nan"),
        "total_seconds": float(np.mean([r.t_total for r in recs])) if recs else float("nan"),
        "prepare_seconds": float(prepared.prepare_cost),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="t2i", help="t2i (default) or t2i-quick")
    ap.add_argument("--test-subsets", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=1, help="process workers (1: inline)")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config overrides")
    ap.add_argument(
        "--methods", nargs="+", default=["sft", "ft"], help="methods judged (LDS, fidelity)"
    )
    ap.add_argument("--estimators", nargs="+", default=["shapley"], help="estimators of the LDS")
    args = ap.parse_args()
    from diffattr.config import parse_assignment

    overrides = dict(parse_assignment(s) for s in args.set)
    if args.workers > 1:
        overrides["executor"] = {"name": "process", "workers": args.workers}
    cfg = build_config(None, args.preset, overrides)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    run_attribution(cfg, args.out, progress=False)
    t["run"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    protocol = LDSProtocol((args.alpha,), args.test_subsets, args.seeds)
    lds = run_lds(
        args.out, protocol, args.methods, args.estimators, overrides=overrides, progress=False
    ).to_dict()
    t["lds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fidelity, costs = [], {}
    with open_run(args.out, overrides, progress=False) as run:
        p_sft = run.prepare("sft")
        masks = held_out_masks(p_sft.n_players, args.alpha, args.test_subsets, cfg.attribution.seed)
        targets = retrain_targets(run, p_sft, masks, args.seeds)
        retrain = run.cfg.method_settings("retrain")
        rp = run.prepare(retrain)
        rec = [r for row in targets.records for r in row]
        costs["retrain"] = {
            "train_seconds": float(np.mean([r.t_train for r in rec])),
            "total_seconds": float(np.mean([r.t_total for r in rec])),
            "prepare_seconds": float(rp.prepare_cost),
        }
        for name in args.methods:
            p = run.prepare(name)
            fid, failed = method_fidelity(run, p, targets)
            for f in fid:
                d = f.to_dict()
                d.pop("points", None)
                fidelity.append(d)
            c = job_costs(run, p, targets.masks, run.cfg.method_settings(name))
            c["failed_jobs"] = failed
            c["speedup_train"] = costs["retrain"]["train_seconds"] / c["train_seconds"]
            c["speedup_total"] = costs["retrain"]["total_seconds"] / c["total_seconds"]
            costs[name] = c
    t["fidelity"] = time.perf_counter() - t0
    for r in lds["results"]:
        r.pop("predicted", None)
        r.pop("actual", None)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "players": int(p_sft.n_players),
                "test_subsets": int(len(targets.masks)),
                "seeds": args.seeds,
                "fidelity": fidelity,
                "cost": costs,
                "lds": lds["results"],
                "seconds": t,
                "paper_artbench": PAPER,
            },
            indent=2,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
