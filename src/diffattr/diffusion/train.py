"""The denoising training loop (epsilon prediction), shared by training and fine-tuning.

Adam, gradient-norm clipping, an EMA used for sampling, antithetic timesteps (t paired with
T-1-t), seeded batches, a progress bar with the loss, periodic checkpoints and resume.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffattr.config import TrainConfig
from diffattr.diffusion.checkpoint import is_model_dir, load_model, save_model
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.unet import make_scheduler
from diffattr.errors import DiffattrError


@dataclass
class TrainResult:
    unet: torch.nn.Module  # raw weights after the last step
    ema: EMA
    optimizer_state: dict
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    def save(self, out_dir: str | Path, meta: dict) -> Path:
        """Write the EMA weights (sampled) with the raw weights, optimizer and EMA step, so
        training or fine-tuning can continue from the directory."""
        return save_model(
            out_dir,
            self.ema.model,
            raw_unet=self.unet,
            optimizer_state=self.optimizer_state,
            ema_step=self.ema.step,
            meta=meta,
        )


def antithetic_timesteps(batch: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Half the timesteps uniform on {0..T-1}, the other half their mirror T-1-t."""
    half = (batch + 1) // 2
    t = torch.randint(0, T, (half,), generator=generator)
    return torch.cat([t, T - 1 - t])[:batch]


def diffusion_loss(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    scheduler=None,
) -> torch.Tensor:
    """Simple epsilon-prediction MSE of Ho et al. (2020), eq. 14."""
    scheduler = scheduler or make_scheduler()
    xt = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(unet(xt, t).sample, noise)


def train(
    unet: torch.nn.Module,
    images: torch.Tensor,
    cfg: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    ema: EMA | None = None,
    optimizer_state: dict | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_meta: dict | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``unet`` in place on ``images`` (N, C, H, W) in [-1, 1] for ``cfg.steps`` steps.

    Args:
        ema: an EMA to continue (fine-tuning carries the starting model's EMA); a new one
            with ``cfg.ema_decay`` is started when None.
        optimizer_state: Adam state to continue from (same parameter shapes).
        checkpoint_dir: if given, a resumable checkpoint is written there every
            ``cfg.checkpoint_every`` steps and at the end; an existing checkpoint there is
            resumed from (its step count and RNG position are restored).
    """
    if len(images) == 0:
        raise DiffattrError("cannot train on an empty set of images")
    device = torch.device(device)
    unet.to(device).train()
    scheduler = make_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    T = scheduler.config.num_train_timesteps
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
        for group in opt.param_groups:
            group["lr"] = cfg.lr
    ema = ema if ema is not None else EMA(unet, cfg.ema_decay)
    ema.model.to(device)
    ema.decay = cfg.ema_decay

    start = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and is_model_dir(ckpt):
        loaded = load_model(ckpt, device, training=True)
        start = int(loaded.meta.get("train_step", 0))
        if start > 0 and loaded.raw_unet is not None:
            unet.load_state_dict(loaded.raw_unet.state_dict())
            ema.model.load_state_dict(loaded.unet.state_dict())
            ema.step = loaded.ema_step
            if loaded.optimizer_state is not None:
                opt.load_state_dict(loaded.optimizer_state)
    data = images.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    # Skip the random draws of finished steps so a resumed run continues the same stream.
    for _ in range(start):
        _draw(gen, len(data), cfg, T, data.shape[1:])

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
        idx, t, noise, flip = _draw(gen, len(data), cfg, T, data.shape[1:])
        x0 = data[idx.to(device)]
        if flip is not None:
            x0 = torch.where(flip.to(device)[:, None, None, None], x0.flip(-1), x0)
        loss = diffusion_loss(unet, x0, t.to(device), noise.to(device), scheduler)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(unet)
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        done = step + 1
        if ckpt is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            meta = dict(checkpoint_meta or {}, train_step=done, train_config=cfg.model_dump())
            save_model(
                ckpt,
                ema.model,
                raw_unet=unet,
                optimizer_state=opt.state_dict(),
                ema_step=ema.step,
                meta=meta,
            )
    bar.close()
    return TrainResult(unet, ema, opt.state_dict(), cfg.steps, time.perf_counter() - t0, losses)


def _draw(gen: torch.Generator, n: int, cfg: TrainConfig, T: int, shape: torch.Size):
    idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
    t = antithetic_timesteps(cfg.batch_size, T, gen)
    noise = torch.randn((cfg.batch_size, *shape), generator=gen)
    flip = torch.rand(cfg.batch_size, generator=gen) < 0.5 if cfg.hflip else None
    return idx, t, noise, flip


def read_meta(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "diffattr.json").read_text())
