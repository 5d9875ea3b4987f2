"""LDS of every estimator and baseline on digits, over independent repeats; prints JSON.

Each repeat is the whole pipeline with its own seeds (model initialisation and training
batches, sampling noise, coalitions and test subsets): a full model, the sFT jobs of every
estimator's sampler (fitted at several budgets M as prefixes of one stream), held-out
datamodel subsets retrained from scratch with several seeds, retrain-Shapley at its
smallest identified budget (2(n - 1) retrained coalitions) and at sFT's equal compute,
retrain-LOO, ft-Shapley, the gradient / similarity / heuristic baselines, and sFT's
fidelity to retraining. Per repeat and estimator the LDS is the mean over retraining seeds
(the paper's protocol); the summary is the mean and sd over repeats.

    python benchmarks/lds_repeats.py --out runs/bench-lds3 --repeats 3 --test-subsets 24 \\
        --seeds 3 --grid 32 64 100 140 > lds3.json

The same table on Fashion-MNIST (16 px, 200 images per class contributor), sFT-Shapley and
the sFT datamodel only, no retrain- or ft-Shapley (BENCHMARKS.md's command)::

    python benchmarks/lds_repeats.py --out runs/bench-lds-fashion --data fashion-mnist \\
        --estimators shapley datamodel --retrain-max 0 --ft-subsets 0 --only 0 ...
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from diffattr.baselines.settings import BASELINES as BASELINE_SETTINGS
from diffattr.config import build_config
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS
from diffattr.evaluate.common import held_out_masks, retrain_targets
from diffattr.evaluate.fidelity import method_fidelity
from diffattr.evaluate.lds import lds_over_seeds
from diffattr.runner.run import Run, fit_table
from diffattr.store import mask_to_str

BASELINES = [
    {"name": "trak"},
    {"name": "d-trak"},
    {"name": "journey-trak"},
    {"name": "relative-influence"},
    {"name": "renormalized-influence"},
    {"name": "gradient-similarity"},
    {"name": "das"},
    {"name": "ekfac-influence"},
    {"name": "pixel-similarity", "aggregation": "mean"},
    {"name": "pixel-similarity", "aggregation": "max"},
    {"name": "feature-similarity", "aggregation": "mean"},
    {"name": "feature-similarity", "aggregation": "max"},
    # FID / IS are set-level: measured on each player's whole data, or on chunks of 50
    {"name": "property-heuristic", "chunk_size": 0},
    {"name": "property-heuristic", "chunk_size": 50, "aggregation": "mean"},
    {"name": "property-heuristic", "chunk_size": 50, "aggregation": "max"},
]

SFT_ESTIMATORS = ["shapley", "shapley-cv", "datamodel", "banzhaf", "loo"]


def config(args, r: int):
    grid_max = max(args.grid)
    over: dict = {}  # digits: the preset's data table untouched (the cached repeats' keys)
    if args.data == "fashion-mnist":
        # 16 px, a class subset per contributor (the latent demo's resolution)
        over = {"name": "fashion-mnist", "image_size": 16, "limit_per_class": args.per_class or 200}
    elif args.per_class is not None:
        over = {"name": "digits", "limit_per_class": args.per_class}
    return build_config(
        None,
        "default",
        {
            **({"data": over} if over else {}),
            "family.seed": r,
            "train.seed": r,
            "train.steps": args.train_steps,
            "train.batch_size": args.train_batch_size,
            "sample.seed": r,
            "sample.num_samples": args.samples,
            "sample.batch_size": args.samples,
            "attribution.seed": r,
            "attribution.subsets": grid_max,
            "attribution.estimators": [
                e
                for e in [
                    {"name": "shapley", "subsets": grid_max},
                    {"name": "shapley-cv", "subsets": grid_max},
                    {"name": "datamodel", "subsets": min(grid_max, args.other_max)},
                    {"name": "banzhaf", "subsets": min(grid_max, args.banzhaf_max)},
                    {"name": "loo"},
                ]
                if e["name"] in args.estimators
            ],
            "method": {"name": "sft", "finetune_steps": args.finetune_steps, "steps": args.k},
            "methods": {"ft": {"steps": args.k}},
            "executor": {"name": "process", "workers": args.workers},
        },
    )


def score(values, targets, behavior) -> dict:
    """LDS (mean over retraining seeds), per seed, t-interval over seeds and bootstrap
    interval over test subsets."""
    return lds_over_seeds(
        values, targets.masks, targets.values(behavior), n_bootstrap=1000
    ).to_dict()


def one_repeat(args, r: int) -> dict:
    t0 = time.perf_counter()
    cfg = config(args, r)
    out: dict = {"repeat": r, "results": [], "fidelity": [], "cost": {}}
    with Run(cfg, args.out / f"r{r}", progress=False) as run:
        plan = run.jobs()
        if args.baselines_only:
            return _baselines_only(args, run, plan, out, t0)
        run.execute(plan.specs(), "sft")
        p = plan.prepared
        n = p.n_players
        masks = held_out_masks(n, 0.5, args.test_subsets, cfg.attribution.seed)
        targets = retrain_targets(run, p, masks, args.seeds)
        test_set = {mask_to_str(m) for m in targets.masks}
        behaviors = sorted(run.reference_records(plan)["full"].behaviors)
        out["test_subsets"] = len(targets.masks)
        out["ceilings"] = {b: ceilings(targets, b) for b in behaviors}
        refs = run.reference_records(plan)
        c_retrain = targets.seconds_per_job()
        fit = run.store.records([s.key for s in plan.specs() if s.kind == "fit"])
        c_sft = float(np.mean([x.t_total for x in fit]))
        out["cost"] = {
            "retrain_seconds_per_job": c_retrain,
            "sft_seconds_per_job": c_sft,
            "sft_prepare_seconds": p.prepare_cost,
        }
        # sFT estimators at each budget (prefixes of each sampler's stream)
        for est in cfg.attribution.estimators:
            grid = [len(plan.fit[est.name])] if est.name == "loo" else args.grid
            for m in grid:
                if m > len(plan.fit[est.name]):
                    continue
                row = {"method": "sft", "estimator": est.name, "M": m}
                try:
                    table = run.table(plan, est.name, test_set, m)
                    attrs = fit_table(est, table)
                except DiffattrError as e:
                    out["results"].append({**row, "error": str(e)})
                    continue
                for a in attrs:
                    res = {**row, "behavior": a.behavior, **score(a.values, targets, a.behavior)}
                    res["identified"] = a.settings.get("identified", True)
                    out["results"].append(res)
                if est.name == "shapley" and refs["method"] is not None:
                    # v1 = the method's own all-players model instead of theta*
                    table.v1 = np.array([refs["method"].behaviors[b] for b in table.behaviors])
                    for a in fit_table(est, table):
                        out["results"].append(
                            {
                                **row,
                                "estimator": "shapley[v1=method]",
                                "behavior": a.behavior,
                                **score(a.values, targets, a.behavior),
                            }
                        )
        if args.retrain_max > 0:
            _retrain_shapley(args, run, p, targets, test_set, out, c_sft, c_retrain)
        # retrain-LOO (the paper's best baseline)
        loo = ESTIMATORS.parse("loo")
        lplan = run.jobs("retrain", [loo])
        run.execute(lplan.specs(), "retrain-loo")
        for a in run.estimate(lplan, exclude_masks=test_set, estimators=[loo]).attributions:
            out["results"].append(
                {
                    "method": "retrain",
                    "estimator": "loo",
                    "M": n,
                    "behavior": a.behavior,
                    **score(a.values, targets, a.behavior),
                }
            )
        if args.ft_subsets > 0:
            _ft_shapley(args, run, test_set, targets, out, n)
        # baselines on the full model
        if not args.no_baselines:
            _baselines(run, targets, out)
        # fidelity of sFT and ft to retraining on the test subsets
        for method in ("sft", "ft"):
            fid, _ = method_fidelity(run, run.prepare(method), targets)
            out["fidelity"] += [
                {
                    "method": f.method,
                    "behavior": f.behavior,
                    "pearson": f.pearson,
                    "spearman": f.spearman,
                    "mae": f.mae,
                    "n": f.n,
                }
                for f in fid
            ]
        out["behaviors"] = behaviors
    out["seconds"] = time.perf_counter() - t0
    return out


def _baselines_only(args, run, plan, out: dict, t0: float) -> dict:
    """The full model, the retrained ground truth and the named baselines only (rows added
    to a table whose other rows came from an earlier call: every seed is the repeat's, so
    the full model and the retrained subsets are the same models; ``pixel-similarity``
    re-scored beside them shows whether the ground truth reproduced)."""
    run.execute(list(plan.references.values()), "references")
    p = plan.prepared
    masks = held_out_masks(p.n_players, 0.5, args.test_subsets, run.cfg.attribution.seed)
    targets = retrain_targets(run, p, masks, args.seeds)
    behaviors = sorted(run.reference_records(plan)["full"].behaviors)
    out["test_subsets"] = len(targets.masks)
    out["ceilings"] = {b: ceilings(targets, b) for b in behaviors}
    out["cost"] = {"retrain_seconds_per_job": targets.seconds_per_job()}
    out["targets"] = {
        "masks": targets.masks.astype(int).tolist(),
        **{b: targets.values(b).tolist() for b in behaviors},
    }
    wanted = [b for b in BASELINES if _label(b) in args.baselines_only]
    _baselines(run, targets, out, wanted)
    out["behaviors"] = behaviors
    out["seconds"] = time.perf_counter() - t0
    return out


def _label(b: dict) -> str:
    """A baseline's row label: its name and the settings that tell its variants apart."""
    return b["name"] + "".join(f"[{k}={b[k]}]" for k in ("chunk_size", "aggregation") if k in b)


