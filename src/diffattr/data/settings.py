"""Typed settings of the datasets (the ``[data]`` table of a run); pydantic only.

``[data] name = ...`` selects the loader; the other keys are that loader's settings::

    [data]
    name = "fashion-mnist"
    image_size = 16
    classes = [0, 1, 2]
    players = "contributor"

Every dataset also says what the unit of credit is (``players``): each ``contributor``
(class, subfolder or CSV column) or each ``sample``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from diffattr.settings import Component, ComponentRegistry

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class DataSettings(Component):
    """Settings every dataset shares."""

    kind: ClassVar[str] = "dataset"
    players: Literal["contributor", "sample"] = Field(
        "contributor",
        description="unit of credit: each contributor (class, subfolder, CSV column) or image",
    )
    image_size: int | None = Field(None, ge=4, description="resize images to this square size")

    def load(self, split: str = "train"):
        """Load the images (an ``ImageDataset``)."""
        return self.implementation_class()(self, split)

    def source_path(self) -> str | None:
        """The local path the data come from (None for embedded data)."""
        return getattr(self, "path", None)

    def dataset_name(self) -> str:
        """The name the loaded ``ImageDataset`` will carry (without loading it)."""
        return self.name

    def has_semantic_labels(self) -> bool:
        """Whether the images carry labels of what they show (classes; a CSV ``label``
        column), as opposed to only contributors -- without loading the images."""
        return True


DATASETS: ComponentRegistry[DataSettings] = ComponentRegistry("dataset", DataSettings)


class _ClassSubset(DataSettings):
    classes: list[int] | None = Field(
        None, description="keep only these class ids (relabelled 0..k-1)"
    )

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one class id, or leave classes out")
            if len(set(v)) != len(v):
                raise ValueError(f"class ids repeat: {v}")
        return v


@DATASETS.register
class DigitsData(_ClassSubset):
    """sklearn's bundled 8x8 digits (1,797 images, 10 classes); nothing to download."""

    name: Literal["digits"] = "digits"
    implementation: ClassVar[str] = "diffattr.data.digits:load"
    limit_per_class: int | None = Field(
        None, ge=1, description="keep the first images of each class (e.g. 50: 500 images)"
    )


@DATASETS.register
class FashionMnistData(_ClassSubset):
    """Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or a local copy)."""

    name: Literal["fashion-mnist"] = "fashion-mnist"
    implementation: ClassVar[str] = "diffattr.data.fashion_mnist:load"
    path: str = Field(FASHION_MNIST_DIR, description="directory of the IDX files")
    limit_per_class: int | None = Field(None, ge=1, description="cap images per class")


@DATASETS.register
class Cifar10Data(_ClassSubset):
    """A local ``cifar-10-batches-py`` directory (extracted by the user)."""

    name: Literal["cifar10"] = "cifar10"
    implementation: ClassVar[str] = "diffattr.data.cifar:load_10"
    path: str = Field(..., description="the extracted cifar-10-batches-py directory")


@DATASETS.register
class Cifar100Data(_ClassSubset):
    """A local ``cifar-100-python`` directory; ``subset = "cifar20"`` is the paper's CIFAR-20."""

    name: Literal["cifar100"] = "cifar100"
    implementation: ClassVar[str] = "diffattr.data.cifar:load_100"
    path: str = Field(..., description="the extracted cifar-100-python directory")
    subset: Literal["cifar20"] | None = Field(
        None, description="named subset: cifar20 (the paper's 20 animal classes)"
    )

    def dataset_name(self) -> str:
        return self.subset or "cifar100"


@DATASETS.register
class FolderData(DataSettings):
    """An image folder whose subfolders are contributors, or a CSV with columns
    ``path,contributor`` and optionally ``label`` (what each image shows, separate from who
    contributed it) and ``caption``."""

    name: Literal["folder"] = "folder"
    implementation: ClassVar[str] = "diffattr.data.folder:load"
    path: str = Field(..., description="a folder of contributor subfolders, or a CSV file")
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grey) or 3 (RGB); default: from the first image"
    )
    strict: bool = Field(
        False, description="refuse a CSV that lists an image twice (default: a warning)"
    )

    def has_semantic_labels(self) -> bool:
        import csv
        from pathlib import Path

        p = Path(self.path)
        if not p.is_file():
            return False
        try:
            with open(p, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            return False
        return "label" in [h.strip() for h in header]


class _TableColumns(DataSettings):
    """The columns of a table of images (imagefolder metadata, a Hugging Face dataset)."""

    contributor_column: str = Field(
        "contributor", min_length=1, description="column naming each image's contributor"
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        description="column of what each image shows (default: 'label' when there is one)",
    )
    caption_column: str | None = Field(
        None,
        min_length=1,
        description="column of each image's caption (default: 'caption' when there is one)",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grey) or 3 (RGB); default: from the images"
    )

    def _columns(self) -> list[str]:
        raise NotImplementedError

    def has_semantic_labels(self) -> bool:
        if self.label_column is not None:
            return True  # the loader refuses data without it
        return "label" in self._columns()


