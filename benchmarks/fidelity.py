"""Fidelity sweep: how closely sFT tracks retraining, as the method's settings vary.

Reuses (or extends) a ``diffattr run`` directory: its held-out subsets are retrained from
scratch with the run's own recipe (``--test-subsets`` x ``--seeds`` jobs, in the run's
store, so ``diffattr lds`` shares them and a stopped call resumes), then the run's method
and each ``--variant`` (method settings changed, e.g. ``ratio=0.5`` or
``steps=50,ratio=0.5``) run on the same subsets; a change named ``sample.X`` changes the
variant's sampling budget (e.g. ``sample.ddim_steps=10``: its coalition models sample in 10
DDIM steps while the retrained models keep the run's). ``--base CHANGES`` makes the run's
method with those changes the reference that variants are paired against (default: the run's
own). With ``--job-seeds N`` every variant runs with fine-tune seeds 0 .. N-1 (the run's
seed + 1000 s, the frontier's convention), and each variant's row gives the mean, min and
max over seeds of the Pearson and Spearman correlation with the retrained behaviors (mean
over retraining seeds), the difference from the reference (``--base``) paired by seed (same
subsets, data order, timesteps and sampling noise), and its seconds per job. With
``--seeds`` 2 or more, each variant also gets its Pearson with one retraining seed at a time
(``pearson_one_retrain_seed``) and the retrain block retraining's own seed-to-seed agreement
(``seed_to_seed``): the two compare like with like.
``--alpha 0.25,0.5,0.75`` splits the held-out subsets evenly over several coalition sizes
(small and large coalitions; each variant then also gets its Pearson within each size,
``pearson_within_size``: can it rank coalitions of one size; the retrain block's
``seed_to_seed_within_size`` is retraining's own at each size); ``--subset-seed S`` draws
another set of held-out subsets (0: the set earlier results used), for confirming a setting
chosen on one set on subsets it was not chosen on, and ``--exclude N`` leaves out the first N
subsets of each size that the default draw gives (those earlier sweeps chose settings on).
Prints JSON; ``--json PATH`` also writes it (after every variant, so the rows accrue).

    python benchmarks/fidelity.py runs/bench-lds --variant steps=50 --variant steps=200 \\
        --variant ratio=0.5

The default preset's recipe against pruning 0.5 (BENCHMARKS.md, issue 26)::

    diffattr run --out runs/default-fid --executor process --workers 2
    OMP_NUM_THREADS=1 nice python benchmarks/fidelity.py runs/default-fid --variant ratio=0.5 \\
        --test-subsets 24 --seeds 1 --job-seeds 3 --json benchmarks/data/default_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from diffattr.config import parse_assignment
from diffattr.errors import DiffattrError
from diffattr.evaluate.common import held_out_masks, open_run, retrain_targets
from diffattr.evaluate.fidelity import fidelity, per_seed_pearson, seed_agreement

#: A fine-tune seed s > 0 runs as the run's attribution seed + SEED_STRIDE * s.
SEED_STRIDE = 1000


def parse_variant(text: str) -> dict:
    """``steps=50,ratio=0.5`` -> {"steps": 50, "ratio": 0.5} (values read as ``--set`` reads
    them: TOML, else a string); a malformed part is a one-line error."""
    out = {}
    for part in filter(None, text.split(",")):
        try:
            key, value = parse_assignment(part)
        except DiffattrError as e:
            raise SystemExit(f"fidelity: {e}") from None
        out[key] = value
    return out


def split_changes(changes: dict) -> tuple[dict, dict]:
    """A variant's method changes and its sampling changes (keys ``sample.X``)."""
    method = {k: v for k, v in changes.items() if not k.startswith("sample.")}
    sample = {k.removeprefix("sample."): v for k, v in changes.items() if k.startswith("sample.")}
    return method, sample


def parse_alphas(text: str) -> list[float]:
    """``0.25,0.5`` -> [0.25, 0.5]; each a fraction strictly between 0 and 1, no repeats."""
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise SystemExit(f"fidelity: --alpha {text!r}: expected numbers like 0.25,0.5") from None
    if not alphas or any(not 0 < a < 1 for a in alphas) or len(set(alphas)) < len(alphas):
        raise SystemExit(f"fidelity: --alpha {text!r}: distinct fractions in (0, 1) expected")
    return alphas


