"""Typed settings of the model families (the ``[family]`` table of a run); pydantic only.

A model family says what kind of diffusion model is attributed and owns everything that
differs between kinds (see ``diffattr.families.base.ModelFamily``): how the base model is
built or loaded, which parameters train, how examples are encoded, how samples are drawn,
how the model is pruned and saved.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from diffattr.diffusion.architectures import UNET_ARCHITECTURES
from diffattr.settings import Component, ComponentRegistry, Settings

Architecture = Literal[tuple(UNET_ARCHITECTURES)]  # type: ignore[valid-type]


class FamilySettings(Component):
    kind: ClassVar[str] = "model family"

    def build(self, device: str = "cpu"):
        """The family object (``ModelFamily``) for these settings."""
        return self.implementation_class()(self, device)


FAMILIES: ComponentRegistry[FamilySettings] = ComponentRegistry("model family", FamilySettings)


@FAMILIES.register
class UnconditionalSettings(FamilySettings):
    """A pixel-space ``UNet2DModel`` trained from scratch by the package (DDPM, Ho et al.)."""

    name: Literal["unconditional"] = "unconditional"
    implementation: ClassVar[str] = "diffattr.families.unconditional:UnconditionalFamily"
    architecture: Architecture = Field(
        "tiny", description=f"UNet2DModel layout: {' | '.join(UNET_ARCHITECTURES)}"
    )
    seed: int = Field(0, description="initialisation seed (also the null model's weights)")


def parse_family(value: Any, where: str = "family") -> FamilySettings:
    return FAMILIES.parse(value, where)


def family_of(model_dir, device: str = "cpu"):
    """The family (object) recorded in a model directory's ``diffattr.json``; a model with
    no record is a pixel-space UNet (``unconditional``). A diffusers pipeline directory
    without ``diffattr.json`` gets the family of its layout (``family_for_dir``)."""
    from pathlib import Path

    from diffattr.diffusion.checkpoint import read_meta

    if not (Path(model_dir) / "diffattr.json").is_file():
        settings = family_for_dir(model_dir)
        if settings is not None:
            return settings.build(device)
    recorded = (read_meta(model_dir).get("config") or {}).get("family") or "unconditional"
    return FAMILIES.parse(recorded, f"{model_dir}/diffattr.json: family").build(device)


# --------------------------------------------------------------------------- latent diffusion

#: ``UNet2DModel`` layouts of the latent denoiser (keyword arguments; plain data):
#:
#: * ``latent-tiny``: CPU-sized (~0.6 M parameters on 4-channel latents): two levels,
#:   attention with 8-dim heads at the lower one;
#: * ``latent-small``: three levels, 16-dim heads at the two lower ones;
#: * ``ldm-celebahq``: the ``CompVis/ldm-celebahq-256`` UNet (Rombach et al. 2022; the
#:   paper's CelebA-HQ model, 274 M parameters on 3x64x64 VQ latents): channels
#:   224/448/672/896, two ResNet blocks per level, attention with 32-dim heads at the three
#:   lower levels and in the middle block, 32 group-norm groups.
LATENT_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "latent-tiny": dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    ),
    "latent-small": dict(
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=16,
    ),
    "ldm-celebahq": dict(
        block_out_channels=(224, 448, 672, 896),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=32,
    ),
}


class OwnAutoencoderSettings(Settings):
    """The recipe of the package's own ``AutoencoderKL`` (``autoencoder = "train"``; the
    ``ae_*`` settings of ``[family]``): trained on the run's training images, seeded and
    deterministic, cached by content under the run's cache folder
    (``diffattr.families.autoencoder``). Sized for 8-32 px grey or RGB images."""

    latent_channels: int = Field(4, ge=1, le=16, description="latent channels")
    downsample: int = Field(
        2, ge=1, le=3, description="halvings of the image side: latents are 2^d times smaller"
    )
    width: int = Field(16, ge=8, description="channels of the first level (doubled below)")
    steps: int = Field(1000, ge=1, description="optimisation steps (Adam, cosine decay)")
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")
    kl_weight: float = Field(
        1e-3, ge=0, description="weight of the per-pixel KL term against the pixel MSE"
    )
    seed: int = Field(0, description="seed of the initialisation, batches and posterior noise")


@FAMILIES.register
class LatentSettings(FamilySettings):
    """``latent``: a UNet denoising the latents of a frozen autoencoder (LDM; Rombach et al.
    2022), the paper's CelebA-HQ setting. Model directories are ``LDMPipeline``s."""

    name: Literal["latent"] = "latent"
    implementation: ClassVar[str] = "diffattr.families.latent:LatentFamily"
    autoencoder: str = Field(
        "train",
        description="'train' (the package's own, see the ae_* settings) or a local "
        "directory: a diffusers AutoencoderKL / VQModel, or a pipeline holding vqvae/ or vae/",
    )
    scaling_factor: float | None = Field(
        None,
        gt=0,
        description="latent scale (default: the autoencoder config's scaling_factor, else 1 "
        "as for the LDM VQ-VAE; the package's own: 1/std of its latents)",
    )
    architecture: str = Field(
        "latent-tiny",
        description=f"UNet2DModel layout: {' | '.join(LATENT_ARCHITECTURES)}, or a local "
        "directory whose unet/config.json (or config.json) gives it, e.g. your full model",
    )
    beta_schedule: Literal["scaled_linear", "linear"] = Field(
        "scaled_linear", description="noise schedule (the LDM: scaled_linear 0.0015 -> 0.0195)"
    )
    beta_start: float = Field(0.0015, gt=0, lt=1, description="first beta of the schedule")
    beta_end: float = Field(
        0.0195, gt=0, lt=1, description="last beta, above beta_start (T = 1000 steps)"
    )
    seed: int = Field(0, description="initialisation seed (also the null model's weights)")
    # the package's own autoencoder (autoencoder = "train"); see OwnAutoencoderSettings
    ae_latent_channels: int = Field(4, ge=1, le=16, description="own autoencoder: latent channels")
    ae_downsample: int = Field(
        2, ge=1, le=3, description="own autoencoder: halvings of the side (latents 2^d smaller)"
    )
    ae_width: int = Field(16, ge=8, description="own autoencoder: channels of the first level")
    ae_steps: int = Field(1000, ge=1, description="own autoencoder: training steps")
    ae_batch_size: int = Field(32, ge=1, description="own autoencoder: images per step")
    ae_lr: float = Field(2e-3, gt=0, description="own autoencoder: Adam learning rate")
    ae_kl_weight: float = Field(1e-3, ge=0, description="own autoencoder: weight of the KL term")
    ae_seed: int = Field(0, description="own autoencoder: seed of init, batches and noise")

    @field_validator("autoencoder")
    @classmethod
    def _autoencoder(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give 'train' or a local autoencoder directory")
        return v

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, v: str) -> str:
        if v in LATENT_ARCHITECTURES or "/" in v or "\\" in v:
            return v
        raise ValueError(
            f"unknown architecture {v!r}; choose one of: {', '.join(LATENT_ARCHITECTURES)}, "
            "or give a local model directory (a path)"
        )

    def architecture_is_preset(self) -> bool:
        return self.architecture in LATENT_ARCHITECTURES

    def own_autoencoder(self) -> OwnAutoencoderSettings:
        """The recipe of the package's own autoencoder (the ``ae_*`` settings)."""
        return OwnAutoencoderSettings(
            latent_channels=self.ae_latent_channels,
            downsample=self.ae_downsample,
            width=self.ae_width,
            steps=self.ae_steps,
            batch_size=self.ae_batch_size,
            lr=self.ae_lr,
            kl_weight=self.ae_kl_weight,
            seed=self.ae_seed,
        )

    def schedule_config(self) -> dict[str, Any]:
        """The diffusers scheduler config of the training noise schedule (no clipping:
        latents are not bounded)."""
        return {
            "num_train_timesteps": 1000,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": "epsilon",
            "clip_sample": False,
        }


