"""``ga``: unlearning by gradient ascent on the removed data.

Starting from the full model's sampled (EMA) weights, Adam *maximises* the diffusion loss on
the data of the removed players for ``steps`` steps. Gradient ascent has no fixed point and
diverges if run long enough, so three guards keep it finite: gradient-norm clipping, a stop
once the batch loss reaches ``loss_limit`` (1.0 is the loss of a model that predicts zero
noise, i.e. knows nothing), and a roll-back to the last finite weights if a step produces a
non-finite loss. With every player kept nothing is removed and the full model is returned.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from diffattr.counterfactual.base import (
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    MethodSettings,
    check_indices,
    copy_module,
    dataset_images,
)
from diffattr.diffusion.train import antithetic_timesteps, diffusion_loss
from diffattr.diffusion.unet import make_scheduler


class GASettings(MethodSettings):
    steps: int = Field(20, ge=1, description="gradient-ascent steps on the removed data")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    batch_size: int | None = Field(None, ge=1, description="batch size (default: the full's)")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    loss_limit: float = Field(1.0, gt=0, description="stop once the ascended loss reaches this")


@METHODS.register("ga")
class GradientAscent(CounterfactualMethod):
    name = "ga"
    Settings = GASettings
    settings: GASettings

    def load(self) -> None:
        self.full.load(self.device)

    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        self.kept_images(kept, dataset)  # validates the request
        images = dataset_images(dataset)
        removed = np.setdiff1d(np.arange(len(images)), check_indices(kept, len(images)))
        full = self.full.load(self.device)
        unet = copy_module(full.unet)
        if len(removed) == 0:
            return CounterfactualResult(unet.eval(), 0.0, {"steps": 0, "removed": 0})
        s = self.settings
        batch = s.batch_size or self.full.train.batch_size
        data = images[torch.as_tensor(removed)].to(self.device)
        scheduler = make_scheduler()
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(self.device)
        T = scheduler.config.num_train_timesteps
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(unet.parameters(), lr=s.lr)
        unet.to(self.device).train()
        last_good = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        losses: list[float] = []
        stopped = None
        t0 = time.perf_counter()
        for _ in range(s.steps):
            idx = torch.randint(0, len(data), (batch,), generator=gen)
            t = antithetic_timesteps(batch, T, gen)
            noise = torch.randn((batch, *data.shape[1:]), generator=gen)
            loss = diffusion_loss(
                unet, data[idx.to(self.device)], t.to(self.device), noise.to(self.device), scheduler
            )
            value = float(loss.detach())
            if not np.isfinite(value):
                unet.load_state_dict(last_good)
                stopped = "non-finite loss"
                break
            losses.append(value)
            if value >= s.loss_limit:
                stopped = "loss limit"
                break
            last_good = {k: v.detach().clone() for k, v in unet.state_dict().items()}
            opt.zero_grad(set_to_none=True)
            (-loss).backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), s.grad_clip)
            opt.step()
        seconds = time.perf_counter() - t0
        info = {
            "steps": len(losses) if stopped is None else max(0, len(losses) - 1),
            "removed": int(len(removed)),
            "loss_start": losses[0] if losses else float("nan"),
            "loss_end": losses[-1] if losses else float("nan"),
            "stopped": stopped,
        }
        return CounterfactualResult(unet.eval(), seconds, info)