def test_masks(n: int, alphas: list[float], count: int, seed: int, exclude: int = 0) -> np.ndarray:
    """``count`` held-out subsets split as evenly as possible over the sizes ``alphas``
    (the first sizes take the remainder), each size's drawn from ``seed``'s stream, leaving
    out the first ``exclude`` subsets of that size the default draw (seed 0) gives."""
    k = len(alphas)
    blocks = []
    for i, a in enumerate(alphas):
        want = count // k + (i < count % k)
        if want == 0:
            continue
        left_out = {m.tobytes() for m in held_out_masks(n, a, exclude, 0)} if exclude else set()
        drawn = held_out_masks(n, a, want + len(left_out), seed)
        kept = [m for m in drawn if m.tobytes() not in left_out][:want]
        blocks.append(np.array(kept, dtype=bool).reshape(-1, n))
    return np.concatenate(blocks, axis=0)


def within_size(approx: np.ndarray, exact: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
    """Pearson between ``approx`` and ``exact`` among subsets of each size (keyed by the
    number of players kept) with at least three subsets and spread on both sides."""
    out = {}
    for size in np.unique(sizes):
        sel = sizes == size
        if sel.sum() >= 3:
            r = fidelity(approx[sel], exact[sel])["pearson"]
            if np.isfinite(r):
                out[str(int(size))] = r
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def run_variant(run, settings, targets, job_seeds: int) -> dict:
    """The method with ``settings`` on the retrained subsets, fine-tune seeds 0 ..
    ``job_seeds`` - 1: per seed its fidelity and clock, and the spread over seeds."""
    p = run.prepare(settings)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    per_seed = []
    for s in range(job_seeds):
        seed = run.cfg.attribution.seed + SEED_STRIDE * s
        specs = [run.spec(p, m, settings, seed, "fidelity") for m in targets.masks]
        run.execute(specs, f"{settings.name} seed {s}")
        got = {r.key: r for r in run.store.records([x.key for x in specs])}
        done = [b for b, x in enumerate(specs) if x.key in got and got[x.key].status == "done"]
        row: dict = {"seed": s, "jobs": len(done), "behaviors": {}}
        per_seed.append(row)
        if len(done) < 3:
            continue
        recs = [got[specs[b].key] for b in done]
        row["seconds_per_job"] = float(np.mean([r.t_total for r in recs]))
        row["train_sample_measure"] = [
            float(np.mean([getattr(r, k) or 0.0 for r in recs]))
            for k in ("t_train", "t_sample", "t_measure")
        ]
        for beh in sorted(recs[0].behaviors):
            approx = np.array([r.behaviors[beh] for r in recs])
            per_retrain_seed = targets.values(beh)[:, done]
            f = fidelity(approx, per_retrain_seed.mean(axis=0))
            row["behaviors"][beh] = {k: f[k] for k in ("pearson", "spearman", "mae", "n")}
            row["behaviors"][beh]["pearson_one_retrain_seed"] = per_seed_pearson(
                approx, per_retrain_seed
            )
            sizes = targets.masks[done].sum(axis=1)
            if len(np.unique(sizes)) > 1:
                row["behaviors"][beh]["pearson_within_size"] = within_size(
                    approx, per_retrain_seed.mean(axis=0), sizes
                )
    summary: dict = {
        "settings": settings.to_dict(),
        "prepare_seconds": p.prepare_cost,
        "wall_seconds_this_call": time.perf_counter() - t,
        "load_before_after": [load0, os.getloadavg()[0]],
        "seeds": per_seed,
        "behaviors": {},
    }
    ok = [r for r in per_seed if r["behaviors"]]
    if ok:
        summary["seconds_per_job"] = float(np.mean([r["seconds_per_job"] for r in ok]))
        for beh in ok[0]["behaviors"]:
            summary["behaviors"][beh] = {
                "pearson": spread([r["behaviors"][beh]["pearson"] for r in ok]),
                "spearman": spread([r["behaviors"][beh]["spearman"] for r in ok]),
                "by_seed": {r["seed"]: r["behaviors"][beh]["pearson"] for r in ok},
            }
            one = [r["behaviors"][beh]["pearson_one_retrain_seed"] for r in ok]
            if None not in one:
                summary["behaviors"][beh]["pearson_one_retrain_seed"] = spread(one)
            within = [r["behaviors"][beh].get("pearson_within_size") or {} for r in ok]
            sizes = sorted(set().union(*within), key=int)
            if sizes:
                summary["behaviors"][beh]["pearson_within_size"] = {
                    k: spread([w[k] for w in within if k in w]) for k in sizes
                }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--variant", action="append", default=[], help="e.g. steps=50,ratio=0.5")
    ap.add_argument(
        "--base", default="", help="the reference's changes to the run's method (e.g. ratio=0.5)"
    )
    ap.add_argument("--test-subsets", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1, help="retraining seeds per subset")
    ap.add_argument("--job-seeds", type=int, default=1, help="fine-tune seeds per variant")
    ap.add_argument(
        "--alpha", default="0.5", help="fraction of players kept; several: 0.25,0.5,0.75"
    )
    ap.add_argument(
        "--subset-seed", type=int, default=0, help="held-out subsets' draw (0: earlier results')"
    )
    ap.add_argument(
        "--exclude", type=int, default=0, help="leave out the default draw's first N per size"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.job_seeds < 1 or args.seeds < 1:
        ap.error("--seeds and --job-seeds must be at least 1")
    if args.test_subsets < 3:
        ap.error("--test-subsets must be at least 3 (a correlation needs them)")
    if args.exclude < 0:
        ap.error("--exclude must be 0 or more")
    alphas = parse_alphas(args.alpha)
    # bad input fails before any job
    base_changes = parse_variant(args.base)
    variants = [{**base_changes, **parse_variant(v)} for v in args.variant]
    executor = {"executor": {"name": "process", "workers": args.workers}}
    payload: dict = {
        "command": "python benchmarks/fidelity.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "base": base_changes,
        "variants": [],
    }

    def emit() -> str:
        text = json.dumps(payload, indent=2)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        return text

    with open_run(args.run_dir, executor, progress=False) as run:
        base = run.cfg.method
        for changes in [base_changes] + variants:  # every variant valid before any job
            method_changes, sample_changes = split_changes(changes)
            try:
                type(base)(**{**base.model_dump(), **method_changes})
                type(run.cfg.sample)(**{**run.cfg.sample.model_dump(), **sample_changes})
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise SystemExit(f"fidelity: {changes}: {where}: {err['msg']}") from None
        p0 = run.prepare(base)
        try:
            masks = test_masks(
                p0.n_players, alphas, args.test_subsets, args.subset_seed, args.exclude
            )
        except DiffattrError as e:
            raise SystemExit(f"fidelity: {e}") from None
        t = time.perf_counter()
        targets = retrain_targets(run, p0, masks, args.seeds)
        payload["retrain"] = {
            "subsets": len(targets.masks),
            "alphas": alphas,
            "subset_seed": args.subset_seed,
            "excluded_per_size": args.exclude,
            "sizes": {
                str(int(k)): int(v)
                for k, v in zip(*np.unique(targets.masks.sum(axis=1), return_counts=True))
            },
            "seeds": args.seeds,
            "failed": targets.failed,
            "seconds_per_job": targets.seconds_per_job(),
            "wall_seconds_this_call": time.perf_counter() - t,
        }
        if targets.records and targets.records[0]:
            payload["retrain"]["seed_to_seed"] = {
                beh: seed_agreement(targets.values(beh))
                for beh in sorted(targets.records[0][0].behaviors)
            }
            sizes = targets.masks.sum(axis=1)
            if len(np.unique(sizes)) > 1:  # what a variant's pearson_within_size compares to
                payload["retrain"]["seed_to_seed_within_size"] = {
                    beh: {
                        str(int(k)): seed_agreement(targets.values(beh)[:, sizes == k])
                        for k in np.unique(sizes)
                    }
                    for beh in sorted(targets.records[0][0].behaviors)
                }
    base_scores: dict[str, dict[int, float]] = {}
    for changes in [base_changes] + variants:
        method_changes, sample_changes = split_changes(changes)
        overrides = {**executor, "sample": sample_changes} if sample_changes else executor
        # a run per variant: a run prepares each method name once
        with open_run(args.run_dir, overrides, progress=False) as run:
            settings = type(base)(**{**base.model_dump(), **method_changes})
            summary = run_variant(run, settings, targets, args.job_seeds)
        summary["changes"] = changes
        for beh, entry in summary["behaviors"].items():
            scores = entry.pop("by_seed")
            if changes is base_changes:
                base_scores[beh] = scores
            elif beh in base_scores:
                paired = [
                    v - base_scores[beh][s] for s, v in scores.items() if s in base_scores[beh]
                ]
                if paired:
                    entry["pearson_paired_minus_base"] = spread(paired)
        payload["variants"].append(summary)
        emit()
    payload["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    print(emit())


if __name__ == "__main__":
    main()