# --------------------------------------------------------------------------- pipeline layouts

#: diffusers pipeline class (``model_index.json``) -> the family that models it.
PIPELINE_FAMILIES = {"DDPMPipeline": "unconditional", "LDMPipeline": "latent"}


def pipeline_class(model_dir) -> str | None:
    """The ``_class_name`` of a diffusers pipeline directory's ``model_index.json`` (None if
    the directory has none or it is unreadable)."""
    import json
    from pathlib import Path

    path = Path(model_dir) / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    name = index.get("_class_name") if isinstance(index, dict) else None
    return name if isinstance(name, str) else None


def family_for_layout(model_dir) -> str | None:
    """The family name of a model directory by its layout: ``unconditional`` for a
    ``DDPMPipeline``, ``latent`` for an ``LDMPipeline``; None for anything else."""
    return PIPELINE_FAMILIES.get(pipeline_class(model_dir) or "")


def family_for_dir(model_dir) -> FamilySettings | None:
    """Family settings for a diffusers pipeline directory the package did not train, from
    its layout: a ``DDPMPipeline`` is ``unconditional``; an ``LDMPipeline`` is ``latent``
    with the directory's own autoencoder and the noise schedule of its ``scheduler/``.
    None when the directory is no such pipeline."""
    import json
    from pathlib import Path

    name = family_for_layout(model_dir)
    if name == "unconditional":
        return UnconditionalSettings()
    if name != "latent":
        return None
    schedule: dict[str, Any] = {}
    path = Path(model_dir) / "scheduler" / "scheduler_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        cfg = {}
    if isinstance(cfg, dict):
        if cfg.get("beta_schedule") in ("linear", "scaled_linear"):
            schedule["beta_schedule"] = cfg["beta_schedule"]
        for key in ("beta_start", "beta_end"):
            if isinstance(cfg.get(key), int | float):
                schedule[key] = float(cfg[key])
    return FAMILIES.parse(
        {
            "name": "latent",
            "autoencoder": str(model_dir),
            "architecture": str(Path(model_dir).resolve()),
            **schedule,
        },
        f"{model_dir}: family",
    )