def _retrain_shapley(args, run, p, targets, test_set, out, c_sft, c_retrain) -> None:
    """Retrain-Shapley at its smallest identified budget and at sFT's equal compute."""
    n = p.n_players
    shapley = ESTIMATORS.parse({"name": "shapley", "subsets": args.retrain_max})
    rplan = run.jobs("retrain", [shapley])
    run.execute([s for s in rplan.specs() if s.kind == "fit"], "retrain-shapley")
    # (2(n - 1) rows are necessary, not sufficient: a draw with a repeated pair is
    # rank-deficient; the first prefix that identifies the values is reported)
    smallest = _first_identified(run, rplan, shapley, test_set, 2 * (n - 1))
    out["retrain_shapley_smallest_identified_M"] = smallest
    equal = [_equal(m, p.prepare_cost, c_sft, c_retrain) for m in args.grid]
    for m in sorted({smallest or 2 * (n - 1), *equal}):
        if m < 2 or m > len(rplan.fit["shapley"]):
            continue
        row = {"method": "retrain", "estimator": "shapley", "M": m, "seconds": m * c_retrain}
        _fit_rows(run, rplan, shapley, test_set, m, targets, row, out)


def _ft_shapley(args, run, test_set, targets, out, n: int) -> None:
    """ft-Shapley (the unpruned fine-tune) at its smallest identified M and at ft_subsets."""
    ft_shapley = ESTIMATORS.parse({"name": "shapley", "subsets": args.ft_subsets})
    fplan = run.jobs("ft", [ft_shapley])
    run.execute(fplan.specs(), "ft")
    smallest = _first_identified(run, fplan, ft_shapley, test_set, 2 * (n - 1))
    for m in sorted({smallest or args.ft_subsets, args.ft_subsets}):
        row = {"method": "ft", "estimator": "shapley", "M": m}
        _fit_rows(run, fplan, ft_shapley, test_set, m, targets, row, out)


