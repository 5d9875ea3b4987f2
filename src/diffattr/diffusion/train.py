"""The denoising training loop (epsilon prediction), shared by every family and method.

Adam, gradient-norm clipping, an EMA used for sampling, antithetic timesteps (t paired with
T-1-t), seeded batches, a progress bar with the loss, periodic checkpoints and resume.

The loop knows nothing of model families: a *denoiser* (``diffattr.families.ModelFamily``)
says how the model predicts noise from (x_t, t, condition), which noise schedule it trains
with and which parameters train; a *training set* holds the examples (pixels or latents)
and their conditions (class labels, text embeddings, or none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffattr.diffusion.ema import EMA
from diffattr.diffusion.settings import TrainConfig
from diffattr.errors import DiffattrError
from diffattr.torchutils import adam


class Denoiser(Protocol):
    """What the training loop needs to know of a model family.

    A family that trains for classifier-free guidance also has ``condition_dropout`` (the
    share of conditions replaced during training) and ``drop_conditions(cond, dropped)``
    (the batch's conditions with the rows of the boolean ``dropped`` replaced by the null
    condition); the loop draws ``dropped`` from its own seeded stream.
    """

    def predict_noise(
        self, model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Any
    ) -> torch.Tensor: ...

    def noise_scheduler(self) -> Any: ...

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]: ...


class Examples(Protocol):
    """A training set: ``x0`` (N, C, H, W) and optional per-example conditions ``cond``."""

    x0: torch.Tensor
    cond: torch.Tensor | None


class Checkpoint(Protocol):
    """Where ``train`` resumes from and writes its periodic checkpoints."""

    def load(self, device: torch.device) -> Any: ...

    def save(self, result: TrainResult, step: int, cfg: TrainConfig) -> None: ...


#: Seed offset of the condition-dropout stream (from the recipe's seed).
DROPOUT_SEED_OFFSET = 7919


@dataclass
class TrainResult:
    unet: torch.nn.Module  # raw weights after the last step
    ema: EMA
    optimizer_state: dict
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def antithetic_timesteps(batch: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Half the timesteps uniform on {0..T-1}, the other half their mirror T-1-t."""
    half = (batch + 1) // 2
    t = torch.randint(0, T, (half,), generator=generator)
    return torch.cat([t, T - 1 - t])[:batch]


def diffusion_loss(
    denoiser: Denoiser,
    model: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: Any = None,
    scheduler: Any = None,
) -> torch.Tensor:
    """Simple epsilon-prediction MSE of Ho et al. (2020), eq. 14."""
    scheduler = scheduler or denoiser.noise_scheduler()
    xt = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(denoiser.predict_noise(model, xt, t, cond), noise)


def train(
    model: torch.nn.Module,
    data: Examples,
    cfg: TrainConfig,
    *,
    denoiser: Denoiser,
    device: str | torch.device = "cpu",
    ema: EMA | None = None,
    optimizer_state: dict | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``cfg.steps`` steps.

    Args:
        ema: an EMA to continue (fine-tuning may carry the starting model's EMA); a new
            one with ``cfg.ema_decay`` is started when None.
        optimizer_state: Adam state to continue from (same parameter shapes).
        checkpoint: if given, training resumes from its last checkpoint (step count and RNG
            position restored) and writes one every ``cfg.checkpoint_every`` steps and at
            the end.
    """
    n = len(data.x0)
    if n == 0:
        raise DiffattrError("cannot train on an empty set of examples")
    device = torch.device(device)
    model.to(device).train()
    scheduler = denoiser.noise_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    T = scheduler.config.num_train_timesteps
    params = denoiser.trainable_parameters(model)
    opt = adam(params, cfg.lr)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
        for group in opt.param_groups:
            group["lr"] = cfg.lr
    ema = ema if ema is not None else EMA(model, cfg.ema_decay)
    ema.model.to(device)
    ema.decay = cfg.ema_decay

    start = 0
    if checkpoint is not None:
        loaded = checkpoint.load(device)
        if loaded is not None:
            start = int(loaded.meta.get("train_step", 0))
            if start > 0 and loaded.raw is not None:
                model.load_state_dict(loaded.raw.state_dict())
                ema.model.load_state_dict(loaded.model.state_dict())
                ema.step = loaded.ema_step
                if loaded.optimizer_state is not None:
                    opt.load_state_dict(loaded.optimizer_state)
    x0_all = data.x0.to(device)
    cond_all = data.cond.to(device) if isinstance(data.cond, torch.Tensor) else None
    gen = torch.Generator().manual_seed(cfg.seed)
    # Condition dropout (classifier-free guidance) draws from a stream of its own, so the
    # batches, timesteps and noise of families without it are unchanged.
    p_drop = float(getattr(denoiser, "condition_dropout", 0.0) or 0.0)
    drop_gen = None
    if p_drop > 0 and cond_all is not None:
        drop_gen = torch.Generator().manual_seed(cfg.seed + DROPOUT_SEED_OFFSET)
    # Skip the random draws of finished steps so a resumed run continues the same stream.
    for _ in range(start):
        _draw(gen, n, cfg, T, x0_all.shape[1:])
        if drop_gen is not None:
            torch.rand(cfg.batch_size, generator=drop_gen)

    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, cfg.steps),
        desc=desc,
        disable=not progress,
        initial=start,
        total=cfg.steps,
        dynamic_ncols=True,
    )
    for step in bar:
        idx, t, noise, flip = _draw(gen, n, cfg, T, x0_all.shape[1:])
        idx_d = idx.to(device)
        x0 = x0_all[idx_d]
        if flip is not None:
            x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
        cond = cond_all[idx_d] if cond_all is not None else None
        if drop_gen is not None:
            dropped = torch.rand(cfg.batch_size, generator=drop_gen) < p_drop
            cond = denoiser.drop_conditions(cond, dropped.to(device))
        loss = diffusion_loss(denoiser, model, x0, t.to(device), noise.to(device), cond, scheduler)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema.update(model)
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        done = step + 1
        if checkpoint is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            partial = TrainResult(model, ema, opt.state_dict(), done, 0.0)
            checkpoint.save(partial, done, cfg)
    bar.close()
    return TrainResult(model, ema, opt.state_dict(), cfg.steps, time.perf_counter() - t0, losses)


def _draw(gen: torch.Generator, n: int, cfg: TrainConfig, T: int, shape: torch.Size):
    idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
    t = antithetic_timesteps(cfg.batch_size, T, gen)
    noise = torch.randn((cfg.batch_size, *shape), generator=gen)
    flip = torch.rand(cfg.batch_size, generator=gen) < 0.5 if cfg.hflip else None
    return idx, t, noise, flip
