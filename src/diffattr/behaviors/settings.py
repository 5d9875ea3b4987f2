"""Typed settings of the behaviors (``BEHAVIORS``) and the ``[behaviors]`` section of a run
(``BehaviorsSettings``); the feature spaces they are measured in are in
``diffattr.behaviors.spaces``, and the plan-time checks and output keys in
``diffattr.behaviors.resolve``. pydantic only: a run plan is
checked (``check_settings``) before torch is imported or anything is trained.

Behaviors
---------
``BEHAVIORS`` holds one settings class per behavior; ``measure`` lists them, a string
``"fid"`` being short for ``{name = "fid"}``. Every behavior may name its own ``features``
(e.g. an aesthetic score in CLIP space beside FID in the package's space); a behavior may be
listed twice only in different spaces.

Local behaviors
---------------
``ssim``, ``nrmse``, ``mse`` (pixels, key ``ssim[pixel]``), ``denoising-loss`` (the model's
epsilon-prediction loss, key ``denoising-loss[model]``) and ``clip-similarity`` (cosine of
CLIP image embeddings, key ``clip-similarity[clip]``; needs a ``clip`` feature space) give one
number per generated image, measured against the full model's image for the same seed
(``diffattr.behaviors.local``; the paper's code keeps them as ``generated_image_{i}_*``).
A job records every image's value (``JobRecord.local``) and their mean as a behavior;
``[attribution] local`` says whether the estimators fit one attribution per generated image
(``per-image``, the paper's LDS per image, averaged) or one for the mean.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from diffattr.behaviors.spaces import (
    FEATURES,
    AutoFeatures,
    FeatureSettings,
    resolve_features,
)
from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry, Settings, format_validation_error

# ----------------------------------------------------------------------------- behaviors


class BehaviorSettings(Component):
    """Settings every behavior shares.

    Class variables: ``higher_is_better``, ``needs_probs`` (class probabilities),
    ``needs_space`` (a feature space it must be measured in, e.g. ``clip``),
    ``description``.
    """

    kind: ClassVar[str] = "behavior"
    higher_is_better: ClassVar[bool] = True
    #: one value per generated image against the full model's image (``LocalSettings``)
    local: ClassVar[bool] = False
    needs_probs: ClassVar[bool] = False
    needs_space: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    features: SerializeAsAny[FeatureSettings] | None = Field(
        None, description="measure this behavior in another feature space than the section's"
    )

    @field_validator("features", mode="before")
    @classmethod
    def _parse_features(cls, v: Any) -> Any:
        return v if v is None else FEATURES.parse_nested(v)


BEHAVIORS: ComponentRegistry[BehaviorSettings] = ComponentRegistry("behavior", BehaviorSettings)

_M = "diffattr.behaviors.measures"


@BEHAVIORS.register
class FIDSettings(BehaviorSettings):
    name: Literal["fid"] = "fid"
    implementation: ClassVar[str] = f"{_M}:FID"
    higher_is_better: ClassVar[bool] = False
    description: ClassVar[str] = "Frechet distance to the reference features (Heusel et al. 2017)"


@BEHAVIORS.register
class ISSettings(BehaviorSettings):
    name: Literal["is"] = "is"
    implementation: ClassVar[str] = f"{_M}:InceptionScore"
    needs_probs: ClassVar[bool] = True
    description: ClassVar[str] = "Inception Score of the space's classifier (Salimans et al. 2016)"
    splits: int = Field(1, ge=1, description="consecutive splits, mean reported (the paper: 1)")


@BEHAVIORS.register
class PrecisionSettings(BehaviorSettings):
    name: Literal["precision"] = "precision"
    implementation: ClassVar[str] = f"{_M}:Precision"
    description: ClassVar[str] = "share inside the reference k-NN manifold (Kynkaanniemi 2019)"
    k: int = Field(3, ge=1, description="neighbourhood size (Kynkaanniemi et al.: 3)")


@BEHAVIORS.register
class RecallSettings(BehaviorSettings):
    name: Literal["recall"] = "recall"
    implementation: ClassVar[str] = f"{_M}:Recall"
    description: ClassVar[str] = "share of reference inside the generated manifold (Kynkaanniemi)"
    k: int = Field(3, ge=1, description="neighbourhood size (Kynkaanniemi et al.: 3)")


@BEHAVIORS.register
class DensitySettings(BehaviorSettings):
    name: Literal["density"] = "density"
    implementation: ClassVar[str] = f"{_M}:Density"
    description: ClassVar[str] = "mean count of reference k-NN balls holding an image (Naeem)"
    k: int = Field(5, ge=1, description="neighbourhood size (Naeem et al.: 5)")


@BEHAVIORS.register
class CoverageSettings(BehaviorSettings):
    name: Literal["coverage"] = "coverage"
    implementation: ClassVar[str] = f"{_M}:Coverage"
    description: ClassVar[str] = "share of reference k-NN balls holding an image (Naeem 2020)"
    k: int = Field(5, ge=1, description="neighbourhood size (Naeem et al.: 5)")


@BEHAVIORS.register
class ClassEntropySettings(BehaviorSettings):
    name: Literal["class-entropy"] = "class-entropy"
    implementation: ClassVar[str] = f"{_M}:ClassEntropy"
    needs_probs: ClassVar[bool] = True
    description: ClassVar[str] = "entropy (bits) of the predicted-class histogram"


@BEHAVIORS.register
class ClusterEntropySettings(BehaviorSettings):
    name: Literal["cluster-entropy"] = "cluster-entropy"
    implementation: ClassVar[str] = f"{_M}:ClusterEntropy"
    description: ClassVar[str] = "entropy (bits) over k-means clusters of the reference"
    clusters: int = Field(20, ge=1, description="k-means clusters of the reference features")


@BEHAVIORS.register
class DiversityEntropySettings(BehaviorSettings):
    """The paper's CelebA-HQ diversity: Ward clusters of a fixed reference set, entropy of the
    generated images' cluster proportions (see ``diffattr.behaviors.diversity``)."""

    name: Literal["diversity-entropy"] = "diversity-entropy"
    implementation: ClassVar[str] = f"{_M}:DiversityEntropy"
    description: ClassVar[str] = "entropy (bits) over Ward clusters of the reference (the paper)"
    clusters: int = Field(20, ge=1, description="Ward clusters of the reference (the paper: 20)")
    similarity: Literal["cosine", "dot"] = Field(
        "cosine",
        description="cosine similarity; 'dot' = raw dot products as the authors' code",
    )
    max_reference: int = Field(
        5000, ge=2, description="reference images clustered (a seeded subsample above this)"
    )


