"""Per-image attribution of a local behavior, resumable; raw results kept as they accrue.

Players are single training images (digits, ``--per-class`` per class). Each generated image
i has its own behavior -- ``--behavior`` (ssim, nrmse, mse or denoising-loss) of a model's
image i against the full model's image i -- and its own attribution (``[attribution] local =
"per-image"``, the first ``--local-images`` images). Scored as the paper's code scores local
behaviors: LDS of each image's attribution on held-out alpha = 0.5 subsets retrained from
scratch with ``--seeds`` seeds, averaged over the images (``diffattr.evaluate.lds``), with a
t-interval over seeds, a bootstrap interval over test subsets and bootstrap intervals of the
paired differences between methods (the same resamples). Methods: datamodels fitted on sFT
jobs and on models retrained from scratch at equal compute, and the baselines (TRAK,
D-TRAK, Journey-TRAK, DAS, EK-FAC influence, gradient / pixel / feature similarity).

Everything is resumable: models live in the run store under ``--out`` (a killed run skips
every finished job), baseline features in its cache, and the results are appended to
``--data-out`` as they are computed -- ``agreement.json`` (the retrained behavior's
seed-to-seed agreement, measured before any fit: it caps every method), ``targets.json``
(every test subset's per-image behavior per seed), ``results.jsonl`` (one line per fit,
with its per-image predictions, skipped when already there) and ``paired.json``. The same
table is then made for the behavior's **mean over the generated images**, a global behavior
(one attribution per method, fitted with ``[attribution] local = "mean"`` on the same jobs):
``results-mean.jsonl`` and ``paired-mean.json``; ``agreement.json`` has the mean's
seed-to-seed agreement too. The protocol of issue 28 (64 test subsets x 3 seeds)::

    OMP_NUM_THREADS=1 python benchmarks/per_image_local.py --out runs/bench-local50 \\
        --data-out benchmarks/data/per_image_local/protocol-50 --behavior denoising-loss \\
        --measure ssim nrmse mse denoising-loss --per-class 5 --samples 64 --local-images 32 \\
        --sft-subsets 512 --test-subsets 64 --seeds 3 --train-steps 1000 --k 100 --workers 2

The pilot that picks the behavior first (issue 28: seed-to-seed agreement >= 0.8), on a
prefix of the same test subsets and seeds, so the protocol reuses its retrained models (the
same ``--measure`` list in both calls: the job keys depend on the behaviors); on 200
players (``--per-class 20``) SSIM, NRMSE and MSE agreed at 0.41-0.44, on 50 the denoising
loss reached 0.93 (BENCHMARKS.md, "Per-image attribution of a local behavior: the
pilot")::

    OMP_NUM_THREADS=1 python benchmarks/per_image_local.py --out runs/bench-local50 \\
        --data-out benchmarks/data/per_image_local/pilot-50 --behavior ssim \\
        --measure ssim nrmse mse denoising-loss --per-class 5 --samples 64 \\
        --local-images 32 --test-subsets 16 --seeds 2 --agreement-only --workers 2

``--table`` prints the markdown tables (each method's LDS with its intervals and its
paired difference from the best method) from ``--data-out`` alone.

A tiny check of the script (minutes): ``--per-class 2 --samples 8 --local-images 4
--sft-subsets 16 --test-subsets 4 --seeds 2 --train-steps 40 --k 5 --finetune-steps 10
--baselines pixel-similarity das``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from diffattr.baselines.settings import BASELINES as BASELINE_SETTINGS
from diffattr.behaviors.keys import split_image_key
from diffattr.config import build_config
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS
from diffattr.evaluate.common import held_out_masks, retrain_targets
from diffattr.evaluate.lds import _mean_spearman, lds_per_image
from diffattr.fileio import atomic_write_text
from diffattr.runner.run import Run, fit_table
from diffattr.store import mask_to_str

BASELINES = {
    "trak": {"name": "trak"},
    "d-trak": {"name": "d-trak"},
    "journey-trak": {"name": "journey-trak"},
    "das": {"name": "das"},
    "ekfac-influence": {"name": "ekfac-influence"},
    "gradient-similarity": {"name": "gradient-similarity"},
    "pixel-similarity": {"name": "pixel-similarity", "aggregation": "mean"},
    "feature-similarity": {"name": "feature-similarity", "aggregation": "mean"},
}


#: The local behaviors (one value per generated image, against the full model's image).
LOCAL = ["ssim", "nrmse", "mse", "denoising-loss"]


def config(args, local: str = "per-image"):
    measured = args.measure or [args.behavior]
    return build_config(
        None,
        "default",
        {
            "data": {"name": "digits", "limit_per_class": args.per_class, "players": "sample"},
            "family.seed": args.seed,
            "train.seed": args.seed,
            "train.steps": args.train_steps,
            "train.batch_size": 64,
            "train.checkpoint_every": args.train_steps,
            "sample.seed": args.seed,
            "sample.num_samples": args.samples,
            "sample.batch_size": args.samples,
            "sample.ddim_steps": args.ddim_steps,
            "behaviors.measure": [{"name": b} for b in measured],
            "attribution.seed": args.seed,
            "attribution.subsets": args.sft_subsets,
            "attribution.local": local,
            "attribution.local_images": args.local_images,
            "attribution.estimators": [{"name": "datamodel", "subsets": args.sft_subsets}],
            "method": {"name": "sft", "finetune_steps": args.finetune_steps, "steps": args.k},
            "executor": {"name": "process", "workers": args.workers},
        },
    )


class Results:
    """``results.jsonl`` under the data folder: one line per fit, appended when computed;
    lines already there are not computed again."""

    def __init__(self, folder: Path, name: str = "results.jsonl") -> None:
        self.path = folder / name
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["id"]] = row

    def __contains__(self, rid: str) -> bool:
        return rid in self.rows

    def add(self, row: dict) -> None:
        self.rows[row["id"]] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=float) + "\n")


def per_image_values(attrs: list, base: str) -> tuple[list[str], np.ndarray]:
    """The attributions of ``base`` per generated image: their keys and values (I, n)."""
    chosen = sorted(
        (a for a in attrs if split_image_key(a.behavior)[0] == base),
        key=lambda a: split_image_key(a.behavior)[1],
    )
    if not chosen:
        raise DiffattrError(f"no per-image attribution of {base}")
    return [a.behavior for a in chosen], np.array([a.values for a in chosen], dtype=float)


def mean_values(attrs: list, base: str) -> np.ndarray:
    """The attribution of ``base`` itself (its mean over the generated images), as (1, n)."""
    chosen = [a for a in attrs if a.behavior == base]
    if not chosen:
        raise DiffattrError(f"no attribution of {base} (the mean over generated images)")
    return np.array([chosen[0].values], dtype=float)


def scored(values: np.ndarray, masks: np.ndarray, t: np.ndarray) -> dict:
    score, per_image = lds_per_image(values, masks, t)
    pred = masks.astype(float) @ values.T  # (B, I)
    return {**score.to_dict(), "per_image_lds": per_image, "predictions": pred.T.tolist()}


def agreement(t: np.ndarray) -> dict:
    """Seed-to-seed agreement of the retrained behavior: for each pair of seeds, the mean
    over images of 100 x Spearman between the two seeds' values over the test subsets."""
    pairs = [_mean_spearman(t[a], t[b]) for a in range(len(t)) for b in range(a + 1, len(t))]
    mean = float(np.mean(pairs)) if pairs else float("nan")
    return {"seed_to_seed_spearman": mean, "pairs": pairs, "at_least_80": bool(mean >= 80)}


