"""The cost-fidelity frontier of sFT counterfactuals on digits (issue: cost per counterfactual).

For each operating point -- the complete game's recipe (``complete_game.py``: k = 60 steps,
256 images x 25 DDIM steps, pruning 0.3) with one or more knobs changed: k, the fine-tune's
learning rate, batch size, EMA handling, pruning ratio, and the sampling budget (images x
DDIM steps, common random numbers across coalitions as always) -- this script runs the sFT
jobs of the coalitions whose models were retrained from scratch in the complete game
(``benchmarks/data/complete_game/retrain.csv``: every singleton and leave-one-out set and
a few 2- and 8-player sets, plus ``--test`` of the held-out alpha = 0.5 subsets) and reports

* fidelity: Pearson and Spearman correlation of the point's F(S) with the retrained F(S)
  (mean over the recorded retraining seeds), FID and IS, over all those coalitions
  ("pooled": sizes 1 to 9, where a size effect helps) and over the alpha = 0.5 subsets only
  ("test": the LDS's subsets, the harder ranking);
* cost: seconds per counterfactual, the mean of the jobs' own clocks (train + sample +
  measure, each job in one of ``--workers`` processes at one thread), and the retraining
  cost measured in the same call (``--retrain-timing`` retrains of test subsets, seed 99);
* the recommended point: the cheapest point timed in the call whose test-group Pearson
  is, for both behaviors, at least the recipe's lower value over two fine-tune seeds
  minus ``--tolerance`` (marked in the plot and the JSON; ``--summarize`` recomputes it).

With ``--seeds N`` every named point runs with fine-tune seeds 0 .. N-1 (the instance of
seed s > 0 is named ``POINT-seed<s>``), and the summary adds, per point, the mean, min and
max over seeds of each fidelity and the difference from the recipe paired by seed (the same
coalitions, sampling noise and data order); the recommendation then compares seed means:
the cheapest point whose mean test Pearson is at least the recipe's mean minus
``--tolerance`` for both behaviors. Clocks are the mean over the jobs that ran in the call
(jobs found done in the store, e.g. from an earlier call, are not timed again).

The jobs live in the complete game's run directory (content-keyed: the recipe point's jobs
are the game's own and cost nothing; a stopped call resumes), and every finished point is
appended to ``benchmarks/data/frontier/jobs.csv`` so the rows can be committed as they
accrue. Costs compare only within one call on one machine, and the machine's load matters:
the JSON records the load average at the start and end of each point.

    OMP_NUM_THREADS=1 nice python benchmarks/frontier.py --out runs/bench-game \\
        --data-dir benchmarks/data/frontier --workers 2 --plot benchmarks/data/frontier/frontier.png

The third call (three fine-tune seeds per point, 50 test subsets; BENCHMARKS.md)::

    OMP_NUM_THREADS=1 nice python benchmarks/frontier.py --out runs/bench-game \\
        --data-dir benchmarks/data/frontier/call3 --retrain-seed 97 --test 50 --seeds 3 \\
        --workers 1 --points recipe ratio0.5 k20-ddim10 ratio0.5-k30-ddim10 ratio0.5-k20-ddim10
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from complete_game import RECIPE
from diffattr.runner.run import Run
from lds_repeats import add_config_args, config

HERE = Path(__file__).resolve().parent
GAME = HERE / "data" / "complete_game"

#: Operating points: knobs changed from the recipe. ``k``, ``lr``, ``batch_size``, ``ema``
#: and ``ratio`` are sFT settings; ``samples`` and ``ddim_steps`` the sampling budget.
POINTS: dict[str, dict] = {
    "recipe": {},
    # the recipe again with other fine-tune seeds: its cost timed in this call, and the
    # spread of sFT itself (the game's recipe jobs were timed when the game was recorded)
    "recipe-seed1": {"job_seed": 1},
    "recipe-seed2": {"job_seed": 2},
    "k30": {"k": 30},
    "k20": {"k": 20},
    "k10": {"k": 10},
    "ddim10": {"ddim_steps": 10},
    "ddim5": {"ddim_steps": 5},
    "n128": {"samples": 128},
    "k20-ddim10": {"k": 20, "ddim_steps": 10},
    "k10-ddim10-n128": {"k": 10, "ddim_steps": 10, "samples": 128},
    "k20-lr2x": {"k": 20, "lr_scale": 2.0},
    "batch32": {"batch_size": 32},
    "ema-none": {"ema": "none"},
    "ratio0.5": {"ratio": 0.5},
    "k120": {"k": 120},
    # combinations (a second call, after the single knobs)
    "ratio0.5-seed1": {"ratio": 0.5, "job_seed": 1},
    "ratio0.7": {"ratio": 0.7},
    "ratio0.5-k20-ddim10": {"ratio": 0.5, "k": 20, "ddim_steps": 10},
    "ratio0.5-k30-ddim10": {"ratio": 0.5, "k": 30, "ddim_steps": 10},
    "ratio0.5-k20-ddim5": {"ratio": 0.5, "k": 20, "ddim_steps": 5},
    "k20-ddim5": {"k": 20, "ddim_steps": 5},
    "k20-ddim10-n128": {"k": 20, "ddim_steps": 10, "samples": 128},
    # the fourth call (idle machine): ratio 0.5 with fewer DDIM steps, or half the steps at
    # twice the batch (the same examples; below batch 64 a step costs nearly the same)
    "ratio0.5-ddim10": {"ratio": 0.5, "ddim_steps": 10},
    "ratio0.5-k30-batch128": {"ratio": 0.5, "k": 30, "batch_size": 128},
}
METHOD_KNOBS = {
    "k": "steps",
    "lr": "lr",
    "batch_size": "batch_size",
    "ema": "ema",
    "ratio": "ratio",
}
SAMPLE_KNOBS = {"samples", "ddim_steps"}
SEED_SUFFIX = re.compile(r"-seed(\d+)$")


def instances(points: list[str], seeds: int) -> dict[str, dict]:
    """The operating points to run: each named point with fine-tune seeds 0 .. seeds-1
    (seed s > 0 named ``POINT-seed<s>``; a point that fixes its own seed runs once)."""
    out: dict[str, dict] = {}
    for name in points:
        knobs = POINTS[name]
        if seeds > 1 and "job_seed" in knobs:
            raise SystemExit(f"frontier: --seeds {seeds} with {name}, which fixes its own seed")
        for s in range(seeds if "job_seed" not in knobs else 1):
            out[name if s == 0 else f"{name}-seed{s}"] = (
                knobs if s == 0 else {**knobs, "job_seed": s}
            )
    return out


def base_point(name: str) -> tuple[str, int]:
    """``POINT-seed<s>`` -> (POINT, s); a name without the suffix is seed 0 of itself."""
    m = SEED_SUFFIX.search(name)
    return (name[: m.start()], int(m.group(1))) if m else (name, 0)


def point_config(base, knobs: dict):
    """The run configuration of one operating point (validated)."""
    unknown = set(knobs) - set(METHOD_KNOBS) - SAMPLE_KNOBS - {"lr_scale", "job_seed"}
    if unknown:
        raise SystemExit(f"frontier: unknown knobs {sorted(unknown)}")
    method = base.method.model_dump()
    for k, field in METHOD_KNOBS.items():
        if k in knobs:
            method[field] = knobs[k]
    if "lr_scale" in knobs:  # relative to the recipe's (the full model's) learning rate
        method["lr"] = float(knobs["lr_scale"]) * base.train.lr
    sample = base.sample.model_dump()
    if "samples" in knobs:
        sample.update(num_samples=knobs["samples"], batch_size=knobs["samples"])
    if "ddim_steps" in knobs:
        sample["ddim_steps"] = knobs["ddim_steps"]
    return base.model_copy(
        update={
            "method": type(base.method)(**method),
            "sample": type(base.sample)(**sample),
        }
    )


def ground_truth(test: int) -> tuple[dict[str, dict[str, float]], dict[str, str], dict]:
    """Retrained F(S) per mask (mean over seeds), each mask's group, and the seed-to-seed
    agreement of retraining where two seeds exist (the ceiling of any method's fidelity)."""
    rows = list(csv.DictReader((GAME / "retrain.csv").open()))
    meta = json.loads((GAME / "meta.json").read_text())
    behaviors = meta["behaviors"]
    keep_test = set(meta["test_subsets"][:test])
    by_mask: dict[str, list[dict]] = {}
    group: dict[str, str] = {}
    for r in rows:
        if r["set"] == "test" and r["mask"] not in keep_test:
            continue
        by_mask.setdefault(r["mask"], []).append(r)
        group[r["mask"]] = r["set"]
    truth = {
        m: {b: float(np.mean([float(r[b]) for r in rs])) for b in behaviors}
        for m, rs in by_mask.items()
    }
    ceiling = {}
    # on the alpha = 0.5 subsets only: pooled sizes would show mostly the size effect
    two = [
        sorted(rs, key=lambda r: int(r["seed"])) for m, rs in by_mask.items() if group[m] == "test"
    ]
    two = [rs for rs in two if len(rs) >= 2 and rs[0]["seed"] != rs[1]["seed"]]
    for b in behaviors:
        pairs = [(float(rs[0][b]), float(rs[1][b])) for rs in two]
        if len(pairs) >= 8:
            a, c = np.array(pairs).T
            ceiling[b] = {
                "test_subsets": len(pairs),
                "pearson_seed0_seed1": float(pearsonr(a, c)[0]),
                "spearman_seed0_seed1": float(spearmanr(a, c)[0]),
            }
    return truth, group, ceiling


def fidelity(values: dict[str, dict[str, float]], truth, group, behaviors) -> dict:
    out = {}
    for g in ("pooled", "test", "small-large"):
        masks = [m for m in values if m in truth and (g == "pooled" or group[m] == g)]
        for b in behaviors:
            if len(masks) < 4:
                continue
            x = np.array([values[m][b] for m in masks])
            y = np.array([truth[m][b] for m in masks])
            out[f"{g}:{b}"] = {
                "n": len(masks),
                "pearson": float(pearsonr(x, y)[0]),
                "spearman": float(spearmanr(x, y)[0]),
            }
    return out


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the complete game's run directory")
    ap.add_argument("--data-dir", type=Path, default=HERE / "data" / "frontier")
    ap.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    ap.add_argument("--test", type=int, default=24, help="alpha = 0.5 subsets per point")
    ap.add_argument("--retrain-timing", type=int, default=2, help="retrains timed in this call")
    ap.add_argument(
        "--retrain-seed", type=int, default=99, help="seed of those retrains (new per call)"
    )
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fine-tune seeds per point (instances POINT-seed<s>); the summary and the "
        "recommendation then use means over seeds",
    )
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument(
        "--summarize",
        action="store_true",
        help="no jobs: recompute the recommendation (and --plot) from DATA_DIR/frontier.json",
    )
    add_config_args(ap)
    ap.set_defaults(**RECIPE, estimators=["shapley"], grid=[64])
    args = ap.parse_args()
    if args.summarize:
        summary = json.loads((args.data_dir / "frontier.json").read_text())
        summary["retrain_ceiling"] = ground_truth(args.test)[2]
        behaviors = json.loads((GAME / "meta.json").read_text())["behaviors"]
        _conclude(summary, behaviors, args.tolerance)
        (args.data_dir / "frontier.json").write_text(json.dumps(summary, indent=1) + "\n")
        if args.plot:
            plot(summary, behaviors, args.plot)
        print(json.dumps({"recommended": summary["recommended"]}))
        return
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    todo = instances(args.points, args.seeds)
    base = config(args, 0)
    truth, group, ceiling = ground_truth(args.test)
    masks = sorted(truth, key=lambda m: (group[m] != "small-large", m))
    behaviors = json.loads((GAME / "meta.json").read_text())["behaviors"]
    args.data_dir.mkdir(parents=True, exist_ok=True)
    jobs_csv = args.data_dir / "jobs.csv"
    head = ["point", "mask", "group", *behaviors, "t_train", "t_sample", "t_measure", "t_total"]
    recorded: dict[str, list[dict]] = {}
    if jobs_csv.exists():
        for r in csv.DictReader(jobs_csv.open()):
            recorded.setdefault(r["point"], []).append(r)
    summary: dict = {
        "command": "python benchmarks/frontier.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "seeds": args.seeds,
        "masks": len(masks),
        "retrain_ceiling": ceiling,
        "points": {},
    }
    t_call = time.perf_counter()
    # retraining's cost, timed first in this call (``--retrain-seed``: give each call its own)
    if args.retrain_timing > 0:
        retrain = base.method_settings("retrain")
        tests = [m for m in masks if group[m] == "test"][: args.retrain_timing]
        with Run(base, args.out, progress=False) as run:
            rp = run.prepare(retrain)
            specs = [run.spec(rp, m, retrain, args.retrain_seed, "test") for m in tests]
            run.execute(specs, "retrain timing")
            recs = run.store.records([s.key for s in specs], status="done")
        summary["retrain_seconds"] = float(np.mean([r.t_total for r in recs])) if recs else None
    for name, knobs in todo.items():
        cfg = point_config(base, knobs)
        load0 = load_avg()
        t0 = time.perf_counter()
        with Run(cfg, args.out, progress=False) as run:
            p = run.prepare(cfg.method)
            seed = cfg.attribution.seed + 1000 * int(knobs.get("job_seed", 0))
            specs = [run.spec(p, m, p.method, seed, "test") for m in masks]
            before = run.store.done_keys([s.key for s in specs])
            ex = run.execute(specs, name)
            recs = {r.key: r for r in run.store.records([s.key for s in specs], status="done")}
            prepare_cost = p.prepare_cost
        wall = time.perf_counter() - t0
        rows, timed = [], []  # timed: the records of the jobs run in this call
        for s in specs:
            r = recs.get(s.key)
            if r is None:
                continue
            if s.key not in before:
                timed.append(r)
            rows.append(
                {
                    "point": name,
                    "mask": s.mask,
                    "group": group[s.mask],
                    **{b: repr(float(r.behaviors[b])) for b in behaviors},
                    "t_train": round(r.t_train, 3),
                    "t_sample": round(r.t_sample, 3),
                    "t_measure": round(r.t_measure, 3),
                    "t_total": round(r.t_total, 3),
                }
            )
        if len(rows) < len(specs):
            print(f"{name}: {len(specs) - len(rows)} jobs failed; see diffattr status {args.out}")
        if ex.ran or name not in recorded:  # new rows: rewrite the CSV
            recorded[name] = rows
            tmp = jobs_csv.with_suffix(".tmp")
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, head)
                w.writeheader()
                for pt in recorded:
                    w.writerows(recorded[pt])
            tmp.replace(jobs_csv)
        values = {r["mask"]: {b: float(r[b]) for b in behaviors} for r in rows}
        # the clocks of the jobs run in this call (all the rows' when none ran: an old call's)
        clocks = [(r.t_train, r.t_sample, r.t_measure, r.t_total) for r in timed] or [
            tuple(float(r[k]) for k in ("t_train", "t_sample", "t_measure", "t_total"))
            for r in rows
        ]
        t_total = [c[3] for c in clocks]
        summary["points"][name] = {
            "knobs": knobs,
            "jobs": len(rows),
            "new_jobs_this_call": ex.ran,
            "timed_jobs": len(timed),
            "seconds_per_counterfactual": float(np.mean(t_total)) if t_total else None,
            "train_sample_measure": [float(np.mean([c[i] for c in clocks])) for i in range(3)]
            if clocks
            else None,
            "prepare_seconds": prepare_cost,
            "wall_seconds_this_call": round(wall, 1),
            "load_before_after": [load0, load_avg()],
            "fidelity": fidelity(values, truth, group, behaviors),
        }
        print(json.dumps({name: summary["points"][name]}), flush=True)
        _conclude(summary, behaviors, args.tolerance)
        (args.data_dir / "frontier.json").write_text(json.dumps(summary, indent=1) + "\n")
    _conclude(summary, behaviors, args.tolerance)
    summary["seconds_this_call"] = round(time.perf_counter() - t_call, 1)
    (args.data_dir / "frontier.json").write_text(json.dumps(summary, indent=1) + "\n")
    if args.plot:
        plot(summary, behaviors, args.plot)
    print(
        json.dumps(
            {
                "recommended": summary["recommended"],
                "retrain_seconds": summary.get("retrain_seconds"),
            }
        )
    )


