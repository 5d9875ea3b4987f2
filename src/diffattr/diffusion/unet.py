"""diffusers ``UNet2DModel`` architectures and the noise schedule shared by every model.

The architectures (``tiny``, ``small``, ``ddpm-cifar``) and the schedule are plain data in
``diffattr.diffusion.architectures``; this module builds the torch objects.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from diffattr.diffusion.architectures import (
    SCHEDULER_CONFIG,
    UNET_ARCHITECTURES,
    downsampling_factor,
)
from diffattr.errors import DiffattrError


def make_unet(
    architecture: str,
    image_size: int,
    channels: int,
    seed: int = 0,
    num_class_embeds: int | None = None,
) -> UNet2DModel:
    """A freshly initialised UNet; the same (architecture, size, channels, seed) gives the
    same weights. This initialisation is also the *null model* whose behaviour is F(empty).
    ``num_class_embeds``: a class embedding added to the time embedding (class-conditional
    models; diffusers' ``class_labels`` input)."""
    if architecture not in UNET_ARCHITECTURES:
        raise DiffattrError(
            f"unknown UNet architecture {architecture!r}; choose one of: "
            f"{', '.join(UNET_ARCHITECTURES)}"
        )
    check_image_size(architecture, image_size)
    cfg = dict(UNET_ARCHITECTURES[architecture])
    if num_class_embeds is not None:
        cfg["num_class_embeds"] = int(num_class_embeds)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels, **cfg
        )


def check_image_size(architecture: str, image_size: int) -> None:
    factor = downsampling_factor(architecture)
    if image_size % factor != 0:
        raise DiffattrError(
            f"UNet architecture {architecture!r} halves the image "
            f"{factor.bit_length() - 1} times; image size {image_size} must be divisible by "
            f"{factor} (set [data] image_size)"
        )


def make_scheduler(config: dict | None = None) -> DDPMScheduler:
    return DDPMScheduler(**(config or SCHEDULER_CONFIG))


def make_ddim(num_inference_steps: int, config: dict | None = None) -> DDIMScheduler:
    sched = DDIMScheduler.from_config(make_scheduler(config).config)
    sched.set_timesteps(num_inference_steps)
    return sched
