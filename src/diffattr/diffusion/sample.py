"""DDIM sampling with per-sample fixed seeds (common random numbers across models)."""

from __future__ import annotations

import hashlib

import torch
from tqdm.auto import tqdm

from diffattr.diffusion.unet import make_ddim


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``: a stable hash of (seed, index)."""
    h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def initial_noise(
    indices: range | list[int], shape: tuple[int, int, int], seed: int
) -> torch.Tensor:
    """x_T for the given sample indices; sample i gets the same noise in every model."""
    out = torch.empty((len(indices), *shape))
    for row, i in enumerate(indices):
        g = torch.Generator().manual_seed(sample_seed(seed, i))
        out[row] = torch.randn(shape, generator=g)
    return out


@torch.no_grad()
def generate(
    unet: torch.nn.Module,
    num_samples: int,
    *,
    ddim_steps: int = 100,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    start: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples in [-1, 1], shape (N, C, H, W), on the CPU.

    Sample ``start + i`` always starts from ``initial_noise`` of that index, so two models
    given the same ``seed`` are compared on the same noise, whatever the batch size.
    """
    config = unet.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    was_training = unet.training
    unet.eval()
    sched = make_ddim(ddim_steps)
    chunks = []
    starts = range(start, start + num_samples, batch_size)
    for b0 in tqdm(starts, desc="sample", disable=not progress, leave=False):
        idx = range(b0, min(b0 + batch_size, start + num_samples))
        x = initial_noise(idx, shape, seed).to(device)
        for t in sched.timesteps:
            eps = unet(x, t.to(device)).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        chunks.append(x.clamp(-1, 1).float().cpu())
    unet.train(was_training)
    return torch.cat(chunks)[:num_samples]
