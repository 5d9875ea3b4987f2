"""Does training K coalition models side by side (torch.func) pay on this machine?

The question behind "coalition models trained at once" (issue: cost per counterfactual):
an sFT job trains a small model for k steps; if the cost of a step were per-operator
overhead, stacking the parameters of K models (``torch.func.stack_module_state``) and
calling the model once through ``vmap(functional_call)`` would train K models for about the
price of one. This script measures it for the digits UNets (``tiny``, pruned and not, and
``small``): milliseconds per model per training step (forward + backward + Adam, batch 64)
and per model per sampling forward (256 images), eagerly one model at a time and stacked
at K = 1, 4, 16 (and 64 with ``--big``), at 1 and 2 torch threads.

diffusers' UNet does not run under ``vmap`` as it is: GroupNorm asks for a memory format
inside vmap (``NYI: querying is_contiguous inside of vmap``) and CPU flash attention has no
batching rule. The stacked call swaps both for plain-tensor equivalents (the package's
``diffusion.stacked.VmapSafe``, what ``[executor] jobs_per_batch`` trains with) -- the same
arithmetic, not bit for bit. This is the bare step; ``throughput.py --batches`` measures
whole jobs through the executors. Prints JSON.

    OMP_NUM_THREADS=2 python benchmarks/stacked.py > benchmarks/data/stacked.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from diffattr.diffusion.stacked import VmapSafe
from diffattr.diffusion.unet import make_unet
from diffattr.sparsify.prune import prune_unet


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def measure(model: torch.nn.Module, ks: list[int], batch: int, images: int, repeats: int):
    cfg = model.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    out = {}

    # eager, one model
    m = copy.deepcopy(model).train()
    opt = torch.optim.Adam(m.parameters(), 1e-4)

    def step():
        x, n = torch.randn(batch, *shape), torch.randn(batch, *shape)
        t = torch.randint(0, 1000, (batch,))
        loss = F.mse_loss(m(x, t).sample, n)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def forward():
        return m(torch.randn(images, *shape), torch.full((images,), 500)).sample

    out["eager"] = {
        "train_ms_per_model": 1e3 * timed(step, repeats),
        "sample_forward_ms_per_model": 1e3 * timed(forward, repeats),
    }
    for k in ks:
        r = max(1, repeats // max(1, k // 4))
        out[f"stacked_k{k}"] = measure_stacked(model, k, shape, batch, images, r)
    return out


def measure_stacked(model, k: int, shape, batch: int, images: int, repeats: int) -> dict:
    """Per-model milliseconds of K stacked copies of ``model`` (train step, sampling pass)."""
    models = [copy.deepcopy(model).train() for _ in range(k)]
    params, buffers = stack_module_state(models)
    params = {n: p.detach().requires_grad_() for n, p in params.items()}
    opt = torch.optim.Adam(params.values(), 1e-4)

    def f(p, b, x, t):
        with VmapSafe():
            return functional_call(model, (p, b), (x, t)).sample

    batched = vmap(f)

    def step():
        x, n = torch.randn(k, batch, *shape), torch.randn(k, batch, *shape)
        t = torch.randint(0, 1000, (k, batch))
        loss = ((batched(params, buffers, x, t) - n) ** 2).mean(dim=(1, 2, 3, 4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def forward():
        x = torch.randn(images, *shape).expand(k, images, *shape)  # common noise
        return batched(params, buffers, x, torch.full((k, images), 500))

    return {
        "train_ms_per_model": 1e3 * timed(step, repeats) / k,
        "sample_forward_ms_per_model": 1e3 * timed(forward, repeats) / k,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--big", action="store_true", help="also K = 64")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    ks = [1, 4, 16] + ([64] if args.big else [])
    tiny = make_unet("tiny", 8, 1, 0)
    pruned, _ = prune_unet(
        copy.deepcopy(tiny), ratio=0.3, example_images=torch.randn(16, 1, 8, 8), seed=0
    )
    models = {"tiny": tiny, "tiny-pruned-0.3": pruned, "small-16px": make_unet("small", 16, 1, 0)}
    result = {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0], "results": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, model in models.items():
            torch.manual_seed(0)
            key = f"{name}@{threads}threads"
            result["results"][key] = measure(model, ks, 64, 256, args.repeats)
            print(key, json.dumps(result["results"][key]), flush=True, file=sys.stderr)
    result["load_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