def _conclude(summary: dict, behaviors: list[str], tol: float) -> None:
    """The recommendation: over seed means when some point ran with several seeds."""
    if summary.get("seeds", 1) > 1:
        summary["over_seeds"] = over_seeds(summary, behaviors)
        summary["recommended"] = recommend_over_seeds(summary, behaviors, tol)
    else:
        summary["recommended"] = recommend(summary, behaviors, tol)


def over_seeds(summary: dict, behaviors: list[str]) -> dict:
    """Per point (its seed instances pooled): the mean / min / max over seeds of each
    fidelity, the mean clock, and the difference from the recipe paired by seed."""
    groups: dict[str, dict[int, dict]] = {}
    for name, pt in summary["points"].items():
        b, s = base_point(name)
        groups.setdefault(b, {})[s] = pt
    recipe = groups.get("recipe", {})
    out = {}
    for b, by_seed in groups.items():
        row: dict = {"seeds": sorted(by_seed)}
        clocks = [pt["seconds_per_counterfactual"] for pt in by_seed.values() if timed_now(pt)]
        row["seconds_per_counterfactual"] = float(np.mean(clocks)) if clocks else None
        row["timed_seeds"] = len(clocks)
        for key in sorted({k for pt in by_seed.values() for k in pt["fidelity"]}):
            for stat in ("pearson", "spearman"):
                v = [pt["fidelity"][key][stat] for pt in by_seed.values() if key in pt["fidelity"]]
                d = [
                    pt["fidelity"][key][stat] - recipe[s]["fidelity"][key][stat]
                    for s, pt in by_seed.items()
                    if s in recipe and key in pt["fidelity"] and key in recipe[s]["fidelity"]
                ]
                row[f"{key}:{stat}"] = {
                    "mean": float(np.mean(v)),
                    "min": float(np.min(v)),
                    "max": float(np.max(v)),
                    **(
                        {
                            "minus_recipe_mean": float(np.mean(d)),
                            "minus_recipe_min": float(np.min(d)),
                            "minus_recipe_max": float(np.max(d)),
                            "paired_seeds": len(d),
                        }
                        if d and b != "recipe"
                        else {}
                    ),
                }
        out[b] = row
    return out


