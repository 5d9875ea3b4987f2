"""Time per stage of ``diffattr run`` and the per-job overhead; prints JSON.

    python benchmarks/pipeline.py --out runs/bench-pipeline [--preset quick] [--executor inline]

Overhead = a job's wall time outside train, sample and measure (loading, transfers,
store writes), as a share of the job.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffattr.config import build_config
from diffattr.runner import run_attribution
from diffattr.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--executor", default="inline")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    executor = {"name": args.executor}
    if args.executor != "inline":
        executor["workers"] = args.workers
    cfg = build_config(None, args.preset, {"executor": executor})
    t0 = time.perf_counter()
    summary = run_attribution(cfg, args.out, progress=False)
    wall = time.perf_counter() - t0
    with Store(args.out / "store.sqlite") as store:
        fit = [r for r in store.records() if r.kind in ("fit", "method-all")]
    parts = np.array([[r.t_train, r.t_sample, r.t_measure, r.t_total] for r in fit])
    overhead = parts[:, 3] - parts[:, :3].sum(1)
    print(
        json.dumps(
            {
                "preset": args.preset or "default",
                "executor": args.executor,
                "wall_seconds": round(wall, 2),
                "stages": {k: round(v, 2) for k, v in summary.timings.items()},
                "jobs": summary.jobs,
                "failed": summary.failed,
                "per_job_seconds": {
                    "train": round(float(parts[:, 0].mean()), 3),
                    "sample": round(float(parts[:, 1].mean()), 3),
                    "measure": round(float(parts[:, 2].mean()), 3),
                    "total": round(float(parts[:, 3].mean()), 3),
                    "overhead": round(float(overhead.mean()), 3),
                    "overhead_share": round(float(overhead.sum() / parts[:, 3].sum()), 4),
                },
                "machine": {
                    "cpus": torch.get_num_threads(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
