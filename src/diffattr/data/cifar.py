"""CIFAR-10 / CIFAR-100 from a local python-pickle directory (no download).

CIFAR-10 expects the ``cifar-10-batches-py`` layout (``data_batch_1..5``, ``test_batch``,
``batches.meta``); CIFAR-100 the ``cifar-100-python`` layout (``train``, ``test``, ``meta``).
``subset="cifar20"`` selects the paper's CIFAR-20: the 20 fine classes of the superclasses
large carnivores, large omnivores and herbivores, medium mammals and small mammals.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from diffattr.data.base import ImageDataset, require_file, resize, select_classes, to_unit_range
from diffattr.errors import DiffattrError

CIFAR20_SUPERCLASSES = (
    "large_carnivores",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "small_mammals",
)


def _unpickle(path: Path, hint: str) -> dict:
    require_file(path, "CIFAR file", hint)
    try:
        with open(path, "rb") as f:
            # The official CIFAR release is a python pickle; only load files you trust.
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DiffattrError(f"cannot read CIFAR file {path}: {e}") from None


def _decode(names: list) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _to_images(data: np.ndarray, path: Path) -> torch.Tensor:
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DiffattrError(f"{path}: expected rows of 3072 bytes (32x32x3)")
    return to_unit_range(data.reshape(-1, 3, 32, 32), 255.0)


def load_cifar10(
    path: str | Path | None,
    split: str = "train",
    image_size: int | None = None,
    classes: list[int] | None = None,
) -> ImageDataset:
    hint = "download and extract cifar-10-python.tar.gz yourself and pass --data DIR"
    if path is None:
        raise DiffattrError(f"cifar10 needs a local directory: {hint}")
    d = Path(path)
    require_file(d, "CIFAR-10 directory", hint)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise DiffattrError(f"unknown split {split!r}; use 'train' or 'test'")
    meta = _unpickle(d / "batches.meta", hint)
    names = _decode(meta[b"label_names"])
    imgs, labels = [], []
    for fn in files:
        batch = _unpickle(d / fn, hint)
        imgs.append(_to_images(batch[b"data"], d / fn))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    images = torch.cat(imgs)
    lab = np.concatenate(labels)
    images, lab, names, keep = select_classes(images, lab, names, classes)
    return ImageDataset(
        name="cifar10",
        images=resize(images, image_size),
        labels=torch.as_tensor(lab),
        ids=[f"cifar10-{split}-{i}" for i in keep],
        class_names=names,
        meta={"files": [str((d / f).resolve()) for f in ["batches.meta", *files]]},
    )


def load_cifar100(
    path: str | Path | None,
    split: str = "train",
    image_size: int | None = None,
    classes: list[int] | None = None,
    subset: str | None = None,
) -> ImageDataset:
    hint = "download and extract cifar-100-python.tar.gz yourself and pass --data DIR"
    if path is None:
        raise DiffattrError(f"cifar100 needs a local directory: {hint}")
    d = Path(path)
    require_file(d, "CIFAR-100 directory", hint)
    if split not in ("train", "test"):
        raise DiffattrError(f"unknown split {split!r}; use 'train' or 'test'")
    meta = _unpickle(d / "meta", hint)
    fine_names = _decode(meta[b"fine_label_names"])
    coarse_names = _decode(meta[b"coarse_label_names"])
    batch = _unpickle(d / split, hint)
    images = _to_images(batch[b"data"], d / split)
    fine = np.asarray(batch[b"fine_labels"], dtype=np.int64)
    coarse = np.asarray(batch[b"coarse_labels"], dtype=np.int64)
    if subset is not None:
        if subset != "cifar20":
            raise DiffattrError(f"unknown CIFAR-100 subset {subset!r}; use 'cifar20'")
        if classes:
            raise DiffattrError("give either classes or subset='cifar20', not both")
        wanted = [coarse_names.index(s) for s in CIFAR20_SUPERCLASSES]
        classes = sorted({int(f) for f, c in zip(fine, coarse) if c in wanted})
    images, lab, names, keep = select_classes(images, fine, fine_names, classes)
    return ImageDataset(
        name="cifar20" if subset == "cifar20" else "cifar100",
        images=resize(images, image_size),
        labels=torch.as_tensor(lab),
        ids=[f"cifar100-{split}-{i}" for i in keep],
        class_names=names,
        meta={"files": [str((d / f).resolve()) for f in ("meta", split)]},
    )


def load_10(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "cifar10"``."""
    return load_cifar10(settings.path, split, settings.image_size, settings.classes)


def load_100(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "cifar100"``."""
    s = settings
    return load_cifar100(s.path, split, s.image_size, s.classes, s.subset)