def recommend_over_seeds(summary: dict, behaviors: list[str], tol: float) -> dict | None:
    """The cheapest point (clock: mean over its seeds timed in this call) whose mean test
    Pearson over seeds is, for every behavior, at least the recipe's mean minus ``tol``.
    None when the recipe has no timed seed in this call."""
    rows = summary["over_seeds"]
    recipe = rows.get("recipe")
    if not recipe or recipe["seconds_per_counterfactual"] is None:
        return None
    floor = {b: recipe[f"test:{b}:pearson"]["mean"] - tol for b in behaviors}
    ok = [
        (row["seconds_per_counterfactual"], name)
        for name, row in rows.items()
        if row["seconds_per_counterfactual"] is not None
        and all(
            f"test:{b}:pearson" in row and row[f"test:{b}:pearson"]["mean"] >= floor[b]
            for b in behaviors
        )
    ]
    if not ok:
        return None
    sec, name = min(ok)
    rec = _recommendation(summary, name, sec, floor, recipe["seconds_per_counterfactual"])
    return {**rec, "rule": f"mean test Pearson over seeds >= the recipe's mean - {tol}"}


def _recommendation(summary: dict, name: str, sec: float, floor: dict, recipe_sec: float):
    """The recommended point's record: its clock against the recipe's and retraining's."""
    rec = {
        "point": name,
        "seconds_per_counterfactual": sec,
        "pearson_floor": floor,
        "recipe_seconds": recipe_sec,
        "speedup_vs_recipe": recipe_sec / sec,
    }
    if summary.get("retrain_seconds"):
        rec["cheaper_than_retraining"] = summary["retrain_seconds"] / sec
        rec["recipe_cheaper_than_retraining"] = summary["retrain_seconds"] / recipe_sec
    return rec


