"""DDIM sampling with per-sample fixed seeds (common random numbers across models).

Sample ``i`` of a run always starts from the noise of ``(seed, i)``, whatever the batch size
and whichever model is sampled, so differences between counterfactual models are not
differences of noise (the paper regenerates with fixed seeds for the same reason).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

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
def ddim_sample(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    shape: tuple[int, int, int],
    num_samples: int,
    *,
    ddim_steps: int = 100,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    start: int = 0,
    cond: Any = None,
    scheduler_config: dict | None = None,
    progress: bool = False,
    trajectory: list | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) samples x_0, shape (N, *shape), on the CPU (float32).

    ``eps_fn(x_t, t, cond_batch)`` predicts the noise; ``cond`` (indexable by sample, or
    None) gives each sample's condition. With ``trajectory`` (a list), the (x_t, t) of every
    step is appended to it (for trajectory-based attribution).
    """
    sched = make_ddim(ddim_steps, scheduler_config)
    chunks = []
    starts = range(start, start + num_samples, batch_size)
    for b0 in tqdm(starts, desc="sample", disable=not progress, leave=False):
        idx = range(b0, min(b0 + batch_size, start + num_samples))
        x = initial_noise(idx, shape, seed).to(device)
        c = None if cond is None else cond[idx.start - start : idx.stop - start]
        for t in sched.timesteps:
            if trajectory is not None:
                trajectory.append((x.detach().cpu(), int(t)))
            eps = eps_fn(x, t.to(device), c)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        chunks.append(x.float().cpu())
    return torch.cat(chunks)[:num_samples]


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
    """Pixel-space samples of an unconditional ``UNet2DModel`` in [-1, 1], (N, C, H, W)."""
    config = unet.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    was_training = unet.training
    unet.eval()
    try:
        x = ddim_sample(
            lambda x_t, t, _c: unet(x_t, t).sample,
            shape,
            num_samples,
            ddim_steps=ddim_steps,
            seed=seed,
            batch_size=batch_size,
            device=device,
            start=start,
            progress=progress,
        )
    finally:
        unet.train(was_training)
    return x.clamp(-1, 1)
