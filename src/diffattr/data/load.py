"""Loading the dataset a ``[data]`` table names, and its identity for cache keys."""

from __future__ import annotations

from typing import Any

from diffattr.data.base import ImageDataset
from diffattr.data.settings import DATASETS, DataSettings

#: Settings that never change what a dataset holds (excluded from its key).
NOT_CONTENT = {"players", "strict"}


def load_dataset(settings: DataSettings | dict | str | None = None, split: str = "train"):
    """Load the dataset a ``DataSettings`` names (train split unless ``split='test'``)."""
    if settings is None:
        settings = "digits"
    if not isinstance(settings, DataSettings):
        settings = DATASETS.parse(settings, "data")
    dataset = settings.load(split)
    assert isinstance(dataset, ImageDataset)
    dataset.meta.setdefault("settings", dataset_key(settings))
    return dataset


def dataset_key(settings: DataSettings) -> dict[str, Any]:
    """The settings that identify a dataset (for cache and job keys). What the files hold
    is ``dataset_digest`` (``diffattr.data.digest``)."""
    return settings.model_dump(mode="json", exclude=NOT_CONTENT)
