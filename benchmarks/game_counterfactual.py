"""Counterfactual removal on the recorded complete game, for the estimators a run prints; JSON.

The values each estimator prints are what a run on the recorded game's recipe would print
(``complete_game.py``: digits, 10 class contributors, the LDS benchmark's repeat-0 config):
its own sampler's first ``--subsets`` rows drawn with the run's attribution seed, their sFT
values read from the recorded table (``sft.csv``: every coalition's sFT job), v0 / v1 from
``meta.json``. Each ranking removes its top (or bottom) ``--fraction`` of the players; every
distinct remaining set is retrained from scratch with ``--seeds`` seeds in the game's run
directory (the same θ*, recipe and retrain job keys as ``complete_game.py``, so the
retrains are resumable and shared). Change relative to θ*, mean (sd) over seeds. The
removal retrains of ``counterfactual_table.py`` used the same θ* and recipe, so its random
removals are this table's control.

    OMP_NUM_THREADS=1 nice python benchmarks/game_counterfactual.py --out runs/bench-game \\
        --subsets 64 --seeds 3 --workers 2 > benchmarks/data/complete_game/counterfactual.json

``complete_game.py`` must not run on the same directory at the same time (the run lock).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffattr.behaviors.keys import BehaviorKey
from diffattr.evaluate.common import retrain_targets
from diffattr.evaluate.counterfactual import removal_mask
from diffattr.runner.run import Run
from game import DATA, fit_draw, load
from lds_repeats import add_config_args, config

#: label -> estimator settings: the run's default and KernelSHAP's default and the paper's.
ESTIMATORS_RANKED = {
    "shapley-cv (the run's default)": {"name": "shapley-cv"},
    "shapley (paired kernel, distinct, fitted ends)": {"name": "shapley"},
    "shapley (paired kernel, iid, given ends: the paper's)": {
        "name": "shapley",
        "endpoints": "given",
        "sampler": {"name": "shapley-kernel", "replace": True},
    },
}
RECIPE = {"train_steps": 500, "k": 60, "finetune_steps": 300, "samples": 256}


def printed_values(game, settings: dict, m: int, seed: int) -> dict[str, np.ndarray]:
    """The values a run with this estimator, M and seed prints, per behavior (no row is
    dropped: a run has no test subsets)."""
    atts, _ = fit_draw(game, settings, m, seed, set())
    return {a.behavior: np.asarray(a.values, float) for a in atts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="complete_game.py's run directory")
    ap.add_argument("--game", type=Path, default=DATA, help="the recorded game")
    ap.add_argument("--subsets", type=int, default=64, help="M of the printed values")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.4)
    ap.add_argument(
        "--draws",
        type=int,
        default=1,
        help="rankings from this many draws of each estimator's rows (seeds: the run's "
        "attribution seed, then the next ones)",
    )
    ap.add_argument("--only", nargs="*", default=None, help="estimator labels containing these")
    add_config_args(ap)
    ap.set_defaults(**RECIPE, estimators=["shapley"], grid=[64])
    args = ap.parse_args()
    t0 = time.perf_counter()
    game = load(args.game)
    cfg = config(args, 0)
    seed = cfg.attribution.seed
    k = max(1, int(round(args.fraction * game.n)))
    removals = []  # (label, draw seed, ranked_by, remove, mask, values)
    for label, settings in ESTIMATORS_RANKED.items():
        if args.only and not any(o in label for o in args.only):
            continue
        for d in range(seed, seed + args.draws):
            for beh, v in printed_values(game, settings, args.subsets, d).items():
                for remove in ("top", "bottom"):
                    removals.append((label, d, beh, remove, removal_mask(v, beh, remove, k), v))
    uniq = {"".join("1" if b else "0" for b in r[4]): r[4] for r in removals}
    with Run(cfg, args.out, progress=False) as run:
        plan = run.jobs()
        p = plan.prepared
        full = run.reference_records(plan)["full"].behaviors
        targets = retrain_targets(
            run, p, np.array(list(uniq.values())), args.seeds, kind="counterfactual"
        )
    index = {"".join("1" if b else "0" for b in m): i for i, m in enumerate(targets.masks)}
    rows = []
    for label, d, beh, remove, mask, v in removals:
        row = {
            "estimator": label,
            "draw_seed": d,
            "ranked_by": beh,
            "remove": remove,
            "removed": [game.players[j] for j in np.flatnonzero(~mask)],
            "values": [round(float(x), 4) for x in v],
        }
        b = index.get("".join("1" if x else "0" for x in mask))
        if b is None:
            rows.append({**row, "error": "retrain failed"})
            continue
        for bb in game.behaviors:
            y = targets.values(bb)[:, b]
            change = 100.0 * (y - full[bb]) / abs(full[bb])
            row[bb] = {
                "mean_pct": float(change.mean()),
                "sd_pct": float(change.std(ddof=1)) if len(change) > 1 else float("nan"),
                "better_is_lower": BehaviorKey.parse(bb).lower_is_better,
            }
        rows.append(row)
    summary = []  # per estimator and behavior: how often the top removal moved it further
    for label in dict.fromkeys(r["estimator"] for r in rows):
        for beh in game.behaviors:
            pairs = {}
            for r in rows:
                if r["estimator"] == label and r["ranked_by"] == beh and beh in r:
                    pairs.setdefault(r["draw_seed"], {})[r["remove"]] = r[beh]["mean_pct"]
            sign = -1.0 if BehaviorKey.parse(beh).lower_is_better else 1.0
            # the right way: removing the top makes the behavior worse than removing the bottom
            gaps = [sign * (p["bottom"] - p["top"]) for p in pairs.values() if len(p) == 2]
            summary.append(
                {
                    "estimator": label,
                    "behavior": beh,
                    "draws": len(gaps),
                    "top_worse_than_bottom": int(sum(g > 0 for g in gaps)),
                    "mean_gap_pct": float(np.mean(gaps)) if gaps else float("nan"),
                }
            )
    out = {
        "command": "python benchmarks/game_counterfactual.py "
        f"--out {args.out} --subsets {args.subsets} --seeds {args.seeds} "
        f"--fraction {args.fraction} --draws {args.draws} --workers {args.workers}",
        "M": args.subsets,
        "seed": seed,
        "removed_per_mask": k,
        "full": full,
        "distinct_masks": len(uniq),
        "retrain_seconds_per_job": targets.seconds_per_job(),
        "seconds": time.perf_counter() - t0,
        "summary": summary,
        "rows": rows,
    }
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
