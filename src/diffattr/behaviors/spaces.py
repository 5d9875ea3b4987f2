"""Feature spaces of the behaviors (``FEATURES``): the typed settings of the extractors a
global behavior is measured in. pydantic only (no torch): a run plan is checked before
anything is built; ``diffattr.behaviors.features`` builds them.

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
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from diffattr.data.settings import FASHION_MNIST_DIR
from diffattr.settings import Component, ComponentRegistry


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
