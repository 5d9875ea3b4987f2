"""Counterfactual removal by the best method of each category, on an LDS-repeat run; JSON.

The paper's Fig. 3 / the workshop version's Table 3: rank the players by each method's
values, retrain from scratch without the top (or bottom) 40 % with several seeds, and
report the relative change of each behavior against the full model theta*. A method whose
top players matter should move F the most when they are removed (FID up, IS down), and its
bottom players the least (or the other way). Random removals of the same size are the
control.

It reuses a repeat directory of ``benchmarks/lds_repeats.py`` (the same arguments, so the
same config and cached jobs): the sFT / ft coalition jobs, retrain-LOO and the baselines'
features are already there; only the removal retrains are new. The method of each category
is the one with the best mean LDS over behaviors in that run's ``r<repeat>.json`` (sFT-Shapley
at the largest M is always added).

    python benchmarks/counterfactual_table.py --out runs/bench-lds-rep --repeat 0 \\
        --seeds 3 [the lds_repeats.py config arguments of that run: --grid ... --workers]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffattr.baselines.settings import BASELINES as BASELINE_SETTINGS
from diffattr.baselines.settings import GradientSettings
from diffattr.behaviors.keys import BehaviorKey
from diffattr.estimators.settings import ESTIMATORS
from diffattr.evaluate.common import held_out_masks, retrain_targets
from diffattr.evaluate.counterfactual import removal_mask
from diffattr.runner.run import Run, fit_table
from diffattr.store import mask_to_str
from lds_repeats import BASELINES, add_config_args, config

CATEGORIES = {
    "sft": lambda r: r["method"] == "sft",
    "retrain": lambda r: r["method"] == "retrain",
    # every baseline whose settings class is a gradient baseline (TRAK and its variants)
    "gradient": lambda r: (
        r["method"] == "baseline"
        and issubclass(BASELINE_SETTINGS.get(r["estimator"].split("[")[0]), GradientSettings)
    ),
    "similarity": lambda r: (
        r["method"] == "baseline"
        and r["estimator"].split("[")[0] in {"pixel-similarity", "feature-similarity"}
    ),
}


def best_per_category(rep: dict) -> dict[str, tuple[str, str, object]]:
    """(method, estimator label, M) with the best mean LDS over behaviors, per category."""
    rows: dict[tuple, list[float]] = {}
    for r in rep["results"]:
        if "lds" in r and np.isfinite(r["lds"]):
            rows.setdefault((r["method"], r["estimator"], r.get("M")), []).append(r["lds"])
    out = {}
    for cat, pred in CATEGORIES.items():
        cands = [
            (float(np.mean(v)), k)
            for k, v in rows.items()
            if pred({"method": k[0], "estimator": k[1]}) and len(v) > 1 and "[v1=" not in k[1]
        ]
        if cands:
            out[cat] = max(cands)[1]
    return out


def values_of(run, plan, method: str, label: str, m, test_set) -> dict[str, np.ndarray]:
    """behavior -> values of one (method, estimator, M) of the LDS benchmark."""
    name = label.split("[")[0]
    if method == "baseline":
        spec = next(
            b
            for b in BASELINES
            if name == b["name"]
            and all(f"[{k}={b[k]}]" in label for k in ("chunk_size", "aggregation") if k in b)
        )
        settings = BASELINE_SETTINGS.parse(spec)
        est = run.estimate(run.jobs(estimators=[settings]), estimators=[settings])
        return {a.behavior: a.values for a in est.attributions}
    settings = ESTIMATORS.parse({"name": name} if name == "loo" else {"name": name, "subsets": m})
    mplan = plan if method == "sft" else run.jobs(method, [settings])
    limit = None if name == "loo" else m
    table = run.table(mplan, name, test_set if method != "retrain" else None, limit)
    return {a.behavior: a.values for a in fit_table(settings, table)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the lds_repeats.py --out folder")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.4)
    ap.add_argument("--random", type=int, default=3, help="random removals (control)")
    add_config_args(ap)  # the lds_repeats.py arguments that define the repeat's config
    args = ap.parse_args()
    rep = json.loads((args.out / f"r{args.repeat}.json").read_text())
    chosen = best_per_category(rep)
    # sFT-Shapley at the largest M, the paper's headline method, is always included
    chosen.setdefault("sft-shapley", ("sft", "shapley", max(args.grid)))
    if chosen.get("sft") == ("sft", "shapley", max(args.grid)):
        del chosen["sft-shapley"]
    t0 = time.perf_counter()
    cfg = config(args, args.repeat)
    with Run(cfg, args.out / f"r{args.repeat}", progress=False) as run:
        plan = run.jobs()
        p = plan.prepared
        n = p.n_players
        k = max(1, int(round(args.fraction * n)))
        full = run.reference_records(plan)["full"].behaviors
        test = held_out_masks(n, 0.5, rep["test_subsets"], cfg.attribution.seed)
        test_set = {mask_to_str(m) for m in test}
        removals = []  # (category, label, ranked_by, remove, mask)
        for cat, (method, label, m) in chosen.items():
            vals = values_of(run, plan, method, label, m, test_set)
            for beh, v in vals.items():
                for remove in ("top", "bottom"):
                    removals.append(
                        (cat, f"{method}-{label}@{m}", beh, remove, removal_mask(v, beh, remove, k))
                    )
        rng = np.random.default_rng(1000 + args.repeat)
        for i in range(args.random):
            mask = np.ones(n, dtype=bool)
            mask[rng.choice(n, k, replace=False)] = False
            removals.append(("random", f"random-{i}", "-", "random", mask))
        uniq = {mask_to_str(x[-1]): x[-1] for x in removals}
        masks = np.array(list(uniq.values()))
        targets = retrain_targets(run, p, masks, args.seeds, kind="counterfactual")
        index = {mask_to_str(m): b for b, m in enumerate(targets.masks)}
        behaviors = sorted(full)
        rows = []
        for cat, label, beh, remove, mask in removals:
            b = index.get(mask_to_str(mask))
            row = {
                "category": cat,
                "method": label,
                "ranked_by": beh,
                "remove": remove,
                "removed": [p.players.names[j] for j in np.flatnonzero(~mask)],
            }
            if b is None:
                rows.append({**row, "error": "retrain failed"})
                continue
            for bb in behaviors:
                y = targets.values(bb)[:, b]  # (seeds,)
                change = 100.0 * (y - full[bb]) / abs(full[bb])
                row[bb] = {
                    "mean_pct": float(change.mean()),
                    "sd_pct": float(change.std(ddof=1)) if len(change) > 1 else float("nan"),
                    "better_is_lower": BehaviorKey.parse(bb).lower_is_better,
                }
            rows.append(row)
    print(
        json.dumps(
            {
                "repeat": args.repeat,
                "fraction": args.fraction,
                "removed_per_mask": k,
                "seeds": args.seeds,
                "chosen": {c: list(v) for c, v in chosen.items()},
                "full": full,
                "distinct_masks": len(masks),
                "retrain_seconds_per_job": targets.seconds_per_job(),
                "seconds": time.perf_counter() - t0,
                "rows": rows,
            },
            indent=1,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