class _AestheticSettings(BehaviorSettings):
    implementation: ClassVar[str] = f"{_M}:Aesthetic"
    needs_space: ClassVar[str | None] = "clip"
    statistic: ClassVar[str] = "mean"
    head: str = Field(
        ...,
        description="LAION aesthetic head (768 -> 1), e.g. sa_0_4_vit_l_14_linear as "
        ".safetensors or a torch state dict (.pth, loaded with weights_only=True)",
    )


@BEHAVIORS.register
class AestheticMeanSettings(_AestheticSettings):
    name: Literal["aesthetic-mean"] = "aesthetic-mean"
    description: ClassVar[str] = "mean LAION aesthetic score (CLIP ViT-L/14)"


@BEHAVIORS.register
class AestheticP50Settings(_AestheticSettings):
    name: Literal["aesthetic-p50"] = "aesthetic-p50"
    statistic: ClassVar[str] = "p50"
    description: ClassVar[str] = "median LAION aesthetic score (CLIP ViT-L/14)"


@BEHAVIORS.register
class AestheticP75Settings(_AestheticSettings):
    name: Literal["aesthetic-p75"] = "aesthetic-p75"
    statistic: ClassVar[str] = "p75"
    description: ClassVar[str] = "75th-percentile LAION aesthetic score (CLIP ViT-L/14)"


@BEHAVIORS.register
class AestheticP90Settings(_AestheticSettings):
    name: Literal["aesthetic-p90"] = "aesthetic-p90"
    statistic: ClassVar[str] = "p90"
    description: ClassVar[str] = "90th-percentile LAION aesthetic score (the paper's ArtBench)"


# ----------------------------------------------------------------------------- local


class LocalSettings(BehaviorSettings):
    """A local behavior: one value per generated image i, measured against the full
    model's image i (same seed and noise); ``space`` is what its key shows."""

    local: ClassVar[bool] = True
    implementation: ClassVar[str] = "diffattr.behaviors.local_suite:LocalSuite"
    space: ClassVar[str | None] = "pixel"  # None: the behavior's feature space


@BEHAVIORS.register
class SSIMSettings(LocalSettings):
    name: Literal["ssim"] = "ssim"
    description: ClassVar[str] = "SSIM to the full model's image, per image (Wang et al. 2004)"


@BEHAVIORS.register
class NRMSESettings(LocalSettings):
    name: Literal["nrmse"] = "nrmse"
    higher_is_better: ClassVar[bool] = False
    description: ClassVar[str] = "||full - image|| / ||full|| per image (pixels in [0, 1])"


@BEHAVIORS.register
class MSESettings(LocalSettings):
    name: Literal["mse"] = "mse"
    higher_is_better: ClassVar[bool] = False
    description: ClassVar[str] = "mean squared error to the full model's image, per image"


@BEHAVIORS.register
class DenoisingLossSettings(LocalSettings):
    """The model's epsilon-prediction loss on the full model's generated image i (in the
    model's space: latents for a latent model), at ``timesteps`` evenly spaced training
    timesteps with ``noises`` fixed noises each (the paper's "simple diffusion loss")."""

    name: Literal["denoising-loss"] = "denoising-loss"
    higher_is_better: ClassVar[bool] = False
    space: ClassVar[str | None] = "model"
    description: ClassVar[str] = "epsilon-prediction loss on the full model's image, per image"
    timesteps: int = Field(10, ge=1, le=1000, description="evenly spaced timesteps 0..T-1")
    noises: int = Field(1, ge=1, description="fixed noises per timestep")
    seed: int = Field(0, ge=0, description="seed of the fixed noises")