def timed_now(pt: dict) -> bool:
    """Whether a point's jobs ran in the call that wrote it (its clocks compare with the
    other points of that call)."""
    return bool(pt.get("new_jobs_this_call")) and pt.get("seconds_per_counterfactual") is not None


def recommend(summary: dict, behaviors: list[str], tol: float) -> dict | None:
    """The cheapest point timed in this call whose test-group Pearson is, for every
    behavior, at least the recipe's minus ``tol`` -- the lowest value over the recipe's
    fine-tune seeds (the points named ``recipe*``), since sFT's own seed moves it. The
    recipe's cost is the mean of its points timed in this call (the ``recipe`` jobs are the
    game's, timed in another call). None without a recipe point timed in this call."""
    pts = summary["points"]
    recipes = [n for n in pts if n.startswith("recipe")]
    timed = [pts[n]["seconds_per_counterfactual"] for n in recipes if timed_now(pts[n])]
    if not timed:
        return None
    floor = {
        b: min(pts[r]["fidelity"][f"test:{b}"]["pearson"] for r in recipes) - tol for b in behaviors
    }
    ok = []
    for name, pt in pts.items():
        fid = pt["fidelity"]
        if not timed_now(pt):
            continue
        if all(f"test:{b}" in fid and fid[f"test:{b}"]["pearson"] >= floor[b] for b in behaviors):
            ok.append((pt["seconds_per_counterfactual"], name))
    if not ok:
        return None
    sec, name = min(ok)
    return _recommendation(summary, name, sec, floor, float(np.mean(timed)))


