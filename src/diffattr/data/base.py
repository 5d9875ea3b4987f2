"""The dataset container every loader returns, and shared image helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffattr.errors import DiffattrError


@dataclass
class ImageDataset:
    """Images in [-1, 1] with labels, stable sample ids and (optionally) contributors.

    Attributes:
        name: dataset name as registered (``digits``, ``fashion-mnist``, ...).
        images: float32 tensor (N, C, H, W) with values in [-1, 1].
        labels: int64 tensor (N,), indices into ``class_names``.
        ids: N stable sample ids (same image -> same id across runs and machines).
        class_names: names of the label classes.
        contributors: optional per-sample contributor name (folder / CSV datasets);
            when None the contributor of a sample is its class name.
        semantic_labels: optional int64 tensor (N,) of what each image shows, indices into
            ``semantic_names`` (the CSV ``label`` column). Separate from ``labels`` and
            ``contributors``, which name who gave the image (the players of a folder/CSV
            dataset); the behaviors train their ``label-cnn`` feature space on these.
        semantic_names: names of the semantic labels (given with ``semantic_labels``).
        captions: optional per-sample caption (the CSV ``caption`` column; None where a row
            has none) for text-to-image models.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    contributors: list[str] | None = None
    meta: dict = field(default_factory=dict)
    semantic_labels: torch.Tensor | None = None
    semantic_names: list[str] | None = None
    captions: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise DiffattrError(
                f"{self.name}: images must be (N, C, H, W), got {tuple(self.images.shape)}"
            )
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise DiffattrError(f"{self.name}: images, labels and ids differ in length")
        if self.contributors is not None and len(self.contributors) != n:
            raise DiffattrError(f"{self.name}: one contributor per image is required")
        if n == 0:
            raise DiffattrError(f"{self.name}: the dataset is empty")
        if self.captions is not None and len(self.captions) != n:
            raise DiffattrError(f"{self.name}: one caption (or None) per image is required")
        if (self.semantic_labels is None) != (self.semantic_names is None):
            raise DiffattrError(f"{self.name}: semantic labels need their names (and back)")
        if self.semantic_labels is not None:
            sl = self.semantic_labels
            if sl.shape != (n,):
                raise DiffattrError(f"{self.name}: one semantic label per image is required")
            if int(sl.min()) < 0 or int(sl.max()) >= len(self.semantic_names):
                raise DiffattrError(f"{self.name}: semantic labels out of range of their names")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def contributor_of(self) -> list[str]:
        """Per-sample contributor names (the class name when no contributor column exists)."""
        if self.contributors is not None:
            return list(self.contributors)
        return [self.class_names[int(i)] for i in self.labels]

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return ImageDataset(
            name=self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            class_names=self.class_names,
            contributors=None
            if self.contributors is None
            else [self.contributors[i] for i in idx.tolist()],
            # a subset is other content: no digest, no files to key a cached digest by
            meta={k: v for k, v in self.meta.items() if k not in ("digest", "files")},
            semantic_labels=None if self.semantic_labels is None else self.semantic_labels[idx],
            semantic_names=self.semantic_names,
            captions=None if self.captions is None else [self.captions[i] for i in idx.tolist()],
        )


def to_unit_range(x: np.ndarray, max_value: float) -> torch.Tensor:
    """uint8-like array in [0, max_value] -> float32 tensor in [-1, 1]."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) / float(max_value)
    return (t * 2.0 - 1.0).clamp(-1.0, 1.0)


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Antialiased bilinear resize of (N, C, H, W) images to size x size (no-op if None)."""
    if size is None or images.shape[-1] == size and images.shape[-2] == size:
        return images
    if size < 4:
        raise DiffattrError(f"image size must be at least 4, got {size}")
    out = F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp(-1.0, 1.0)


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it exists, else raise a one-line error saying what to provide."""
    path = Path(path)
    if not path.exists():
        raise DiffattrError(f"{what} not found: {path} ({hint})")
    return path


def select_classes(
    images: torch.Tensor, labels: np.ndarray, names: list[str], classes: list[int] | None
) -> tuple[torch.Tensor, np.ndarray, list[str], np.ndarray]:
    """Keep only ``classes`` (original label ids), relabelled 0..k-1 in the given order.

    Returns images, new labels, new class names and the kept original indices.
    """
    if not classes:
        return images, labels, names, np.arange(len(labels))
    bad = [c for c in classes if c < 0 or c >= len(names)]
    if bad:
        raise DiffattrError(f"class ids {bad} out of range 0..{len(names) - 1}")
    if len(set(classes)) != len(classes):
        raise DiffattrError(f"class ids repeat: {classes}")
    keep = np.flatnonzero(np.isin(labels, classes))
    remap = {c: i for i, c in enumerate(classes)}
    new_labels = np.array([remap[int(c)] for c in labels[keep]], dtype=np.int64)
    return images[torch.as_tensor(keep)], new_labels, [names[c] for c in classes], keep