def _fit_rows(run, plan, est, test_set, m: int, targets, row: dict, out: dict) -> None:
    """Fit ``est`` on the first ``m`` rows of its table and append one LDS row per behavior
    (or the refusal)."""
    try:
        attrs = fit_table(est, run.table(plan, est.name, test_set, m))
    except DiffattrError as e:
        out["results"].append({**row, "error": str(e)})
        return
    for a in attrs:
        out["results"].append(
            {**row, "behavior": a.behavior, **score(a.values, targets, a.behavior)}
        )


def _baselines(run, targets, out: dict, baselines: list[dict] | None = None) -> None:
    """Every gradient / similarity / heuristic baseline on the full model (or those given)."""
    for b in BASELINES if baselines is None else baselines:
        settings = BASELINE_SETTINGS.parse(b)
        bplan = run.jobs(estimators=[settings])
        errors: list[str] = []
        t = time.perf_counter()
        est = run.estimate(bplan, estimators=[settings], errors=errors)
        label = _label(b)
        if errors:
            out["results"].append({"method": "baseline", "estimator": label, "error": errors})
        for a in est.attributions:
            out["results"].append(
                {
                    "method": "baseline",
                    "estimator": label,
                    "behavior": a.behavior,
                    "seconds": time.perf_counter() - t,
                    **score(a.values, targets, a.behavior),
                }
            )