def paired(results: Results, t: np.ndarray, n_bootstrap: int = 1000, seed: int = 0) -> list:
    """LDS differences of every pair of methods, bootstrapped over test subsets with the same
    resamples for both; 'resolved' when the 95 % interval excludes 0."""
    rows = [r for r in results.rows.values() if "predictions" in r]
    preds = {r["id"]: np.array(r["predictions"]) for r in rows}
    b = t.shape[2]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, b, b) for _ in range(n_bootstrap)]

    def lds_of(p: np.ndarray, idx: np.ndarray) -> float:
        return float(np.mean([_mean_spearman(p[:, idx], ts[:, idx]) for ts in t]))

    full = np.arange(b)
    point = {k: lds_of(v, full) for k, v in preds.items()}
    # each method's LDS on every resample, once (every pair reuses them)
    boot = {k: np.array([lds_of(v, idx) for idx in draws]) for k, v in preds.items()}
    out = []
    ids = sorted(preds)
    for i, a in enumerate(ids):
        for c in ids[i + 1 :]:
            d = boot[a] - boot[c]
            d = d[np.isfinite(d)]
            lo, hi = np.percentile(d, [2.5, 97.5]) if len(d) else (np.nan, np.nan)
            out.append(
                {
                    "a": a,
                    "b": c,
                    "difference": point[a] - point[c],
                    "bootstrap_95": [float(lo), float(hi)],
                    "resolved": bool(lo > 0 or hi < 0),
                }
            )
    return out


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x + 0.0:.{digits}f}"  # no -0.0


