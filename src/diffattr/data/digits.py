"""sklearn's bundled 8x8 handwritten digits: the embedded default dataset (no download)."""

from __future__ import annotations

import numpy as np
import torch

from diffattr.data.base import ImageDataset, resize, select_classes, to_unit_range
from diffattr.errors import DiffattrError


def load_digits(
    image_size: int | None = None,
    classes: list[int] | None = None,
    limit_per_class: int | None = None,
) -> ImageDataset:
    """1,797 grey 8x8 digit images (values 0..16 in the bundle), 10 classes.

    Sample ids are ``digits-<row>`` for the row in sklearn's bundled file, so they are
    stable across machines and runs. ``limit_per_class`` keeps the first images of each
    class (in file order).
    """
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    images = to_unit_range(bunch.images[:, None, :, :], 16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [str(i) for i in range(10)]
    images, labels, names, keep = select_classes(images, labels, names, classes)
    if limit_per_class is not None:
        rows = np.sort(
            np.concatenate(
                [np.flatnonzero(labels == c)[:limit_per_class] for c in np.unique(labels)]
            )
        )
        images, labels, keep = images[torch.as_tensor(rows)], labels[rows], keep[rows]
    return ImageDataset(
        name="digits",
        images=resize(images, image_size),
        labels=torch.as_tensor(labels),
        ids=[f"digits-{i}" for i in keep],
        class_names=names,
    )


def load(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "digits"``."""
    if split != "train":
        raise DiffattrError("digits has a single split")
    return load_digits(settings.image_size, settings.classes, settings.limit_per_class)
