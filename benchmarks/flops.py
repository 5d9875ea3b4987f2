"""The arithmetic of one counterfactual: FLOPs of its training and of its sampling, and the
rate this machine runs each at.

Opens a ``diffattr run`` directory, takes one held-out coalition (alpha = 0.5, the LDS's
first test subset) and runs a job of the run's method (``--method``: another of its config)
on it (``--set`` changes its settings, e.g. ``steps=100``, and ``--set sample.X=V`` the
sampling budget) the way a job runs (``Worker.model_for``: the method's training;
``Worker.sample``: the run's sampling budget): ``--repeats`` times on the clock (medians),
then once under torch's FLOP counter as ``diffattr run --profile`` counts
(``diffattr.runner.profile.count_flops`` with ``diffattr.torchutils.flop_counter``, torch's
with the CPU's attention kernels: convolutions, matrix products and attention, forward and
backward; element-wise work such as normalization, activations and Adam is not counted).
Reports per stage the GFLOP, the seconds, and the GFLOP per second achieved, and two ratios
of a whole job to its own sampling: measured (train + sample seconds over sample seconds)
and the one the arithmetic alone sets (train + sample FLOPs over sample FLOPs), which no
machine running both stages at the same rate beats. Prints JSON; the run's threads are
``OMP_NUM_THREADS`` (default 1).

    OMP_NUM_THREADS=1 python benchmarks/flops.py runs/default-fid --set ratio=0.5 \\
        > benchmarks/data/flops/default.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError

from diffattr.config import parse_assignment
from diffattr.errors import DiffattrError
from diffattr.evaluate.common import held_out_masks, open_run
from diffattr.runner.job import record_for, worker_for
from diffattr.runner.profile import count_flops


def parse_changes(items: list[str]) -> dict:
    """``--set`` items read as ``diffattr run --set`` reads them (TOML, else a string)."""
    try:
        return dict(parse_assignment(item) for item in items)
    except DiffattrError as e:
        raise SystemExit(f"flops: {e}") from None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument(
        "--set", action="append", default=[], help="e.g. steps=100 or sample.ddim_steps=10"
    )
    ap.add_argument(
        "--method", default=None, help="another method of the run's config (e.g. ft: unpruned)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not (args.run_dir / "config.toml").is_file():
        raise SystemExit(f"flops: {args.run_dir} is not a diffattr run directory (no config.toml)")
    changes = parse_changes(args.set)
    sample_changes = {k.removeprefix("sample."): v for k, v in changes.items() if "." in k}
    changes = {k: v for k, v in changes.items() if "." not in k}
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    overrides = {"sample": sample_changes} if sample_changes else None
    try:
        run_cm = open_run(args.run_dir, overrides, progress=False)
    except DiffattrError as e:
        raise SystemExit(f"flops: {e}") from None
    with run_cm as run:
        base = run.cfg.method
        if args.method is not None and args.method != base.name:
            if args.method not in run.cfg.methods:
                known = ", ".join(sorted({base.name, *run.cfg.methods}))
                raise SystemExit(f"flops: no method {args.method!r} in the run (it has {known})")
            base = run.cfg.methods[args.method]
        try:
            settings = type(base)(**{**base.model_dump(), **changes})
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise SystemExit(f"flops: --set {changes}: {where}: {err['msg']}") from None
        p = run.prepare(settings)
        mask = held_out_masks(p.n_players, 0.5, 1, 0)[0]
        spec = run.spec(p, mask, settings, run.cfg.attribution.seed, "flops")
        worker = worker_for(p.ctx)

        def once() -> tuple[float, float]:
            rec = record_for(spec)
            torch.manual_seed(spec.seed)
            model = worker.model_for(spec, rec)
            t = time.perf_counter()
            worker.sample(model, spec.mask)
            return float(rec.t_train), time.perf_counter() - t

        once()  # warm-up: loads, caches, first-call allocations
        clocks = [once() for _ in range(args.repeats)]
        train_s = statistics.median(c[0] for c in clocks)
        sample_s = statistics.median(c[1] for c in clocks)
        counted = count_flops(spec, p.ctx)  # what diffattr run --profile records
        cfg = run.cfg
    if counted.get("error"):
        raise SystemExit(f"flops: the FLOP counter failed: {counted['error']}")
    if not counted["sample"] or sample_s <= 0:
        raise SystemExit("flops: the sampling stage counted no FLOPs; nothing to compare")
    train_flops, sample_flops = counted["train"] * 1e9, counted["sample"] * 1e9
    payload = {
        "command": "python benchmarks/flops.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": threads,
        "load_average_after": os.getloadavg()[0],
        "method": settings.to_dict(),
        "train_recipe": {"batch_size": settings.batch_size or cfg.train.batch_size},
        "sample": cfg.sample.model_dump(),
        "repeats": args.repeats,
        "train": {
            "gflop": train_flops / 1e9,
            "seconds": train_s,
            "gflop_per_s": train_flops / 1e9 / train_s if train_s > 0 else None,
        },
        "sample_stage": {
            "gflop": sample_flops / 1e9,
            "seconds": sample_s,
            "gflop_per_s": sample_flops / 1e9 / sample_s,
        },
        "job_over_sampling": {
            "measured": (train_s + sample_s) / sample_s,
            "arithmetic": (train_flops + sample_flops) / sample_flops,
        },
        "clocks": [{"train": a, "sample": b} for a, b in clocks],
    }
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