def plot(summary: dict, behaviors: list[str], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(behaviors), figsize=(6 * len(behaviors), 4.5))
    best = (summary.get("recommended") or {}).get("point")
    for ax, b in zip(np.atleast_1d(axes), behaviors):
        for name, row in (summary.get("over_seeds") or {}).items():
            f = row.get(f"test:{b}:pearson")
            if f is None or row["seconds_per_counterfactual"] is None:
                continue
            x, y = row["seconds_per_counterfactual"], f["mean"]
            err = [[y - f["min"]], [f["max"] - y]]  # the range over seeds
            c = "C3" if name == best else ("k" if name == "recipe" else "C0")
            ax.errorbar(x, y, yerr=err, fmt="o", c=c, capsize=3)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for name, pt in summary["points"].items() if "over_seeds" not in summary else ():
            f = pt["fidelity"].get(f"test:{b}")
            if f is None or not timed_now(pt):
                continue
            x, y = pt["seconds_per_counterfactual"], f["pearson"]
            ax.scatter(x, y, c="C3" if name == best else ("k" if name == "recipe" else "C0"))
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if summary.get("retrain_seconds"):
            ax.axvline(summary["retrain_seconds"] / 25, ls=":", c="grey", lw=1)
        ceiling = (summary.get("retrain_ceiling") or {}).get(b)
        if ceiling:  # retraining against itself (seed 0 vs 1): the most any method shows
            ax.axhline(ceiling["pearson_seed0_seed1"], ls="--", c="grey", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 3, 5)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("seconds per counterfactual (one job, one thread)")
        ax.set_ylabel("Pearson with retraining, alpha = 0.5 subsets")
        ax.set_title(b)
    seeds = "; bars: range over fine-tune seeds" if "over_seeds" in summary else ""
    fig.suptitle(
        "sFT cost vs fidelity (digits; red: recommended; dotted: retrain cost / 25; "
        f"dashed: retraining seed 0 vs seed 1{seeds})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
