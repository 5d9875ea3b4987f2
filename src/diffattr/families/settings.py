"""Typed settings of the model families (the ``[family]`` table of a run); pydantic only.

A model family says what kind of diffusion model is attributed and owns everything that
differs between kinds (see ``diffattr.families.base.ModelFamily``): how the base model is
built or loaded, which parameters train, how examples are encoded, how samples are drawn,
how the model is pruned and saved.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from diffattr.data.settings import FASHION_MNIST_DIR, fashion_class_ids
from diffattr.diffusion.architectures import UNET_ARCHITECTURES
from diffattr.settings import Component, ComponentRegistry, Settings

Architecture = Literal[tuple(UNET_ARCHITECTURES)]  # type: ignore[valid-type]


class FamilySettings(Component):
    kind: ClassVar[str] = "model family"
    #: What each generated sample is conditioned on, drawn from a coalition's own data
    #: (e.g. "class labels"); None for a family whose samples take no condition from the
    #: data. Training-free methods (``surrogate``) need one.
    conditions: ClassVar[str | None] = None
    #: Why the family's models train one at a time, or None when several coalition models
    #: can train and sample side by side (``diffusion.stacked``; ``[executor]
    #: jobs_per_batch``). Shown in the plan.
    unstacked: ClassVar[str | None] = (
        "its models train one at a time (side by side is built for the unconditional pixel family)"
    )

    def build(self, device: str = "cpu"):
        """The family object (``ModelFamily``) for these settings."""
        return self.implementation_class()(self, device)


FAMILIES: ComponentRegistry[FamilySettings] = ComponentRegistry("model family", FamilySettings)


@FAMILIES.register
class UnconditionalSettings(FamilySettings):
    """A pixel-space ``UNet2DModel`` trained from scratch by the package (DDPM, Ho et al.)."""

    name: Literal["unconditional"] = "unconditional"
    implementation: ClassVar[str] = "diffattr.families.unconditional:UnconditionalFamily"
    unstacked: ClassVar[str | None] = None
    architecture: Architecture = Field(
        "tiny", description=f"UNet2DModel layout: {' | '.join(UNET_ARCHITECTURES)}"
    )
    seed: int = Field(0, description="initialisation seed (also the null model's weights)")


@FAMILIES.register
class ConditionalSettings(FamilySettings):
    """``conditional``: a class-conditional pixel-space ``UNet2DModel`` with classifier-free
    guidance (Ho & Salimans 2022), trained from scratch by the package.

    The UNet has ``num_class_embeds = classes + 1`` (the last index is the null label).
    Training replaces each example's label by the null label with probability
    ``label_dropout``; sampling mixes eps = eps_null + s (eps_cond - eps_null) with
    s = ``guidance_scale`` (1: the plain conditional prediction). Labels are the data's
    semantic classes (digits / Fashion-MNIST / CIFAR classes, a CSV's ``label`` column).
    How a coalition's model chooses the labels it generates: see
    ``diffattr.diffusion.sample.draw_labels``.
    """

    name: Literal["conditional"] = "conditional"
    implementation: ClassVar[str] = "diffattr.families.conditional:ConditionalFamily"
    conditions: ClassVar[str | None] = "class labels"
    unstacked: ClassVar[str | None] = None
    architecture: Architecture = Field(
        "tiny", description=f"UNet2DModel layout: {' | '.join(UNET_ARCHITECTURES)}"
    )
    label_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of training labels replaced by the null label (trains the "
        "unconditional prediction that guidance needs)",
    )
    guidance_scale: float = Field(
        1.4,
        ge=0,
        description="classifier-free guidance s: eps_null + s (eps_cond - eps_null); 1: the "
        "conditional prediction, 0: unconditional (1.4: SurrogateSHAP's CIFAR-20 setting)",
    )
    seed: int = Field(0, description="initialisation seed (also the null model's weights)")

    @model_validator(mode="after")
    def _guidance_needs_null_label(self) -> ConditionalSettings:
        if self.label_dropout == 0 and self.guidance_scale != 1:
            raise ValueError(
                "guidance_scale != 1 needs the null label trained: set label_dropout > 0, "
                "or guidance_scale = 1"
            )
        return self


def family_of(model_dir, device: str = "cpu"):
    """The family (object) recorded in a model directory's ``diffattr.json``; a model with
    no record is a pixel-space UNet (``unconditional``). A diffusers pipeline directory
    without ``diffattr.json`` gets the family of its layout (``family_for_dir``)."""
    from pathlib import Path

    from diffattr.diffusion.checkpoint import read_meta  # torch: only when a model dir is read

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
    (``diffattr.families.vae``). Sized for 8-32 px grey or RGB images."""

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
    unstacked: ClassVar[str | None] = None
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


# --------------------------------------------------------------------------- text-to-image

#: LoRA targets of the paper's Stable Diffusion set-up: every attention projection (self and
#: cross attention) of the UNet.
LORA_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


#: Fashion-MNIST class ids the demo base is pretrained on (tops, trousers, bags) ...
DEMO_BASE_CLASSES = (0, 1, 2, 3, 4, 6, 8)
#: ... and those its LoRA teaches (footwear): ``diffattr.data.settings.DEMO_LORA_CLASSES``.


class DemoBaseSettings(Settings):
    """The embedded demo base (``[family] base = "demo"``): a small Stable-Diffusion-style
    pipeline the package builds and pretrains itself (no downloaded weights exist offline).

    A CLIP text encoder with random frozen weights and a tokenizer whose vocabulary the
    package writes, a small ``AutoencoderKL`` (16 px grey images -> 4 x 8 x 8 latents) and a
    small ``UNet2DConditionModel`` trained on captioned Fashion-MNIST *training* images of
    ``classes`` ("a photo of a t-shirt", ...), with captions dropped at ``caption_dropout``
    so that classifier-free guidance works. Cached under the run's cache folder, keyed by
    these settings and the IDX files' content.
    """

    path: str = Field(FASHION_MNIST_DIR, description="Fashion-MNIST IDX directory")
    image_size: int = Field(16, ge=8, description="image size (a multiple of 4)")
    classes: list[int] = Field(
        default_factory=lambda: list(DEMO_BASE_CLASSES),
        min_length=1,
        description="Fashion-MNIST classes the base is pretrained on (training split)",
    )
    per_class: int = Field(600, ge=1, description="pretraining images per class")
    vae_steps: int = Field(1500, ge=1, description="autoencoder training steps")
    unet_steps: int = Field(3000, ge=1, description="UNet pretraining steps")
    batch_size: int = Field(32, ge=1, description="pretraining batch size")
    lr: float = Field(2e-3, gt=0, description="pretraining Adam learning rate")
    caption_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of captions replaced by the empty prompt"
    )
    seed: int = Field(0, description="seed of the weights and of the pretraining batches")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_4(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"must be a multiple of 4 (the autoencoder and UNet halve it): {v}")
        return v

    @field_validator("classes")
    @classmethod
    def _class_ids(cls, v: list[int]) -> list[int]:
        return fashion_class_ids(v)


