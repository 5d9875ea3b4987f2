"""Milliseconds per step of the package's training loop, with its fused Adam and with the
per-parameter Adam torch uses on a CPU by default.

``diffattr.diffusion.train.train`` (the loop every fit and fine-tune runs: batches, noise,
loss, backward, clipping, Adam, EMA) on sklearn's digits for the tiny UNet pruned at
several ratios and batch sizes, on one thread. Each setting is timed ``--rounds`` times
round-robin (the optimizers alternate, so a change of load shifts both alike) and the
median is reported; the loop's own clock (``TrainResult.seconds``) over ``--steps`` steps.
Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/train_step.py > benchmarks/data/train_step.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch

import diffattr.diffusion.train as loop
from diffattr.data import load_dataset
from diffattr.diffusion.settings import TrainConfig
from diffattr.diffusion.unet import make_unet
from diffattr.families.base import TrainingSet
from diffattr.families.settings import UnconditionalSettings
from diffattr.sparsify.prune import prune_unet


def per_parameter_adam(params, lr: float):
    """torch's default on a CPU (neither fused nor foreach): a loop over the parameters."""
    return torch.optim.Adam(list(params), lr=lr, foreach=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    family = UnconditionalSettings().build("cpu")
    data = TrainingSet(load_dataset("digits").images)
    full = make_unet("tiny", 8, 1, 0)
    example = data.x0[:16]
    models = {}
    for ratio in args.ratios:
        models[ratio] = (
            full
            if ratio == 0
            else prune_unet(copy.deepcopy(full), ratio, example_images=example)[0]
        )
    fused = loop.adam
    optimizers = {"fused": fused, "per-parameter": per_parameter_adam}
    times: dict[tuple, list[float]] = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        for ratio, model in models.items():
            for batch in args.batches:
                cfg = TrainConfig(steps=args.steps, batch_size=batch, lr=1e-4, seed=r)
                for name, make in optimizers.items():
                    loop.adam = make
                    try:
                        res = loop.train(
                            copy.deepcopy(model), data, cfg, denoiser=family, progress=False
                        )
                    finally:
                        loop.adam = fused
                    if r > 0:
                        times.setdefault((ratio, batch, name), []).append(res.seconds / args.steps)
        print(f"round {r}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for (ratio, batch, name), ts in times.items():
        rows.append(
            {
                "ratio": ratio,
                "batch": batch,
                "adam": name,
                "ms_per_step": 1e3 * float(np.median(ts)),
            }
        )
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "steps": args.steps,
                "rounds": args.rounds,
                "load_at_end": os.getloadavg()[0],
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