@DATASETS.register
class ImageFolderData(_TableColumns):
    """Hugging Face's ``imagefolder`` layout: a folder with a ``metadata.csv`` or
    ``metadata.jsonl`` whose rows name an image (``file_name``) and its contributor
    (``contributor_column``), optionally its label and caption. Same content, same digest as
    the folder CSV that lists the same rows."""

    name: Literal["imagefolder"] = "imagefolder"
    implementation: ClassVar[str] = "diffattr.data.hf:load_imagefolder"
    path: str = Field(..., description="the folder holding metadata.csv / .jsonl, or that file")
    strict: bool = Field(
        False, description="refuse metadata that lists an image twice (default: a warning)"
    )

    def _columns(self) -> list[str]:
        return _metadata_columns(self.path)


@DATASETS.register
class HFDatasetData(_TableColumns):
    """A Hugging Face ``datasets.Dataset`` saved with ``save_to_disk``: an image column, a
    contributor column, optionally label and caption columns (``pip install
    'diffattr[hf]'``). Sample ids come from ``file_name`` (or ``id_column``), else row
    numbers."""

    name: Literal["hf-dataset"] = "hf-dataset"
    implementation: ClassVar[str] = "diffattr.data.hf:load_saved"
    path: str = Field(..., description="the folder save_to_disk wrote")
    split: str | None = Field(
        None, description="split of a saved DatasetDict (default: train, or the only one)"
    )
    image_column: str = Field("image", min_length=1, description="the image column")
    id_column: str | None = Field(
        None,
        min_length=1,
        description="column of stable sample ids (default: file_name when there is one, else "
        "row numbers)",
    )

    def _columns(self) -> list[str]:
        return _saved_columns(self.path, self.split)


def _metadata_columns(path: str) -> list[str]:
    """The columns of an imagefolder's metadata.csv (header) or .jsonl (first row), for the
    run plan before loading; [] when it cannot be read (the loader says why)."""
    import csv
    import json
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = next((p / m for m in ("metadata.csv", "metadata.jsonl") if (p / m).is_file()), p)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            if p.suffix.lower() == ".csv":
                return [h.strip() for h in next(csv.reader(f), [])]
            first = next((t for t in f if t.strip()), "")
        row = json.loads(first) if first else {}
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError):
        return []
    return list(row) if isinstance(row, dict) else []


def _saved_columns(path: str, split: str | None) -> list[str]:
    """The columns a save_to_disk folder's dataset_info.json lists (the split's for a
    DatasetDict); [] when it cannot be read (the loader says why)."""
    import json
    from pathlib import Path

    p = Path(path)
    found = [p / split] if split is not None else [p, p / "train", *sorted(p.glob("*/"))]
    for folder in found:
        try:
            info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        features = info.get("features") if isinstance(info, dict) else None
        if isinstance(features, dict):
            return list(features)
    return []


def fashion_class_ids(v: list[int]) -> list[int]:
    """Distinct Fashion-MNIST class ids 0..9 (a settings validator)."""
    if any(c < 0 or c > 9 for c in v) or len(set(v)) != len(v):
        raise ValueError(f"distinct Fashion-MNIST class ids 0..9, got {v}")
    return v


#: The Fashion-MNIST classes the embedded text-to-image demo's LoRA teaches (footwear), as
#: ArtBench's LoRA teaches a painting style; the demo base is pretrained on the others
#: (``diffattr.families.settings.DEMO_BASE_CLASSES``).
DEMO_LORA_CLASSES = (5, 7, 9)


# The demo's LoRA data are a dataset of their own, registered with the others so that every
# reader of a run's data settings (a config, the report, the results) knows the name; the
# demo family that builds the matching base is ``diffattr.families.text_to_image``.
@DATASETS.register
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
    path: str = Field(FASHION_MNIST_DIR, description="Fashion-MNIST IDX directory")
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
        return fashion_class_ids(v)

    @model_validator(mode="after")
    def _noisy_fewer(self) -> T2IDemoData:
        if self.noisy >= self.contributors:
            raise ValueError("noisy must be smaller than contributors")
        return self


def parse_data(value: Any, where: str = "data") -> DataSettings:
    return DATASETS.parse(value, where)
