"""Record a complete sFT game on digits, with retrained ground truth, as committed CSV.

Digits, the 10 classes as players, the LDS benchmark's recipe (``lds_repeats.py``'s config
at repeat 0: tiny UNet, 500 training steps at batch 64, 256 images x 25 DDIM steps, sFT =
magnitude pruning 0.3 + 300 all-data steps, k = 60 steps per coalition). It evaluates

* the sFT game on **every** coalition (2^10 - 2 jobs, plus the full, null and sFT
  all-players models): ``sft.csv``;
* models retrained from scratch on ``--test-subsets`` held-out alpha = 0.5 subsets x
  ``--seeds`` seeds (the LDS ground truth), and on small and large coalitions (every
  singleton and every leave-one-out set, and ``--pairs`` coalitions of 2 and of 8 players)
  x ``--fidelity-seeds`` seeds, where kernel rows live: ``retrain.csv``;
* ``meta.json``: players, behaviors, v0 / v1 / the sFT all-players value, costs, the
  config and this command.

Every stage is a set of jobs in one run directory's store (content-keyed), so the script
resumes where it stopped; it rewrites the CSVs after every chunk of jobs, so the rows
recorded so far can be committed while it runs. ``benchmarks/game.py`` loads the result.

    OMP_NUM_THREADS=1 nice python benchmarks/complete_game.py --out runs/bench-game \\
        --data-dir benchmarks/data/complete_game --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from diffattr.evaluate.common import TEST_SEED_OFFSET, held_out_masks
from diffattr.runner.run import Run
from diffattr.store import mask_to_str
from lds_repeats import add_config_args, config

RECIPE = {"train_steps": 500, "k": 60, "finetune_steps": 300, "samples": 256}


def all_masks(n: int, seed: int) -> list[str]:
    """Every coalition strictly between empty and full, in a seeded random order (so the
    rows recorded before the run ends are a uniform sample of the game)."""
    rows = [
        mask_to_str(np.array([(c >> i) & 1 for i in range(n)], bool)) for c in range(1, 2**n - 1)
    ]
    rng = np.random.default_rng(seed + 77)
    return [rows[i] for i in rng.permutation(len(rows))]


def small_large(n: int, pairs: int, seed: int) -> list[str]:
    """Every singleton and leave-one-out set, then ``pairs`` random 2- and 8-player sets
    (complements of each other's draws not implied)."""
    out = []
    for i in range(n):
        m = np.zeros(n, bool)
        m[i] = True
        out += [mask_to_str(m), mask_to_str(~m)]
    rng = np.random.default_rng(seed + TEST_SEED_OFFSET + 5)
    combos = list(combinations(range(n), 2))
    for keep in (True, False):  # 2 players kept, then 2 players removed
        for j in rng.choice(len(combos), size=min(pairs, len(combos)), replace=False):
            m = np.full(n, not keep)
            m[list(combos[j])] = keep
            out.append(mask_to_str(m))
    return list(dict.fromkeys(out))


def chunks(xs: list, size: int):
    for s in range(0, len(xs), size):
        yield xs[s : s + size]


class Recorder:
    """Writes the CSVs and meta.json from the store (atomic rewrite after every chunk)."""

    def __init__(self, run: Run, data_dir: Path, behaviors: list[str]) -> None:
        self.run, self.dir, self.behaviors = run, data_dir, behaviors
        self.dir.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, header: list[str], rows: list[list]) -> None:
        tmp = self.dir / f".{name}.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        tmp.replace(self.dir / name)

    def sft(self, specs) -> int:
        recs = {r.key: r for r in self.run.store.records([s.key for s in specs], status="done")}
        rows = []
        for s in specs:
            r = recs.get(s.key)
            if r is None:
                continue
            rows.append(
                [s.mask, s.mask.count("1")]
                + [repr(float(r.behaviors[b])) for b in self.behaviors]
                + [round(r.t_train, 3), round(r.t_sample, 3), round(r.t_measure, 3)]
                + [round(r.t_total, 3)]
            )
        rows.sort(key=lambda x: (x[1], x[0]))
        head = ["mask", "size", *self.behaviors, "t_train", "t_sample", "t_measure", "t_total"]
        self._write("sft.csv", head, rows)
        return len(rows)

    def retrain(self, groups: dict[str, list]) -> int:
        rows = []
        for group, specs in groups.items():
            recs = {r.key: r for r in self.run.store.records([s.key for s in specs], status="done")}
            for s in specs:
                r = recs.get(s.key)
                if r is None:
                    continue
                rows.append(
                    [group, s.mask, s.mask.count("1"), s.seed]
                    + [repr(float(r.behaviors[b])) for b in self.behaviors]
                    + [round(r.t_total, 3)]
                )
        head = ["set", "mask", "size", "seed", *self.behaviors, "t_total"]
        self._write("retrain.csv", head, rows)
        return len(rows)

    def meta(self, payload: dict) -> None:
        tmp = self.dir / ".meta.json.tmp"
        tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
        tmp.replace(self.dir / "meta.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="run directory (the job store)")
    ap.add_argument("--data-dir", type=Path, default=Path("benchmarks/data/complete_game"))
    ap.add_argument("--repeat", type=int, default=0, help="seeds of lds_repeats.py's repeat")
    ap.add_argument("--test-subsets", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=5, help="random 2- and 8-player coalitions")
    ap.add_argument("--fidelity-seeds", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=32, help="jobs between CSV rewrites")
    add_config_args(ap)
    ap.set_defaults(**RECIPE, estimators=["shapley"], grid=[64])
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = config(args, args.repeat)
    with Run(cfg, args.out, progress=False) as run:
        plan = run.jobs()
        p = plan.prepared
        n = p.n_players
        run.execute(list(plan.references.values()), "references")
        refs = run.reference_records(plan)
        behaviors = sorted(refs["full"].behaviors)
        rec = Recorder(run, args.data_dir, behaviors)
        sft = [
            run.spec(p, m, p.method, cfg.attribution.seed, "fit") for m in all_masks(n, args.repeat)
        ]
        retrain = cfg.method_settings("retrain")
        rp = run.prepare(retrain)
        test = held_out_masks(n, 0.5, args.test_subsets, cfg.attribution.seed)
        groups = {
            "test": [run.spec(rp, m, retrain, s, "test") for s in range(args.seeds) for m in test],
            "small-large": [
                run.spec(rp, m, retrain, s, "test")
                for s in range(args.fidelity_seeds)
                for m in small_large(n, args.pairs, cfg.attribution.seed)
            ],
        }

        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        old_meta = args.data_dir / "meta.json"
        calls = []  # every call of this script on the game: command, start, stage, seconds
        if old_meta.exists():
            old = json.loads(old_meta.read_text())
            calls = old.get("calls") or [
                {k: old[k] for k in ("command", "stage", "seconds_this_call") if k in old}
            ]

        def write_meta(stage: str) -> None:
            refs = run.reference_records(plan)
            this = {
                "command": "python benchmarks/complete_game.py " + " ".join(sys.argv[1:]),
                "started": started,
                "stage": stage,
                "seconds_this_call": round(time.perf_counter() - t0, 1),
            }
            rec.meta(
                {
                    "players": list(p.players.names),
                    "behaviors": behaviors,
                    "v0": refs["null"].behaviors,
                    "v1": refs["full"].behaviors,
                    "sft_all_players": refs["method"].behaviors if refs["method"] else None,
                    "sft_prepare_seconds": p.prepare_cost,
                    "test_subsets": [mask_to_str(m) for m in test],
                    "seeds": args.seeds,
                    "stage": stage,
                    "seconds_this_call": this["seconds_this_call"],
                    "command": this["command"],
                    "calls": calls + [this],
                    "recipe": {k: getattr(args, k) for k in RECIPE} | {"workers": args.workers},
                    "config": cfg.to_dict(),
                }
            )

        write_meta("references")
        for part in chunks(sft, args.chunk):
            run.execute(part, "sft game")
            done = rec.sft(sft)
            print(f"sft game: {done}/{len(sft)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        write_meta("sft game")
        # seed by seed, so that every seed recorded covers both groups: test subsets and the
        # small / large coalitions (sFT fidelity where kernel rows live) with seed 0 first
        order = [
            s
            for seed in range(max(args.seeds, args.fidelity_seeds))
            for g in ("test", "small-large")
            for s in groups[g]
            if s.seed == seed
        ]
        for part in chunks(order, max(2, args.chunk // 4)):
            run.execute(part, "retrain")
            done = rec.retrain(groups)
            print(f"retrain: {done}/{len(order)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        write_meta("done")
    print(json.dumps({"sft_rows": len(sft), "retrain_rows": len(order)}))


if __name__ == "__main__":
    main()
