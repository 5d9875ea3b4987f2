"""diffusers ``UNet2DModel`` presets and the noise schedule shared by every model.

Presets:
    tiny: digits scale (8x8), ~0.27 M parameters, fast on a CPU.
    small: 16-28 px images, ~1.1 M parameters, attention at the lowest resolution.
    ddpm-cifar: the DDPM CIFAR-10 UNet (Ho et al. 2020; google/ddpm-cifar10-32 layout):
        channels 128/256/256/256, two ResNet blocks per level, attention at 16x16,
        about 35.7 M parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from diffattr.errors import DiffattrError

# Linear beta schedule 1e-4 .. 0.02 over T = 1000 steps (Ho et al. 2020), as in the paper.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ),
    "small": dict(
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=32,
    ),
    "ddpm-cifar": dict(
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=None,
        dropout=0.1,
    ),
}


def make_unet(preset: str, image_size: int, channels: int, seed: int = 0) -> UNet2DModel:
    """A freshly initialised UNet; the same (preset, size, channels, seed) gives the same weights.

    This initialisation is also the *null model* whose behaviour is F(empty set).
    """
    if preset not in PRESETS:
        raise DiffattrError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    levels = len(cfg["block_out_channels"])
    if image_size % (2 ** (levels - 1)) != 0:
        raise DiffattrError(
            f"preset {preset!r} halves the image {levels - 1} times; "
            f"image size {image_size} must be divisible by {2 ** (levels - 1)}"
        )
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels, **cfg
        )


def make_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER_CONFIG)


def make_ddim(num_inference_steps: int) -> DDIMScheduler:
    sched = DDIMScheduler.from_config(make_scheduler().config)
    sched.set_timesteps(num_inference_steps)
    return sched


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
