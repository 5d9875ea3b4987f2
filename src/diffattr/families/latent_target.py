"""The baselines' view of a latent UNet (``LatentFamily.baseline_target``): its DDIM
trajectory follows the family's noise schedule, not the pixel default."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffattr.baselines.target import DiffusionTarget, Trajectory, _check_ends_at
from diffattr.diffusion.sample import ddim_run


@dataclass
class LatentTarget(DiffusionTarget):
    """``DiffusionTarget`` of a latent UNet: its DDIM trajectory (Journey-TRAK) follows the
    family's noise schedule (``scheduler_config``), not the pixel default."""

    scheduler_config: dict | None = None

    def get_trajectory(self, points: int | None = None) -> Trajectory:
        if (
            self.trajectory is not None
            or self.scheduler_config is None
            or self.ddim_steps is None
            or self.sample_seed is None
        ):
            return super().get_trajectory(points)
        traj = record_latent_trajectory(
            self.model,
            self.n_gen,
            ddim_steps=self.ddim_steps,
            seed=self.sample_seed,
            start=self.sample_start,
            shape=tuple(self.x0_gen.shape[1:]),
            scheduler_config=self.scheduler_config,
            device=self.device,
        )
        _check_ends_at(traj, self.x0_gen)
        return traj if points is None else traj.select(points)


@torch.no_grad()
def record_latent_trajectory(
    model: nn.Module,
    num_samples: int,
    *,
    ddim_steps: int,
    seed: int,
    start: int,
    shape: tuple[int, ...],
    scheduler_config: dict,
    device: torch.device,
    batch_size: int = 500,
):
    """Every DDIM state of ``num_samples`` latent samples under ``scheduler_config`` (the
    same noise and steps as ``LatentFamily.sample``); final latents unclamped."""
    was_training = model.training
    model.eval()
    try:
        run = ddim_run(
            lambda x, t, _c: model(x, t).sample,
            shape,
            num_samples,
            ddim_steps=ddim_steps,
            seed=seed,
            batch_size=batch_size,
            device=device,
            start=start,
            scheduler_config=scheduler_config,
            keep_steps=range(ddim_steps),
        )
    finally:
        model.train(was_training)
    return Trajectory(
        states=run.states,
        timesteps=run.timesteps.long().cpu(),
        steps=run.steps,
        final=run.final,
        ddim_steps=ddim_steps,
        seed=seed,
        start=start,
    )
