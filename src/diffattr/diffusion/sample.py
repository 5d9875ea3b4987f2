"""DDIM sampling with per-sample fixed seeds (common random numbers across models).

Sample ``i`` of a run always starts from the noise of ``(seed, i)``, whatever the batch size
and whichever model is sampled, so differences between counterfactual models are not
differences of noise (the paper regenerates with fixed seeds for the same reason).

Conditional models also need a condition per sample. ``draw_labels`` is the one rule by
which the model of a coalition S chooses the class labels it generates -- the same for a
model retrained on S, an sFT model of S and the training-free ``surrogate`` (the full model
sampled with S's labels), so the three are measured alike: sample i gets the label at the
quantile ``label_quantile(seed, i)`` of S's label frequencies (inverse CDF).

* The quantile of sample i depends only on (seed, i): labels are common random numbers
  across coalitions, and because the inverse CDF is monotone, coalitions with similar label
  frequencies give most samples the same label (the same noise *and* the same class).
* The quantiles are a golden-ratio (Weyl) sequence from a seeded start, not independent
  uniforms: any N consecutive samples cover [0, 1) with low discrepancy, so S's label counts
  match its frequencies to within a couple of samples per class. Independent draws would add
  multinomial noise to every F(S) (about +-7 of 50 samples per class at N = 500, 10 classes).
* The empty coalition has no labels: its model generates with the null label.

SurrogateSHAP's research code samples retrained CIFAR-20 models with the null label instead;
that cannot be the common rule because a surrogate sampled with the null label is the full
model's unconditional distribution for every S. A model retrained on S with label dropout
generates, under its null label, approximately the mixture of its classes in S's
proportions, which is what this rule asks of every model explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from diffattr.diffusion.unet import make_ddim
from diffattr.errors import DiffattrError


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``: a stable hash of (seed, index)."""
    h = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


#: Step of the quantile sequence: the golden ratio's fractional part (most uniform spacing).
GOLDEN = (5**0.5 - 1) / 2


def label_quantile(seed: int, indices: range | list[int] | np.ndarray) -> np.ndarray:
    """The fixed quantile in [0, 1) of each sample index: frac(u0 + i * golden ratio), with
    u0 a hash of ``seed`` (float64; the same on every machine)."""
    h = hashlib.blake2b(f"labels:{seed}".encode(), digest_size=8).digest()
    u0 = (int.from_bytes(h, "little") >> 11) / float(1 << 53)
    i = np.asarray(list(indices) if isinstance(indices, range) else indices, dtype=np.float64)
    return np.mod(u0 + i * GOLDEN, 1.0)


