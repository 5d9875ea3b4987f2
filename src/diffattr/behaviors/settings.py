"""Typed settings of the behaviors: feature spaces (``FEATURES``), behaviors (``BEHAVIORS``)
and the ``[behaviors]`` section of a run (``BehaviorsSettings``). pydantic only: a run plan is
checked (``check_settings``) before torch is imported or anything is trained.

Feature spaces
--------------
A global behavior of generated images (FID, IS, precision, ...) is measured in the space of a
feature extractor. Each key names its space: ``fid[digits-cnn]``, ``is[label-cnn]``,
``aesthetic-p90[clip]``. The spaces (``FEATURES``):

* ``digits-cnn``, ``fashion-mnist-cnn``, ``cifar-cnn`` (shown as ``cifar10-cnn``,
  ``cifar100-cnn`` or ``cifar20-cnn``): small CNN classifiers of a *named* dataset's semantic
  classes, trained here on that dataset's training split at the run's image size and
  channels, and cached. When the run's data are that dataset they are trained on the run's
  own training images (with its class subset), else on the named dataset's files.
* ``label-cnn``: the same CNN trained on the semantic ``label`` column of a folder/CSV
  dataset (``ImageDataset.semantic_labels``), which the user provides next to the
  contributor column.
* ``autoencoder``: label-free. A small convolutional autoencoder trained here on the run's
  training images alone (seeded, deterministic, cached by the images' content and the
  recipe); its bottleneck is the feature. It has no class probabilities, so ``is`` and
  ``class-entropy`` cannot be measured in it.
* ``inception``: pytorch-fid's FID Inception-v3 from a local weights file.
* ``clip`` / ``blip``: the image encoder of a local transformers checkpoint directory
  (CLIP: projected image embeddings; BLIP: the vision model's pooled output, the paper's
  CelebA-HQ diversity space).

``auto`` (the default) picks, from the dataset's name and whether it has semantic labels:

=============================  ==================================================
digits                         ``digits-cnn``
fashion-mnist                  ``fashion-mnist-cnn``
cifar10 / cifar100 / cifar20   ``cifar-cnn`` (a classifier of its semantic classes)
folder/CSV with a label column ``label-cnn``
folder without labels          ``autoencoder`` (label-free)
=============================  ==================================================

Why: on a named dataset the classes are what the images show, so a classifier of them
measures quality (the paper's IS on CIFAR-20). On a user's folder the only labels are the
contributors. A classifier of the contributors measures how *separable* the contributors
are, not how good the images are: a contributor who uploads pure noise is a perfectly
separable "class", raises the Inception Score, and would be credited for quality. So a
folder run never uses a classifier of its contributors: it uses the user's semantic labels
if given, else a space learned from the images alone, in which only the label-free
behaviors (FID, precision/recall, density/coverage, cluster and diversity entropy) exist.

FID and the manifold metrics compare with the ``reference`` images: the full training data
by default (the paper's choice), or a local folder of curated real images. Note that the
training data include any garbage a contributor uploaded; against them "matching the
training distribution" also credits the garbage. A curated reference folder answers "who
moves the model toward this set".

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

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from diffattr.data.settings import FASHION_MNIST_DIR
from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry, Settings, format_validation_error

# ----------------------------------------------------------------------------- feature spaces


class FeatureSettings(Component):
    """Settings every feature space shares.

    Class variables: ``has_probs`` (class probabilities for IS / class entropy),
    ``trained`` (trained by the package on the run's data and cached).
    """

    kind: ClassVar[str] = "feature space"
    has_probs: ClassVar[bool] = False
    trained: ClassVar[bool] = False

    def space_name(self, dataset_name: str) -> str:
        """The name shown in behavior keys, e.g. ``digits-cnn``."""
        return self.name

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        """Why this space cannot be built for that dataset (cheap file checks), or None."""
        return None


FEATURES: ComponentRegistry[FeatureSettings] = ComponentRegistry("feature space", FeatureSettings)

NAMED_CLASSIFIER_DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "cifar20")
CIFAR_NAMES = ("cifar10", "cifar100", "cifar20")


def _missing(path: str | None, what: str, hint: str) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        return f"{what} not found: {p} ({hint})"
    return None


@FEATURES.register
class AutoFeatures(FeatureSettings):
    """Chosen from the dataset (see the module docstring); never a contributor classifier."""

    name: Literal["auto"] = "auto"


@FEATURES.register
class DigitsCNNFeatures(FeatureSettings):
    """CNN classifier of sklearn's bundled digits (10 classes), at the run's size/channels."""

    name: Literal["digits-cnn"] = "digits-cnn"
    implementation: ClassVar[str] = "diffattr.behaviors.features:build_named_classifier"
    has_probs: ClassVar[bool] = True
    trained: ClassVar[bool] = True
    dataset: ClassVar[str] = "digits"


@FEATURES.register
class FashionMnistCNNFeatures(FeatureSettings):
    """CNN classifier of Fashion-MNIST's 10 classes, trained on its training split."""

    name: Literal["fashion-mnist-cnn"] = "fashion-mnist-cnn"
    implementation: ClassVar[str] = "diffattr.behaviors.features:build_named_classifier"
    has_probs: ClassVar[bool] = True
    trained: ClassVar[bool] = True
    dataset: ClassVar[str] = "fashion-mnist"
    path: str | None = Field(
        None,
        description="Fashion-MNIST IDX directory when the run's data are not Fashion-MNIST "
        "(default /usr/share/datasets/fashion-mnist)",
    )

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        if dataset_name == "fashion-mnist":
            return None
        path = self.path or FASHION_MNIST_DIR
        return _missing(
            path,
            "Fashion-MNIST directory for fashion-mnist-cnn",
            "give features.path = the folder of the IDX files",
        )


@FEATURES.register
class CifarCNNFeatures(FeatureSettings):
    """CNN classifier of CIFAR's semantic classes (CIFAR-10, CIFAR-100 or the paper's CIFAR-20).

    On a CIFAR run it is trained on the run's own training images; otherwise give ``variant``
    and ``path`` (the extracted python-pickle directory).
    """

    name: Literal["cifar-cnn"] = "cifar-cnn"
    implementation: ClassVar[str] = "diffattr.behaviors.features:build_named_classifier"
    has_probs: ClassVar[bool] = True
    trained: ClassVar[bool] = True
    variant: Literal["cifar10", "cifar100", "cifar20"] | None = Field(
        None, description="which CIFAR (default: the run's dataset)"
    )
    path: str | None = Field(
        None, description="cifar-10-batches-py / cifar-100-python directory (non-CIFAR runs)"
    )

    def resolved_variant(self, dataset_name: str) -> str | None:
        if self.variant is not None:
            return self.variant
        return dataset_name if dataset_name in CIFAR_NAMES else None

    def space_name(self, dataset_name: str) -> str:
        return f"{self.resolved_variant(dataset_name) or 'cifar'}-cnn"

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        variant = self.resolved_variant(dataset_name)
        if variant is None:
            return (
                f"cifar-cnn on {dataset_name!r} data needs features.variant (cifar10, cifar100 "
                "or cifar20) and features.path (the extracted CIFAR directory)"
            )
        if variant == dataset_name and self.path is None:
            return None
        if self.path is None:
            return f"cifar-cnn ({variant}) needs features.path (the extracted CIFAR directory)"
        return _missing(self.path, "CIFAR directory for cifar-cnn", "give features.path")


@FEATURES.register
class LabelCNNFeatures(FeatureSettings):
    """CNN classifier of the folder/CSV dataset's semantic ``label`` column."""

    name: Literal["label-cnn"] = "label-cnn"
    implementation: ClassVar[str] = "diffattr.behaviors.features:build_label_classifier"
    has_probs: ClassVar[bool] = True
    trained: ClassVar[bool] = True

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        if not has_semantic_labels:
            return (
                f"label-cnn needs semantic labels, and the {dataset_name!r} data have none: add "
                "a 'label' column (what each image shows) to the CSV of path,contributor"
            )
        return None


@FEATURES.register
class AutoencoderFeatures(FeatureSettings):
    """Label-free: bottleneck of a small convolutional autoencoder trained on the images."""

    name: Literal["autoencoder"] = "autoencoder"
    implementation: ClassVar[str] = "diffattr.behaviors.autoencoder:build"
    trained: ClassVar[bool] = True
    dim: int = Field(64, ge=2, le=1024, description="bottleneck (feature) dimension")
    steps: int = Field(600, ge=1, description="optimisation steps (batch 128, Adam, cosine)")


@FEATURES.register
class InceptionFeatures(FeatureSettings):
    """pytorch-fid's Inception-v3 (pool3 2048-d, 1008-way softmax) from a local file."""

    name: Literal["inception"] = "inception"
    implementation: ClassVar[str] = "diffattr.behaviors.inception:build"
    has_probs: ClassVar[bool] = True
    path: str | None = Field(
        None,
        description="pt_inception-2015-12-05-6726825d.pth (default $DIFFATTR_INCEPTION_WEIGHTS)",
    )

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        return _missing(
            self.path,
            "Inception weights",
            "give features.path = pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
        )


class _LocalEncoder(FeatureSettings):
    path: str = Field(
        ..., description="local transformers checkpoint directory (config.json, safetensors)"
    )

    def problems(self, dataset_name: str, has_semantic_labels: bool) -> str | None:
        p = Path(self.path).expanduser()
        if not p.is_dir():
            return (
                f"{self.name} checkpoint directory not found: {p} (give features.path = a local "
                "directory with config.json, model.safetensors and preprocessor_config.json)"
            )
        if not (p / "config.json").is_file():
            return f"{p} has no config.json (give a transformers {self.name.upper()} directory)"
        return None


@FEATURES.register
class ClipFeatures(_LocalEncoder):
    """CLIP image embeddings (projection output) of a local transformers CLIP directory."""

    name: Literal["clip"] = "clip"
    implementation: ClassVar[str] = "diffattr.behaviors.pretrained:build"


@FEATURES.register
class BlipFeatures(_LocalEncoder):
    """BLIP vision-model pooled output of a local transformers BLIP directory (the paper's
    CelebA-HQ diversity space used blip-vqa-base)."""

    name: Literal["blip"] = "blip"
    implementation: ClassVar[str] = "diffattr.behaviors.pretrained:build"


def _sub_parse(registry: ComponentRegistry, value: Any) -> Any:
    """Parse a nested component inside a pydantic validator: its error becomes a ValueError
    whose message pydantic prefixes with the field's location."""
    if isinstance(value, registry.base):
        return value
    try:
        return registry.parse(value, "@")
    except DiffattrError as e:
        msg = str(e).removeprefix("@: ").removeprefix("@.").removeprefix("name: ")
        raise ValueError(msg) from None


def resolve_features(
    features: FeatureSettings, dataset_name: str, has_semantic_labels: bool
) -> FeatureSettings:
    """The concrete feature space of ``auto`` for a dataset; other spaces unchanged."""
    if not isinstance(features, AutoFeatures):
        return features
    if dataset_name == "digits":
        return DigitsCNNFeatures()
    if dataset_name == "fashion-mnist":
        return FashionMnistCNNFeatures()
    if dataset_name in CIFAR_NAMES:
        return CifarCNNFeatures()
    if has_semantic_labels:
        return LabelCNNFeatures()
    return AutoencoderFeatures()


def spaces_with_probs() -> list[str]:
    return [n for n in FEATURES.names() if FEATURES.get(n).has_probs]


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
        return v if v is None else _sub_parse(FEATURES, v)


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
        return _sub_parse(FEATURES, v)

    @field_validator("measure", mode="before")
    @classmethod
    def _parse_measure(cls, v: Any) -> Any:
        if v is None:
            return None
        v = _measure_list(v)
        out = []
        for i, item in enumerate(v):
            try:
                out.append(_sub_parse(BEHAVIORS, item))
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


# ----------------------------------------------------------------------------- checks


def behavior_space(
    behavior: BehaviorSettings,
    settings: BehaviorsSettings,
    dataset_name: str,
    has_semantic_labels: bool,
) -> FeatureSettings:
    """The concrete feature space a behavior is measured in."""
    space = behavior.features if behavior.features is not None else settings.features
    return resolve_features(space, dataset_name, has_semantic_labels)


def behavior_key(name: str, space_name: str) -> str:
    """Output key of a behavior in a feature space, e.g. ``fid[digits-cnn]``."""
    return f"{name}[{space_name}]"


def check_settings(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> None:
    """Raise the one-line ``DiffattrError`` a suite would fail with, cheaply (no torch, no
    training): unknown/unusable spaces, missing local files, behaviors needing class
    probabilities in a label-free space, aesthetic scores outside CLIP space."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    ref = settings.reference
    if ref != "train":
        p = Path(ref).expanduser()
        if not p.is_dir():
            raise DiffattrError(
                f"behaviors.reference: folder of real images not found: {p} (give 'train' or "
                "an existing folder of PNG/JPEG images)"
            )
    checked: set[str] = set()
    keys: set[str] = set()
    for i, b in enumerate(settings.measure):
        where = "behaviors.features" if b.features is None else f"behaviors.measure[{i}].features"
        space = behavior_space(b, settings, dataset_name, has_semantic_labels)
        sid = space.model_dump_json()
        if b.local and b.space is not None:  # pixels or the model: no feature space
            key = local_key(b, space, dataset_name)
            if key in keys:
                raise DiffattrError(f"behaviors.measure[{i}]: {key} is measured twice")
            keys.add(key)
            continue
        if sid not in checked:
            problem = space.problems(dataset_name, has_semantic_labels)
            if problem:
                raise DiffattrError(f"{where}: {problem}")
            checked.add(sid)
        shown = space.space_name(dataset_name)
        key = behavior_key(b.name, shown)
        if key in keys:
            raise DiffattrError(f"behaviors.measure[{i}]: {key} is measured twice")
        keys.add(key)
        if b.needs_probs and not space.has_probs:
            raise DiffattrError(
                f"behaviors.measure[{i}]: {b.name} needs class probabilities and the feature "
                f"space {shown!r} has none (label-free); measure it in one of: "
                f"{', '.join(spaces_with_probs())}, or drop it"
            )
        if b.needs_space is not None and space.name != b.needs_space:
            raise DiffattrError(
                f"behaviors.measure[{i}]: {b.name} is defined on {b.needs_space} image "
                f'embeddings, not {shown!r}: set features = {{ name = "{b.needs_space}", '
                'path = "DIR" } for the section or for this behavior'
            )
        head = getattr(b, "head", None)
        if head is not None and not Path(head).expanduser().is_file():
            raise DiffattrError(
                f"behaviors.measure[{i}].head: aesthetic head not found: {head} (give the LAION "
                "sa_0_4_vit_l_14_linear weights as .safetensors or .pth)"
            )


def suite_keys(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> list[str]:
    """The output keys of the suite ``build_suite`` would build, in ``measure`` order."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    return [
        local_key(b, behavior_space(b, settings, dataset_name, has_semantic_labels), dataset_name)
        for b in settings.measure
    ]


def local_key(behavior: BehaviorSettings, space: FeatureSettings, dataset_name: str) -> str:
    """Output key of a behavior measured in ``space``: ``ssim[pixel]`` for the local pixel
    metrics, ``denoising-loss[model]``, else ``name[feature space]``."""
    shown = getattr(behavior, "space", None) if behavior.local else None
    return behavior_key(behavior.name, shown or space.space_name(dataset_name))


def local_behavior_keys(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> list[str]:
    """The keys of the local behaviors among ``measure`` (one value per generated image)."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    return [
        local_key(b, behavior_space(b, settings, dataset_name, has_semantic_labels), dataset_name)
        for b in settings.measure
        if b.local
    ]
