"""Dataset loaders (one per source) and players; nothing here downloads."""

from __future__ import annotations

from diffattr.config import DataConfig
from diffattr.data.base import ImageDataset
from diffattr.data.cifar import load_cifar10, load_cifar100
from diffattr.data.digits import load_digits
from diffattr.data.fashion_mnist import load_fashion_mnist
from diffattr.data.folder import load_folder
from diffattr.data.players import Players
from diffattr.errors import DiffattrError

__all__ = ["ImageDataset", "Players", "load_dataset", "dataset_key"]


def load_dataset(cfg: DataConfig | None = None, split: str = "train") -> ImageDataset:
    """Load the dataset a ``DataConfig`` names (train split unless ``split='test'``)."""
    cfg = cfg or DataConfig()
    if cfg.limit_per_class is not None and cfg.dataset != "fashion-mnist":
        raise DiffattrError("limit_per_class is supported for fashion-mnist only")
    if cfg.subset is not None and cfg.dataset != "cifar100":
        raise DiffattrError("subset is supported for cifar100 only ('cifar20')")
    if cfg.dataset == "digits":
        if split != "train":
            raise DiffattrError("digits has a single split")
        return load_digits(cfg.image_size, cfg.classes)
    if cfg.dataset == "fashion-mnist":
        return load_fashion_mnist(cfg.path, split, cfg.image_size, cfg.classes, cfg.limit_per_class)
    if cfg.dataset == "cifar10":
        return load_cifar10(cfg.path, split, cfg.image_size, cfg.classes)
    if cfg.dataset == "cifar100":
        return load_cifar100(cfg.path, split, cfg.image_size, cfg.classes, cfg.subset)
    if cfg.dataset == "folder":
        if cfg.classes:
            raise DiffattrError("classes do not apply to the folder dataset")
        return load_folder(cfg.path, cfg.image_size)
    raise DiffattrError(f"unknown dataset {cfg.dataset!r}")


def dataset_key(cfg: DataConfig) -> dict:
    """The fields that identify a dataset's content (for cache and job keys)."""
    return cfg.model_dump(mode="json", exclude={"players"})