def ceilings(targets, behavior: str) -> dict:
    """What the retrained ground truth itself allows: the Spearman (x100) between two
    retraining seeds of the same subsets (retraining noise), and the leave-one-out LDS of
    the best additive model fitted to the retrained subsets themselves (how additive the
    behavior is over these subsets)."""
    from scipy.stats import spearmanr

    y = targets.values(behavior)  # (seeds, B)
    x = targets.masks.astype(float)
    seeds = [
        100 * spearmanr(y[i], y[j]).statistic for i in range(len(y)) for j in range(i + 1, len(y))
    ]
    mean = y.mean(axis=0)
    pred = np.empty(len(mean))
    for b in range(len(mean)):
        keep = np.arange(len(mean)) != b
        design = np.column_stack([x[keep], np.ones(keep.sum())])
        coef, *_ = np.linalg.lstsq(design, mean[keep], rcond=None)
        pred[b] = np.append(x[b], 1.0) @ coef
    return {
        "seed_to_seed_spearman": float(np.mean(seeds)) if seeds else float("nan"),
        "additive_fit_loo_lds": float(100 * spearmanr(pred, mean).statistic),
    }


def _first_identified(run, plan, est, test_set, lo: int) -> int | None:
    """The smallest prefix M >= lo (even, paired rows) whose fit is identified."""
    for m in range(lo, len(plan.fit[est.name]) + 1, 2):
        try:
            fit_table(est, run.table(plan, est.name, test_set, m))
            return m
        except DiffattrError:
            continue
    return None


def _equal(m: int, prep: float, c_sft: float, c_retrain: float) -> int:
    """Retrained coalitions affordable at the compute of m sFT coalitions (+ preparation)."""
    return int(math.floor((prep + m * c_sft) / c_retrain))


def _budget_label(rep: dict, r: dict, grid: list[int]) -> object:
    """Retrain-Shapley's M depends on each repeat's measured costs: label it by what it
    stands for (the smallest identified budget, or sFT's compute at M = m) so repeats pool."""
    if r["method"] != "retrain" or r["estimator"] != "shapley":
        return r.get("M")
    c = rep["cost"]
    labels = []
    if r["M"] == rep.get("retrain_shapley_smallest_identified_M"):
        labels.append("smallest identified")
    for m in grid:
        eq = _equal(
            m, c["sft_prepare_seconds"], c["sft_seconds_per_job"], c["retrain_seconds_per_job"]
        )
        if r["M"] == eq:
            labels.append(f"= sFT M {m}")
    return " / ".join(labels) or r["M"]