def render(folder: Path) -> str:
    """Markdown tables from the data folder alone (no store): each method's LDS with its
    intervals, and its paired difference from the method with the highest LDS -- for the
    per-image table and, when it exists, the mean's."""

    agree = json.loads((folder / "agreement.json").read_text())
    base = agree["fitted_behavior"]
    out = []
    for title, results_name, paired_name, key in (
        (f"{base}, one attribution per generated image", "results.jsonl", "paired.json", base),
        (
            f"{base}, mean over the generated images",
            "results-mean.jsonl",
            "paired-mean.json",
            f"{base} mean",
        ),
    ):
        if not (folder / results_name).exists():
            continue
        rows = list(Results(folder, results_name).rows.values())
        pairs = (
            json.loads((folder / paired_name).read_text())
            if (folder / paired_name).exists()
            else []
        )
        scored_rows = [r for r in rows if "lds" in r and np.isfinite(r["lds"])]
        best = max(scored_rows, key=lambda r: r["lds"])["id"] if scored_rows else None
        diff = {}
        for d in pairs:  # difference = LDS(a) - LDS(b); shown as LDS(row) - LDS(best)
            if best in (d["a"], d["b"]):
                other, sign = (d["b"], 1) if d["a"] == best else (d["a"], -1)
                lo, hi = (-sign * x for x in d["bootstrap_95"])
                diff[other] = (-sign * d["difference"], min(lo, hi), max(lo, hi), d["resolved"])
        agreement_value = agree.get(key, {}).get("seed_to_seed_spearman")
        out += [
            f"**{title}** ({agree['players']} players, {agree['test_subsets']} test subsets x "
            f"{agree['seeds']} seeds; retraining seed-to-seed agreement "
            f"{_fmt(agreement_value)}):",
            "",
            "| method | compute (s) | LDS (per seed) | t-interval over seeds | bootstrap 95 % "
            f"| minus {best} [paired 95 %] |",
            "|---|---|---|---|---|---|",
        ]
        order = {"sft": 0, "retrain": 1, "baseline": 2}
        for r in sorted(rows, key=lambda r: (order.get(r["method"], 3), r.get("M", 0), r["id"])):
            if "lds" not in r:
                out.append(f"| {r['id']} | | not fitted: {r.get('error')} | | | |")
                continue
            per_seed = ", ".join(_fmt(v, 0) for v in r["per_seed"])
            lo, hi = r["bootstrap_95_over_test_subsets"]
            seconds = r.get("compute_seconds") or r.get("seconds")
            if isinstance(seconds, dict):  # a baseline: featurize (first computed) + score
                seconds = seconds.get("featurize", 0.0) + seconds.get("score", 0.0)
            if r["id"] == best:
                d = "—"
            elif r["id"] in diff:
                v, a, b, res = diff[r["id"]]
                d = f"{_fmt(v)} [{_fmt(a)}, {_fmt(b)}]" + (" resolved" if res else "")
            else:
                d = ""
            out.append(
                f"| {r['id']} | {_fmt(seconds, 0)} | {_fmt(r['lds'])} ({per_seed}) | "
                f"± {_fmt(r['ci95_over_seeds'])} | [{_fmt(lo)}, {_fmt(hi)}] | {d} |"
            )
        out.append("")
    return "\n".join(out)


