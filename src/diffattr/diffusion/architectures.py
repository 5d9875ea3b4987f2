"""UNet architectures by name and the noise schedule: plain data, no torch.

``UNET_ARCHITECTURES`` are diffusers ``UNet2DModel`` keyword arguments:

* ``tiny``: digits scale (8x8), ~0.27 M parameters, fast on a CPU;
* ``small``: 16-28 px images, ~1.1 M parameters, attention at the lowest resolution;
* ``ddpm-cifar``: the DDPM CIFAR-10 UNet (Ho et al. 2020; google/ddpm-cifar10-32 layout):
  channels 128/256/256/256, two ResNet blocks per level, attention at 16x16, ~35.7 M
  parameters (the paper's CIFAR-20 model).
"""

from __future__ import annotations

from typing import Any

# Linear beta schedule 1e-4 .. 0.02 over T = 1000 steps (Ho et al. 2020), as in the paper.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
}

UNET_ARCHITECTURES: dict[str, dict[str, Any]] = {
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


def downsampling_factor(architecture: str) -> int:
    """How many times the UNet halves its input: image sizes must be multiples of this."""
    return 2 ** (len(UNET_ARCHITECTURES[architecture]["block_out_channels"]) - 1)
