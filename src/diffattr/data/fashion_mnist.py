"""Fashion-MNIST from IDX files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from diffattr.data.base import ImageDataset, require_file, resize, select_classes, to_unit_range
from diffattr.data.settings import FASHION_MNIST_DIR
from diffattr.errors import DiffattrError

DEFAULT_DIR = Path(FASHION_MNIST_DIR)
CLASS_NAMES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]
_HINT = (
    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
    "or pass --data DIR holding the IDX files"
)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    return require_file(directory / (stem + ".gz"), "Fashion-MNIST file", _HINT)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DiffattrError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DiffattrError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DiffattrError(f"{path} is truncated")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DiffattrError(f"{path} is truncated or corrupt (expected {count} bytes of data)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(
    path: str | Path | None = None,
    split: str = "train",
    image_size: int | None = None,
    classes: list[int] | None = None,
    limit_per_class: int | None = None,
) -> ImageDataset:
    """Fashion-MNIST 28x28 grey images, optional resize, class subset and per-class cap.

    Sample ids are ``fashion-mnist-<split>-<row>`` for the row in the IDX file.
    """
    directory = Path(path) if path else DEFAULT_DIR
    require_file(directory, "Fashion-MNIST directory", _HINT)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DiffattrError(f"unknown split {split!r}; use 'train' or 'test'")
    files = [
        _find(directory, f"{prefix}-{kind}-idx{d}-ubyte")
        for kind, d in (("images", 3), ("labels", 1))
    ]
    images = read_idx(files[0])
    labels = read_idx(files[1]).astype(np.int64)
    if images.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise DiffattrError(f"Fashion-MNIST files in {directory} do not match each other")
    rows = np.arange(len(labels))
    if limit_per_class is not None:
        keep = np.concatenate([rows[labels == c][:limit_per_class] for c in np.unique(labels)])
        keep.sort()
        images, labels, rows = images[keep], labels[keep], rows[keep]
    t = to_unit_range(images[:, None], 255.0)
    t, labels, names, keep = select_classes(t, labels, list(CLASS_NAMES), classes)
    return ImageDataset(
        name="fashion-mnist",
        images=resize(t, image_size),
        labels=torch.as_tensor(labels),
        ids=[f"fashion-mnist-{split}-{r}" for r in rows[keep]],
        class_names=names,
        meta={"files": [str(f.resolve()) for f in files]},
    )


def load(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "fashion-mnist"``."""
    s = settings
    return load_fashion_mnist(s.path, split, s.image_size, s.classes, s.limit_per_class)
