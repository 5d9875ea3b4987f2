"""What does pruning buy per step on this CPU? Channel widths, SIMD blocks and torch.compile.

Pruning the digits UNet by 30 % removes 44 % of its parameters but saved only ~9 % per
training step (BENCHMARKS.md, issue 4), which looked like per-operator overhead. This
script tests the other explanation: oneDNN runs a convolution in blocks of channels (16 on
a CPU with AVX-512, 8 with AVX2), so a width that is not a multiple of the block costs
what the next multiple costs -- 32 channels pruned by 30 % keep 24, which run like 32.
For each model (``tiny`` at 8 px, ``small`` at 16 px) and pruning (ratio, ``round_to``,
the knobs of ``[method]``) it measures milliseconds per training step (forward, backward,
Adam; batch 64) and per sampling forward (256 images), eagerly and, with ``--compile``,
through ``torch.compile`` (inductor; needs a C compiler). Models are measured round-robin
``--rounds`` times in one process and the median is reported, so a change of load shifts
every model alike. Prints JSON (the conv widths kept, parameters, and the CPU flags that
decide the block).

    OMP_NUM_THREADS=1 python benchmarks/widths.py --compile > benchmarks/data/widths.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffattr.diffusion.unet import make_unet
from diffattr.sparsify.prune import prune_unet

#: (architecture, image size) -> prunings (ratio, round_to); None = the unpruned model.
PRUNINGS = [None, (0.3, None), (0.3, 16), (0.5, None), (0.7, None)]
MODELS = {"tiny": 8, "small": 16}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            return sorted({f for f in line.split() if f.startswith(("avx", "amx"))})
    return []


def widths(model: torch.nn.Module) -> list[int]:
    """The distinct output widths of the model's convolutions."""
    return sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)})


class Timer:
    """One model's training step and sampling forward, eager or compiled."""

    def __init__(self, model: torch.nn.Module, compiled: bool, batch: int, images: int):
        self.model = copy.deepcopy(model).train()
        self.fn = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-4)
        c, s = model.config.in_channels, model.config.sample_size
        self.shape, self.batch, self.images = (c, s, s), batch, images
        self.warm_seconds = self._warm()

    def step(self) -> None:
        self.model.train()
        x, n = torch.randn(self.batch, *self.shape), torch.randn(self.batch, *self.shape)
        t = torch.randint(0, 1000, (self.batch,))
        loss = F.mse_loss(self.fn(x, t).sample, n)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def forward(self) -> None:
        self.model.eval()
        self.fn(torch.randn(self.images, *self.shape), torch.full((self.images,), 500))

    def _warm(self) -> float:
        t = time.perf_counter()
        for _ in range(2):  # compiles train and eval graphs once each
            self.step()
            self.forward()
        return time.perf_counter() - t

    def time(self, repeats: int) -> tuple[float, float]:
        t = time.perf_counter()
        for _ in range(repeats):
            self.step()
        train = (time.perf_counter() - t) / repeats
        t = time.perf_counter()
        for _ in range(repeats):
            self.forward()
        return 1e3 * train, 1e3 * (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="also through torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.compile:
        # every model (and its train / eval mode) is a recompile of UNet2DModel.forward;
        # past the default limit of 8, dynamo would silently run the rest eagerly
        torch._dynamo.config.recompile_limit = 256
        torch._dynamo.config.fail_on_recompile_limit_hit = True
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
        "load_at_start": os.getloadavg()[0],
        "models": {},
    }
    timers: dict[str, Timer] = {}
    for arch, size in ((a, MODELS[a]) for a in args.models):
        full = make_unet(arch, size, 1, 0)
        example = torch.randn(16, 1, size, size)
        for pruning in PRUNINGS:
            if pruning is None:
                model, name = full, f"{arch}"
            else:
                ratio, round_to = pruning
                model, _ = prune_unet(
                    copy.deepcopy(full), ratio, example_images=example, round_to=round_to
                )
                name = f"{arch} ratio {ratio}" + (f" round_to {round_to}" if round_to else "")
            result["models"][name] = {
                "conv_widths": widths(model),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
            for compiled in (False, True) if args.compile else (False,):
                key = f"{name} / {'compiled' if compiled else 'eager'}"
                timers[key] = Timer(model, compiled, 64, 256)
                result["models"][name][f"warm_up_seconds_{'compiled' if compiled else 'eager'}"] = (
                    timers[key].warm_seconds
                )
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in timers}
    for r in range(args.rounds):
        for key, timer in timers.items():
            samples[key].append(timer.time(args.repeats))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for key, rows in samples.items():
        name, mode = key.rsplit(" / ", 1)
        train, forward = np.median(np.array(rows), axis=0)
        result["models"][name][f"train_step_ms_{mode}"] = float(train)
        result["models"][name][f"sample_forward_ms_{mode}"] = float(forward)
    result["load_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