@FAMILIES.register
class TextToImageSettings(FamilySettings):
    """``text-to-image``: a LoRA on the UNet of a frozen Stable-Diffusion-style pipeline.

    The attributed model is the LoRA (Hu et al. 2022) trained on the contributors' captioned
    images; the base pipeline stays frozen and the null model is the base without LoRA
    (the paper's ArtBench set-up: miniSD + a rank-256 LoRA on the attention projections).
    ``base`` is a local diffusers directory (``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``; nothing is downloaded) or ``demo``, the embedded model.

    sFT's ``[method]`` settings map onto LoRA pruning: ``ratio`` is the share of LoRA
    parameters *removed* (whole rank-1 components; the paper keeps 50 %, ratio = 0.5) and
    ``pruner`` the component importance (see ``diffattr.sparsify.lora``).
    """

    name: Literal["text-to-image"] = "text-to-image"
    implementation: ClassVar[str] = "diffattr.families.text_to_image:TextToImageFamily"
    base: str = Field(
        "demo", description="local diffusers pipeline directory, or 'demo' (embedded model)"
    )
    # (a dict default, validated into the model: plain data where defaults are printed)
    demo: DemoBaseSettings = Field(
        default_factory=dict,
        validate_default=True,
        description="the embedded demo base (base = 'demo')",
    )
    prompt: str | None = Field(
        None, description="caption of images without one; the generation prompt by default"
    )
    prompts: list[str] = Field(
        default_factory=list,
        description="generation prompts, sample i gets prompts[i % len]; default: [prompt], "
        "else the distinct training captions",
    )
    generate_with: Literal["prompts", "captions"] = Field(
        "prompts",
        description="what each generated sample is prompted with: 'prompts' (the fixed "
        "generation prompts, the same for every model) or 'captions' (the captions of the "
        "model's own training data, drawn in proportion to their frequencies: the "
        "prompt-level game of method 'surrogate')",
    )
    guidance_scale: float = Field(
        1.0,
        ge=0.0,
        description="classifier-free guidance scale with the empty prompt (1: none, the "
        "conditional prediction; SD uses 7.5; 0: unconditional)",
    )
    rank: int = Field(8, ge=1, description="LoRA rank r (the paper: 256)")
    alpha: float | None = Field(
        None, gt=0, description="LoRA alpha, the update is scaled by alpha/r (default: r)"
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_ATTENTION_TARGETS),
        min_length=1,
        description="UNet linear layers (names or name suffixes) that get adapters",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout on the adapters' input")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="dtype of the frozen UNet and text encoder (float16/bfloat16 on GPUs); "
        "the adapters and the autoencoder stay float32",
    )
    latent_sample: bool = Field(
        False, description="encode images to a seeded posterior sample instead of its mean"
    )
    seed: int = Field(0, description="initialisation seed of the full model's adapters")

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give 'demo' or a local diffusers pipeline directory")
        if "://" in v:
            raise ValueError(f"{v!r} is a URL; give a local diffusers directory (no downloads)")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("an empty prompt; leave it out or give text")
        return v

    @model_validator(mode="after")
    def _one_prompt_rule(self) -> TextToImageSettings:
        if self.generate_with == "captions" and self.prompts:
            raise ValueError(
                "generate_with = 'captions' prompts each model with its own data's captions; "
                "leave prompts unset (or set generate_with = 'prompts')"
            )
        return self

    @property
    def conditions(self) -> str | None:  # type: ignore[override]
        """Captions when each model is prompted with its own data's captions."""
        return "captions" if self.generate_with == "captions" else None

    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)