def fit_methods(run, args, cost: dict, masks: np.ndarray, t: np.ndarray, results, extract):
    """Every method's attribution fitted and scored against ``t`` (seeds, I, B) on the
    held-out ``masks``, one line of ``results`` each (skipped when already there):
    datamodels on sFT jobs at several budgets, on models retrained from scratch at the same
    compute, and the baselines on the full model. ``extract(attributions)`` picks the (I, n)
    values the table is about (one row per generated image, or the mean's single row)."""

    plan = run.jobs()
    p = plan.prepared
    test_set = {mask_to_str(m) for m in masks}
    c_sft, c_retrain = cost["sft_seconds_per_job"], cost["retrain_seconds_per_job"]
    cfg = run.cfg
    # 2. datamodels on sFT jobs at several budgets
    est = cfg.attribution.estimators[0]
    grid = args.grid or [args.sft_subsets // 4, args.sft_subsets // 2, args.sft_subsets]
    budgets = {m: p.prepare_cost + m * c_sft for m in grid}
    for m in grid:
        rid = f"sft-datamodel-M{m}"
        if rid not in results:
            values = extract(fit_table(est, run.table(plan, "datamodel", test_set, m)))
            results.add(
                {
                    "id": rid,
                    "method": "sft",
                    "estimator": "datamodel",
                    "M": m,
                    "seconds": budgets[m],
                    **scored(values, masks, t),
                }
            )
    # 3. datamodels on models retrained from scratch, at the compute of each sFT budget
    m_max = int(math.floor(max(budgets.values()) / c_retrain))
    rest = ESTIMATORS.parse({"name": "datamodel", "subsets": max(m_max, 3)})
    rplan = run.jobs("retrain", [rest])
    run.execute([s for s in rplan.specs() if s.kind == "fit"], "retrain-datamodel")
    for m_sft, budget in budgets.items():
        m = int(math.floor(budget / c_retrain))
        rid = f"retrain-datamodel-M{m}"
        if rid in results:
            continue
        row = {
            "id": rid,
            "method": "retrain",
            "estimator": "datamodel",
            "M": m,
            "seconds": budget,
            "equal_compute_to_sft_M": m_sft,
        }
        try:
            attrs = fit_table(rest, run.table(rplan, "datamodel", test_set, m))
            values = extract(attrs)
            results.add({**row, **scored(values, masks, t)})
        except DiffattrError as e:
            results.add({**row, "error": str(e)})
    # 4. the baselines on the full model (features cached in the run's cache)
    for name in args.baselines:
        rid = f"baseline-{name}"
        if rid in results:
            continue
        s = BASELINE_SETTINGS.parse(BASELINES[name])
        bplan = run.jobs(estimators=[s])
        errors: list[str] = []
        t1 = time.perf_counter()
        run.baseline_costs.clear()
        res = run.estimate(bplan, estimators=[s], errors=errors)
        row = {"id": rid, "method": "baseline", "estimator": name}
        try:
            values = extract(res.attributions)
        except DiffattrError as e:
            results.add({**row, "error": errors or str(e)})
            continue
        # featurize (from the cache record on a hit) / score / wall of this baseline
        costs = [c.get("seconds") for c in run.baseline_costs.values()]
        compute = costs[0] if costs else None
        results.add(
            {
                **row,
                "seconds": time.perf_counter() - t1,
                "compute_seconds": compute,
                **scored(values, masks, t),
            }
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="run directory (the store); not for --table")
    ap.add_argument("--data-out", type=Path, default=Path("benchmarks/data/per_image_local"))
    ap.add_argument("--behavior", default="ssim", choices=LOCAL)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--local-images", type=int, default=32)
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--sft-subsets", type=int, default=512)
    ap.add_argument("--grid", type=int, nargs="+", default=None)
    ap.add_argument("--test-subsets", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--finetune-steps", type=int, default=500)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES))
    ap.add_argument(
        "--measure",
        nargs="+",
        default=None,
        choices=LOCAL,
        help="the local behaviors every job measures, in this order (default: --behavior "
        "alone); the agreement of each is reported, fits use --behavior. The job keys "
        "depend on this list and its order, so a pilot and the protocol that reuses its "
        "models must give the same one",
    )
    ap.add_argument(
        "--agreement-only",
        action="store_true",
        help="stop after the ground truth's seed-to-seed agreement (the pilot that picks "
        "the behavior, players and sample count; a later call with more test subsets and "
        "seeds reuses its models: both are prefixes of one stream)",
    )
    ap.add_argument(
        "--table",
        action="store_true",
        help="print the markdown tables from --data-out and stop (no store, no training)",
    )
    args = ap.parse_args()
    if args.table:
        print(render(args.data_out))
        return
    if args.out is None:
        ap.error("--out (the run directory) is required")
    if args.measure and args.behavior not in args.measure:
        ap.error(f"--behavior {args.behavior} is not in --measure {args.measure}")
    t0 = time.perf_counter()
    args.data_out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    atomic_write_text(args.data_out / "settings.json", json.dumps(settings, indent=1))
    results = Results(args.data_out)
    cfg = config(args)
    with Run(cfg, args.out, progress=False) as run:
        plan = run.jobs()
        p = plan.prepared
        n = p.n_players
        # 1. the retrained ground truth first: its seed-to-seed agreement caps every method
        masks = held_out_masks(n, 0.5, args.test_subsets, args.seed)
        targets = retrain_targets(run, p, masks, args.seeds)
        run.execute(list(plan.references.values()), "references")  # the full model's images
        full = run.reference_records(plan)["full"]
        columns = run.per_image_columns(full)
        by_base: dict[str, list[str]] = {}
        for k in columns:
            by_base.setdefault(split_image_key(k)[0], []).append(k)
        agree, values_of = {}, {}
        for b, ks in sorted(by_base.items()):
            values_of[b] = np.stack([targets.values(k) for k in ks], axis=1)  # (seeds, I, B)
            agree[b] = agreement(values_of[b])
            # the behavior's mean over all generated images (a global behavior)
            agree[f"{b} mean"] = agreement(targets.values(b)[:, None, :])
        (base,) = [b for b in by_base if b.split("[")[0] == args.behavior]
        keys, t = by_base[base], values_of[base]
        atomic_write_text(
            args.data_out / "targets.json",
            json.dumps(
                {
                    "behavior": base,
                    "masks": targets.masks.astype(int).tolist(),
                    "values": t.tolist(),
                }
            ),
        )
        agree_text = json.dumps(
            {
                "fitted_behavior": base,
                "test_subsets": len(targets.masks),
                "seeds": args.seeds,
                "players": n,
                "samples": args.samples,
                **agree,
            },
            indent=1,
        )
        atomic_write_text(args.data_out / "agreement.json", agree_text)
        if args.agreement_only:
            print(agree_text)
            return
        agree, agree_mean = agree[base], agree[f"{base} mean"]["seed_to_seed_spearman"]
        run.execute(plan.specs(), "sft")  # the sFT coalitions
        fit = run.store.records([s.key for s in plan.specs() if s.kind == "fit"])
        # medians: a job's clock includes any time its process was stopped (a benchmark
        # paused for another), which a mean would charge to one method
        retrain_clocks = [r.t_total for row in targets.records for r in row]
        sft_clocks = [x.t_total for x in fit]
        cost = {
            "retrain_seconds_per_job": float(np.median(retrain_clocks)),
            "sft_seconds_per_job": float(np.median(sft_clocks)),
            "sft_prepare_seconds": p.prepare_cost,
            "rule": "median job clock (train + sample + measure) of each kind",
            "retrain_mean_seconds": float(np.mean(retrain_clocks)),
            "sft_mean_seconds": float(np.mean(sft_clocks)),
        }
        atomic_write_text(args.data_out / "cost.json", json.dumps(cost, indent=1))
        masks_ok = targets.masks
        fit_methods(run, args, cost, masks_ok, t, results, lambda a: per_image_values(a, base)[1])
        # paired differences (the same bootstrap resamples for both methods)
        atomic_write_text(args.data_out / "paired.json", json.dumps(paired(results, t), indent=1))
        t_mean = targets.values(base)[:, None, :]  # (seeds, 1, B): the mean over all images
    # the same table for the behavior's mean over the generated images (a global behavior:
    # one attribution per method, the column every job already records)
    results_mean = Results(args.data_out, "results-mean.jsonl")
    with Run(config(args, local="mean"), args.out, progress=False) as run:
        fits = [s for s in run.jobs().specs() if s.kind == "fit"]
        done = {r.key for r in run.store.records([s.key for s in fits]) if r.status == "done"}
        if any(s.key not in done for s in fits):
            raise DiffattrError(
                f"{len(fits) - len(done)} of the mean's {len(fits)} sFT jobs are not in the "
                "store: the local = 'mean' plan should reuse the per-image run's jobs"
            )
        fit_methods(run, args, cost, masks_ok, t_mean, results_mean, lambda a: mean_values(a, base))
    atomic_write_text(
        args.data_out / "paired-mean.json", json.dumps(paired(results_mean, t_mean), indent=1)
    )
    summary = {
        "seconds": time.perf_counter() - t0,
        "players": n,
        "images": len(keys),
        "test_subsets": len(masks_ok),
        "agreement": agree["seed_to_seed_spearman"],
        "lds": {r["id"]: r.get("lds", r.get("error")) for r in results.rows.values()},
        "agreement_mean": agree_mean,
        "lds_mean": {r["id"]: r.get("lds", r.get("error")) for r in results_mean.rows.values()},
    }
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
