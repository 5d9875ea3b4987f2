"""Datasets (one loader per source: digits, Fashion-MNIST, CIFAR, image folders / CSV) and
players (the unit of credit); nothing here downloads. ``diffattr.data.settings`` holds the
typed ``[data]`` settings and imports nothing heavy.
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "ImageDataset": "diffattr.data.base:ImageDataset",
    "Players": "diffattr.data.players:Players",
    "load_dataset": "diffattr.data.load:load_dataset",
    "dataset_key": "diffattr.data.load:dataset_key",
    "dataset_digest": "diffattr.data.digest:dataset_digest",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