def draw_labels(
    counts: np.ndarray | list[float],
    num_samples: int,
    *,
    seed: int,
    start: int = 0,
    null_label: int | None = None,
) -> torch.Tensor:
    """The class label of samples ``start .. start + num_samples - 1`` for a model of a
    coalition whose data hold ``counts[c]`` images of class c (the module docstring gives
    the rule and why). All-zero counts (the empty coalition) give ``null_label``."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise DiffattrError("label counts must be a non-empty vector of non-negative numbers")
    total = counts.sum()
    if total == 0:
        if null_label is None:
            raise DiffattrError("the coalition has no labels and no null label was given")
        return torch.full((num_samples,), int(null_label), dtype=torch.long)
    cdf = np.cumsum(counts) / total
    u = label_quantile(seed, range(start, start + num_samples))
    labels = np.searchsorted(cdf, u, side="right")
    # float rounding may leave cdf[-1] a hair below 1; the last class with data takes it
    labels = np.minimum(labels, int(np.flatnonzero(counts)[-1]))
    return torch.as_tensor(labels, dtype=torch.long)


def initial_noise(
    indices: range | list[int], shape: tuple[int, int, int], seed: int
) -> torch.Tensor:
    """x_T for the given sample indices; sample i gets the same noise in every model."""
    out = torch.empty((len(indices), *shape))
    for row, i in enumerate(indices):
        g = torch.Generator().manual_seed(sample_seed(seed, i))
        out[row] = torch.randn(shape, generator=g)
    return out


@dataclass
class Sampled:
    """What one DDIM run gives back (``ddim_run``)."""

    final: torch.Tensor  # x_0, (N, *shape), float32 on the CPU, not clamped
    timesteps: torch.Tensor  # the scheduler's timesteps, one per DDIM step
    steps: torch.Tensor | None = None  # the kept step indices (``keep_steps``)
    states: torch.Tensor | None = None  # x_t before each kept step, (len(steps), N, *shape)


@torch.no_grad()
def ddim_run(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    shape: tuple[int, ...],
    num_samples: int,
    *,
    ddim_steps: int = 100,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    start: int = 0,
    cond: Any = None,
    scheduler: Any = None,
    scheduler_config: dict | None = None,
    keep_steps: Sequence[int] | None = None,
    progress: bool = False,
    copies: int | None = None,
) -> Sampled:
    """The package's one DDIM loop (eta = 0): every family, baseline and trajectory
    recorder samples through it, so the common-random-numbers rule holds everywhere --
    sample ``start + i`` starts from ``initial_noise`` of (``seed``, ``start + i``) times the
    scheduler's ``init_noise_sigma``, whatever the batch size and whichever model.

    Args:
        eps_fn: ``eps_fn(x_t, t, cond_rows)`` predicts the noise (guidance goes inside it).
        cond: per-sample conditions (a tensor, or a dict / list of tensors, first dimension
            ``num_samples``) handed to ``eps_fn`` row-sliced per batch and moved to
            ``device``; None for unconditional models.
        scheduler: a DDIM scheduler with its timesteps set (a family with its own schedule);
            default: ``make_ddim(ddim_steps, scheduler_config)``.
        keep_steps: DDIM step indices whose input state x_t is kept (``Sampled.states``);
            None keeps none.
        copies: K models sampled side by side (``diffusion.stacked``): x_t is (K, B, ...),
            every model starting from the same noise, and ``final`` is (K, N, ...);
            ``eps_fn`` gets the (K, B, ...) states and the batch's conditions as they are.
    """
    sched = scheduler if scheduler is not None else make_ddim(ddim_steps, scheduler_config)
    timesteps = sched.timesteps
    keep = None
    states = None
    if keep_steps is not None:
        keep = np.asarray(sorted(set(int(s) for s in keep_steps)), dtype=np.int64)
        if keep.size == 0 or keep.min() < 0 or keep.max() >= len(timesteps):
            raise DiffattrError(f"keep_steps must lie in 0..{len(timesteps) - 1}")
        states = torch.empty((len(keep), num_samples, *shape))
        if copies is not None:
            raise DiffattrError("keep_steps is not supported for models sampled side by side")
    keep_pos = {} if keep is None else {int(s): j for j, s in enumerate(keep)}
    chunks = []
    for b0 in tqdm(
        range(0, num_samples, batch_size), desc="sample", disable=not progress, leave=False
    ):
        b1 = min(b0 + batch_size, num_samples)
        x = initial_noise(range(start + b0, start + b1), shape, seed).to(device)
        x = x * sched.init_noise_sigma
        if copies is not None:
            x = x.expand(copies, *x.shape).clone()
        c = None if cond is None else tree_map(lambda v, lo=b0, hi=b1: v[lo:hi].to(device), cond)
        for s, t in enumerate(timesteps):
            if s in keep_pos:
                states[keep_pos[s], b0:b1] = x.float().cpu()
            eps = eps_fn(x, t.to(device), c)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        chunks.append(x.float().cpu())
    if copies is not None:
        final = torch.cat(chunks, 1) if chunks else torch.empty((copies, 0, *shape))
    else:
        final = torch.cat(chunks) if chunks else torch.empty((0, *shape))
    steps = None if keep is None else torch.as_tensor(keep, dtype=torch.long)
    return Sampled(final, timesteps, steps, states)


def ddim_sample(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    shape: tuple[int, ...],
    num_samples: int,
    **kwargs: Any,
) -> torch.Tensor:
    """Deterministic DDIM samples x_0, (N, *shape), float32 on the CPU, not clamped:
    ``ddim_run(...).final`` (the keyword arguments are ``ddim_run``'s)."""
    return ddim_run(eps_fn, shape, num_samples, **kwargs).final


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