def summarise(repeats: list[dict], grid: list[int] | None = None) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    budgets: dict[tuple, list[int]] = {}
    for rep in repeats:
        for r in rep["results"]:
            if "lds" not in r:
                continue
            label = _budget_label(rep, r, grid or [])
            key = (r["method"], r["estimator"], label, r["behavior"])
            groups.setdefault(key, []).append(r["lds"])
            budgets.setdefault(key, []).append(r.get("M"))
    out = []
    for (method, est, m, beh), v in sorted(groups.items(), key=lambda kv: str(kv[0])):
        a = np.array(v, dtype=float)
        out.append(
            {
                "method": method,
                "estimator": est,
                "M": m,
                "behavior": beh,
                "M_per_repeat": budgets[(method, est, m, beh)],
                "repeats": len(a),
                "lds_mean": float(np.nanmean(a)),
                "lds_sd": float(np.nanstd(a, ddof=1)) if len(a) > 1 else float("nan"),
                "per_repeat": a.tolist(),
            }
        )
    return out


def add_config_args(ap: argparse.ArgumentParser) -> None:
    """The arguments ``config`` reads: a repeat's run directory is defined by them (other
    scripts that reopen a repeat, e.g. counterfactual_table.py, take the same ones)."""
    ap.add_argument("--grid", type=int, nargs="+", default=[32, 64, 100, 140])
    ap.add_argument("--other-max", type=int, default=100)
    ap.add_argument("--banzhaf-max", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--train-batch-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--finetune-steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--data",
        choices=["digits", "fashion-mnist"],
        default="digits",
        help="sklearn's 8x8 digits, or Fashion-MNIST at 16 px (Debian's package)",
    )
    ap.add_argument(
        "--estimators",
        nargs="+",
        choices=SFT_ESTIMATORS,
        default=SFT_ESTIMATORS,
        help="the sFT estimators to fit (default: all)",
    )
    ap.add_argument(
        "--per-class",
        type=int,
        default=None,
        help="images per class contributor (default: all of digits, 200 of Fashion-MNIST)",
    )


def _repeats(out: Path) -> list[dict]:
    """Every repeat's results under ``out`` (rR.json; not the rR-baselines.json additions)."""
    files = [f for f in sorted(out.glob("r*.json")) if not f.stem.endswith("-baselines")]
    return [json.loads(f.read_text()) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-subsets", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    add_config_args(ap)
    ap.add_argument(
        "--retrain-max", type=int, default=24, help="retrained Shapley coalitions (0: skip)"
    )
    ap.add_argument("--ft-subsets", type=int, default=100, help="ft-Shapley coalitions (0: skip)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument(
        "--baselines-only",
        nargs="+",
        default=None,
        choices=[_label(b) for b in BASELINES],
        metavar="BASELINE",
        help="only the full model, the retrained ground truth and these baselines (rows "
        "added to an earlier call's table; the repeat's seeds make the same models), written "
        "to OUT/rR-baselines.json",
    )
    ap.add_argument(
        "--only",
        type=int,
        nargs="+",
        default=None,
        help="run only these repeat indices (e.g. one per process); summarises every r*.json",
    )
    ap.add_argument(
        "--summarise", action="store_true", help="only summarise the r*.json files under --out"
    )
    args = ap.parse_args()
    if args.summarise:
        reps = _repeats(args.out)
        print(json.dumps({"summary": summarise(reps, args.grid), "repeats": reps}, default=float))
        return
    for r in args.only if args.only is not None else range(args.repeats):
        rep = one_repeat(args, r)
        name = f"r{r}-baselines.json" if args.baselines_only else f"r{r}.json"
        (args.out / name).write_text(json.dumps(rep, indent=1, default=float))
        if args.baselines_only:
            print(json.dumps(rep, indent=1, default=float))
            continue
    if args.baselines_only:
        return
    reps = _repeats(args.out)
    print(
        json.dumps(
            {"summary": summarise(reps, args.grid), "repeats": reps}, indent=1, default=float
        )
    )


if __name__ == "__main__":
    main()
