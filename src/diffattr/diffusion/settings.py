"""Settings of the diffusion stage every family shares: the training recipe of the full
model (and of retraining from scratch) and how every model of a run is sampled. pydantic
only; ``diffattr.config`` assembles them into a run's ``[train]`` and ``[sample]``."""

from __future__ import annotations

from pydantic import Field

from diffattr.settings import Settings


class TrainConfig(Settings):
    """The training recipe of the full model (and of retraining from scratch)."""

    steps: int = Field(4000, ge=1, description="optimisation steps")
    batch_size: int = Field(
        128,
        ge=1,
        description="images per step (digits, IS: 128 x 4,000 steps 8.0; 64 x 3,000 steps 7.0)",
    )
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="EMA max decay; warm-up min(decay, (1+s)/(10+s))"
    )
    hflip: bool = Field(False, description="random horizontal flips (off for digits)")
    seed: int = Field(0, description="seed of batches, timesteps and noise")
    checkpoint_every: int = Field(1000, ge=1, description="steps between resumable checkpoints")


class SampleConfig(Settings):
    """How every model of a run is sampled (the same noise for every model)."""

    num_samples: int = Field(1000, ge=2, description="images generated per model")
    ddim_steps: int = Field(100, ge=1, description="DDIM steps (eta = 0)")
    batch_size: int = Field(500, ge=1, description="images per sampling batch")
    seed: int = Field(0, description="sample i always starts from the noise of (seed, i)")


__all__ = ["SampleConfig", "TrainConfig"]