@BEHAVIORS.register
class ClipSimilaritySettings(LocalSettings):
    name: Literal["clip-similarity"] = "clip-similarity"
    needs_space: ClassVar[str | None] = "clip"
    space: ClassVar[str | None] = None
    description: ClassVar[str] = "cosine of CLIP image embeddings with the full model's image"


LOCAL = ("ssim", "nrmse", "mse", "denoising-loss", "clip-similarity")

# Canonical order of the behaviors (tables, CLI defaults).
ORDER = (
    "fid",
    "is",
    "precision",
    "recall",
    "density",
    "coverage",
    "class-entropy",
    "cluster-entropy",
    "diversity-entropy",
    "aesthetic-mean",
    "aesthetic-p50",
    "aesthetic-p75",
    "aesthetic-p90",
    *LOCAL,
)


# ----------------------------------------------------------------------------- the section


class BehaviorsSettings(Settings):
    """The ``[behaviors]`` section of a run::

    [behaviors]
    features = "auto"            # or { name = "clip", path = "/models/clip-vit-l-14" }
    reference = "train"          # or a folder of curated real images
    measure = ["fid", "is", { name = "precision", k = 3 }]
    """

    features: SerializeAsAny[FeatureSettings] = Field(
        default_factory=AutoFeatures,
        description="feature space of the behaviors: auto | " + " | ".join(FEATURES.names()),
    )
    reference: str = Field(
        "train",
        description="real images to compare with: 'train' (the full training data, the "
        "paper's choice) or a local folder of curated real images",
    )
    measure: list[SerializeAsAny[BehaviorSettings]] | None = Field(
        None,
        description="behaviors F: names or tables { name = ..., setting = ... }; default: "
        "fid and is, or fid, precision and recall in a label-free space",
    )
    batch_size: int = Field(256, ge=1, description="images per feature-extractor batch")
    manifold_size: int | None = Field(
        None,
        ge=2,
        description="reference points of the k-NN manifolds (precision/recall, "
        "density/coverage); default: as many as generated images (Kynkaanniemi et al.)",
    )
    seed: int = Field(0, description="seed of trained spaces, subsamples and clusterings")

    @field_validator("features", mode="before")
    @classmethod
    def _parse_features(cls, v: Any) -> Any:
        return FEATURES.parse_nested(v)

    @field_validator("measure", mode="before")
    @classmethod
    def _parse_measure(cls, v: Any) -> Any:
        if v is None:
            return None
        v = _measure_list(v)
        out = []
        for i, item in enumerate(v):
            try:
                out.append(BEHAVIORS.parse_nested(item))
            except ValueError as e:
                raise ValueError(f"[{i}]: {e}") from None
        return out

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give 'train' or a folder of real images")
        return v

    def resolved(self, dataset_name: str, has_semantic_labels: bool) -> BehaviorsSettings:
        """These settings with ``measure`` explicit: the default is FID and IS where the
        feature space has class probabilities, else FID, precision and recall (a label-free
        space has no Inception Score)."""
        if self.measure is not None:
            return self
        space = resolve_features(self.features, dataset_name, has_semantic_labels)
        default = (
            [FIDSettings(), ISSettings()]
            if space.has_probs
            else [FIDSettings(), PrecisionSettings(), RecallSettings()]
        )
        return self.model_copy(update={"measure": default})

    @model_validator(mode="after")
    def _distinct(self) -> BehaviorsSettings:
        seen: set[tuple[str, str]] = set()
        for b in self.measure or ():
            space = b.features.model_dump_json() if b.features is not None else ""
            if (b.name, space) in seen:
                where = " in the same feature space" if space else ""
                raise ValueError(f"behavior {b.name!r} is listed twice{where}")
            seen.add((b.name, space))
        return self


def parse_behaviors(value: Any = None, where: str = "behaviors") -> BehaviorsSettings:
    """A ``[behaviors]`` table (or settings object, or None for the defaults) -> settings;
    errors are one-line ``DiffattrError`` messages."""
    if isinstance(value, BehaviorsSettings):
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise DiffattrError(f"{where}: expected a table, got {value!r}")
    data = dict(value)
    # Nested components parsed here so that errors name their exact place.
    if "features" in data:
        data["features"] = FEATURES.parse(data["features"], f"{where}.features")
    if "measure" in data:
        try:
            items = _measure_list(data["measure"])
        except ValueError as e:
            raise DiffattrError(f"{where}.measure: {e}") from None
        data["measure"] = [
            BEHAVIORS.parse(item, f"{where}.measure[{i}]") for i, item in enumerate(items)
        ]
    try:
        return BehaviorsSettings.model_validate(data)
    except ValidationError as e:
        raise DiffattrError(format_validation_error(e, where, BehaviorsSettings)) from None


def _measure_list(v: Any) -> list:
    if isinstance(v, str | dict | BehaviorSettings):
        v = [v]
    if not isinstance(v, list | tuple):
        raise ValueError("give a list of behavior names or tables")
    if not v:
        raise ValueError("name at least one behavior; choose from: " + ", ".join(ORDER))
    return list(v)
