"""Counterfactual jobs per hour on this machine by process workers x torch threads x models
trained side by side (issue 26 items 1 and 3); prints JSON.

    python benchmarks/throughput.py runs/bench-default4 --jobs 6
    python benchmarks/throughput.py runs/bench-default5 --jobs 32 --batches 1 4 16

Every setting runs the same ``--jobs`` jobs of the run's method (held-out alpha = 0.5 masks
with seeds no other job uses; nothing is written to the run's store) through the process
executor, a fresh pool per setting, so its start-up (spawning, loading the data and the
pruned model) is inside the wall time as it is in a run. With ``--batches``, each
(workers, threads) setting also runs with ``jobs_per_batch`` K: each worker trains and
samples K coalition models side by side (``diffusion.stacked``). Run it on an otherwise
idle machine: the settings are compared within one call, back to back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from diffattr.evaluate.common import held_out_masks, open_run
from diffattr.runner.settings import ProcessSettings

SETTINGS = ((1, 1), (1, 2), (2, 1))  # (workers, threads per worker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument(
        "--batches", type=int, nargs="+", default=[1], help="jobs_per_batch values to run"
    )
    ap.add_argument(
        "--settings",
        nargs="+",
        default=[f"{w}x{t}" for w, t in SETTINGS],
        help="process workers x torch threads, e.g. 1x1 2x1",
    )
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run = open_run(args.run_dir, progress=False)
    p = run.prepare()
    masks = held_out_masks(p.n_players, 0.5, args.jobs, run.cfg.attribution.seed + 1)
    specs = [run.spec(p, m, p.method, 30_000 + k, "throughput") for k, m in enumerate(masks)]
    out = {"run_dir": str(args.run_dir), "jobs": len(specs), "cpus": cpus, "settings": []}
    pairs = [tuple(int(v) for v in st.split("x")) for st in args.settings]
    grid = [(w, t, k) for w, t in pairs for k in args.batches]
    for workers, threads, per_batch in grid:
        if workers * threads > (cpus or 1):
            continue
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the executor's cap per worker
        executor = ProcessSettings(workers=workers, jobs_per_batch=per_batch).build()
        ctx = dataclasses.replace(p.ctx, jobs_per_batch=per_batch)
        t0 = time.perf_counter()
        recs = list(executor.run(specs, ctx))
        wall = time.perf_counter() - t0
        failed = [r.error for r in recs if r.status != "done"]
        out["settings"].append(
            {
                "workers": workers,
                "threads": threads,
                "jobs_per_batch": per_batch,
                "wall_seconds": wall,
                "jobs_per_hour": len(specs) / wall * 3600,
                "mean_job_seconds": float(np.mean([r.t_total for r in recs])),
                "mean_train_seconds": float(np.mean([r.t_train for r in recs])),
                "mean_sample_seconds": float(np.mean([r.t_sample for r in recs])),
                "batches": sorted({int(r.extra.get("batch", 1)) for r in recs}),
                "failed": failed,
            }
        )
        print(json.dumps(out["settings"][-1]), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
