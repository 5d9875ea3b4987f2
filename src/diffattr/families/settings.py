"""Typed settings of the model families (the ``[family]`` table of a run); pydantic only.

A model family says what kind of diffusion model is attributed and owns everything that
differs between kinds (see ``diffattr.families.base.ModelFamily``): how the base model is
built or loaded, which parameters train, how examples are encoded, how samples are drawn,
how the model is pruned and saved.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from diffattr.data.settings import DATASETS, DataSettings
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
    no record is a pixel-space UNet (``unconditional``)."""
    from diffattr.diffusion.checkpoint import read_meta

    recorded = (read_meta(model_dir).get("config") or {}).get("family") or "unconditional"
    return FAMILIES.parse(recorded, f"{model_dir}/diffattr.json: family").build(device)


# --------------------------------------------------------------------------- text-to-image

#: LoRA targets of the paper's Stable Diffusion set-up: every attention projection (self and
#: cross attention) of the UNet.
LORA_ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

#: Where Debian's ``dataset-fashion-mnist`` puts the IDX files (the embedded demo's source).
DEMO_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST class ids the demo base is pretrained on (tops, trousers, bags) ...
DEMO_BASE_CLASSES = (0, 1, 2, 3, 4, 6, 8)
#: ... and those its LoRA teaches (footwear), as ArtBench's LoRA teaches a painting style.
DEMO_LORA_CLASSES = (5, 7, 9)


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

    path: str = Field(DEMO_FASHION_MNIST_DIR, description="Fashion-MNIST IDX directory")
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
        if any(c < 0 or c > 9 for c in v) or len(set(v)) != len(v):
            raise ValueError(f"distinct Fashion-MNIST class ids 0..9, got {v}")
        return v


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

    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


class T2IDemoData(DataSettings):
    """The embedded demo's LoRA data: Fashion-MNIST footwear split among artists.

    Images of ``classes`` from the Fashion-MNIST *test* split (the demo base is pretrained on
    training-split images of other classes) split among ``contributors`` artists (each draws
    one class, a number of images around ``per_contributor``); the last ``noisy`` artists
    upload images corrupted by Gaussian noise of standard deviation ``noise`` (low-quality
    contributors). Every image has the one ``caption``, as every ArtBench image has "a
    Post-Impressionist painting": the LoRA learns what the prompt means from the artists
    who are present, so fine-tuning on a coalition changes what the prompt generates. With
    ``caption = "class"`` each image says "a photo of a <class>" instead.
    """

    name: Literal["t2i-demo"] = "t2i-demo"
    implementation: ClassVar[str] = "diffattr.families.tiny_t2i:load_demo_data"
    path: str = Field(DEMO_FASHION_MNIST_DIR, description="Fashion-MNIST IDX directory")
    image_size: int | None = Field(16, ge=4, description="image size (the demo base's)")
    classes: list[int] = Field(
        default_factory=lambda: list(DEMO_LORA_CLASSES),
        min_length=1,
        description="Fashion-MNIST classes of the LoRA data (test split)",
    )
    contributors: int = Field(20, ge=2, description="number of artists")
    per_contributor: int = Field(
        24, ge=2, description="mean images per artist (each draws from [n/2, 3n/2])"
    )
    noisy: int = Field(4, ge=0, description="artists whose images are corrupted")
    noise: float = Field(0.6, ge=0, description="noise standard deviation of those images")
    caption: str = Field(
        "a photo of a shoe",
        description="the caption of every image (the style prompt), or 'class' for "
        "'a photo of a <class>'",
    )
    seed: int = Field(0, description="seed of the split")

    @field_validator("classes")
    @classmethod
    def _class_ids(cls, v: list[int]) -> list[int]:
        if any(c < 0 or c > 9 for c in v) or len(set(v)) != len(v):
            raise ValueError(f"distinct Fashion-MNIST class ids 0..9, got {v}")
        return v

    @model_validator(mode="after")
    def _noisy_fewer(self) -> T2IDemoData:
        if self.noisy >= self.contributors:
            raise ValueError("noisy must be smaller than contributors")
        return self


# The demo's data are a dataset of their own; registered here, beside the family that builds
# the matching base, so that `[data] name = "t2i-demo"` exists wherever a RunConfig does.
DATASETS.register(T2IDemoData)
