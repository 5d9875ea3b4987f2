"""Feature extractors for the behaviours, all offline.

``FeatureExtractor`` is the interface: ``features(images) -> (N, d)`` and, for classifiers,
``probs(images) -> (N, C)``, with images as (N, C, H, W) tensors in [-1, 1]. The default,
``ClassifierExtractor``, is a small CNN trained here on the dataset's own training images and
labels (no download); its features are the penultimate layer (global-average-pooled
convolutional features) and its probabilities the softmax of its logits. Metrics computed
in its space carry its name, e.g. ``fid[digits-cnn]``, so nobody mistakes them for Inception
metrics.

The classifier is trained deterministically (seeded initialisation, split and batches; Adam
with cosine decay; a fixed number of epochs from the training-set size) on 85 % of the
training images; the other 15 % (seeded) give the recorded held-out accuracy. It is cached
under ``cache_dir()/features/<key>/`` (safetensors weights + JSON with the key fields and
accuracy; atomic writes), where the key hashes the dataset identity (``DataConfig`` fields,
dataset name, class names, image size, channels, number of images and a digest of the
labels), the training recipe (architecture version, widths, epochs rule, optimiser) and the
seed. ``get_extractor`` loads from the cache or trains, and keeps one extractor per key and
device in memory for the whole process.

``InceptionExtractor`` wraps the FID Inception-v3 of pytorch-fid, loaded from a local copy of
its weights file only; see ``diffattr.behaviors.inception``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffattr.config import home
from diffattr.data.settings import DataSettings as DataConfig
from diffattr.data.settings import DigitsData
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

ARCH = "cnn-v1"
WIDTHS = (32, 64, 128)
HOLDOUT = 0.15
TARGET_STEPS = 400  # optimisation steps aimed for; epochs = clip(ceil(400 / steps per epoch))
MIN_EPOCHS, MAX_EPOCHS = 3, 40
KINDS = ("cnn", "inception")
LR = 2e-3
# Everything that shapes the trained classifier; part of its cache key.
RECIPE = {
    "arch": ARCH,
    "widths": list(WIDTHS),
    "holdout": HOLDOUT,
    "target_steps": TARGET_STEPS,
    "epochs": [MIN_EPOCHS, MAX_EPOCHS],
    "lr": LR,
    "optimizer": "adam-wd1e-4-cosine",
}


# ----------------------------------------------------------------------------- atomic files


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``safetensors.torch.save_file`` via a temporary sibling and ``os.replace``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------- interface


class FeatureExtractor(ABC):
    """Maps images (N, C, H, W) in [-1, 1] to features (N, d) and, if a classifier, to
    class probabilities (N, C).

    Attributes:
        name: feature-space name used in behaviour keys, e.g. ``digits-cnn``.
        key: cache key (hash) identifying the extractor's weights.
        channels, image_size: the input shape it expects (``None``: any size).
        num_classes: classes of ``probs`` (``None`` when it has no classifier head).
    """

    name: str
    key: str
    channels: int
    image_size: int | None
    num_classes: int | None = None
    device: torch.device

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One batch on ``self.device`` -> (features, logits or None)."""

    @property
    def has_probs(self) -> bool:
        return self.num_classes is not None

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim != 4:
            raise DiffattrError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise DiffattrError(
                f"{self.name} expects {self.channels}-channel images, got {x.shape[1]} channels"
            )
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise DiffattrError(
                f"{self.name} expects {self.image_size}x{self.image_size} images, "
                f"got {x.shape[-1]}x{x.shape[-2]}"
            )
        if x.shape[0] == 0:
            raise DiffattrError("no images to measure")
        return x

    @torch.no_grad()
    def features_and_probs(
        self, images: torch.Tensor, batch_size: int = 500
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (N, d) float32 and probabilities (N, C) float64 (None if no classifier)."""
        x = self._check(images)
        feats, probs = [], []
        for s in range(0, x.shape[0], batch_size):
            f, logits = self._forward(x[s : s + batch_size].to(self.device, torch.float32))
            feats.append(f.float().cpu())
            if logits is not None:
                probs.append(torch.softmax(logits.double(), dim=1).cpu())
        f_all = torch.cat(feats).numpy()
        return f_all, (torch.cat(probs).numpy() if probs else None)

    def features(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        return self.features_and_probs(images, batch_size)[0]

    def probs(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        if not self.has_probs:
            raise DiffattrError(f"feature extractor {self.name} has no classifier head")
        return self.features_and_probs(images, batch_size)[1]


# ----------------------------------------------------------------------------- the small CNN


def _strides(image_size: int) -> list[int]:
    """Stride-2 layers until about 4 px remain (at most 3), the stride-1 layers first."""
    down = max(0, min(3, math.ceil(math.log2(max(image_size, 1) / 4))))
    return [1] * (len(WIDTHS) - down) + [2] * down


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU x 3 (32, 64, 128 channels), global average pool, linear classifier.

    The 128-d pooled vector is the feature; strides adapt to the image size (8 px: one
    stride-2 layer; 28-32 px: three).
    """

    def __init__(self, channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for width, stride in zip(WIDTHS, _strides(image_size), strict=True):
            layers += [
                nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)
        self.hparams = {"channels": channels, "num_classes": num_classes, "image_size": image_size}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def default_epochs(num_train: int, batch_size: int) -> int:
    steps_per_epoch = max(1, math.ceil(num_train / batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index split; nothing is held out below 10 images."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * fraction)) if n >= 10 else 0
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, bs: int = 1000) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(x), bs):
        pred = model(x[s : s + bs].to(device)).argmax(1).cpu()
        correct += int((pred == y[s : s + bs]).sum())
    return correct / len(x)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    holdout: float = HOLDOUT,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = LR,
    device: str | torch.device = "cpu",
) -> tuple[SmallCNN, dict[str, Any]]:
    """Train ``SmallCNN`` on (images, labels) deterministically; return it and its record.

    Adam (weight decay 1e-4) with a cosine learning-rate decay over a fixed number of epochs
    (``default_epochs``: about 400 steps, between 3 and 40 epochs); batch size 64 (128 from
    10,000 images on). The record holds held-out and training accuracy, epochs and seconds.
    """
    x = torch.as_tensor(images, dtype=torch.float32).cpu()
    y = torch.as_tensor(labels, dtype=torch.long).cpu()
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise DiffattrError("classifier training needs (N, C, H, W) images with N labels")
    if num_classes < 1 or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DiffattrError(f"labels must lie in 0..{num_classes - 1}")
    device = torch.device(device)
    train_idx, hold_idx = holdout_split(len(x), holdout, seed)
    xt, yt = x[train_idx], y[train_idx]
    bs = batch_size or (64 if len(xt) < 10000 else 128)
    n_epochs = epochs or default_epochs(len(xt), bs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(x.shape[1], num_classes, x.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(xt) / bs)
    total = n_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(n_epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), bs):
            idx = perm[s : s + bs]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(model(xt[idx].to(device)), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    record = {
        "train_accuracy": _accuracy(model, xt, yt, device),
        "heldout_accuracy": (
            _accuracy(model, x[hold_idx], y[hold_idx], device) if len(hold_idx) else None
        ),
        "num_train": len(train_idx),
        "num_heldout": len(hold_idx),
        "epochs": n_epochs,
        "batch_size": bs,
        "lr": lr,
        "train_seconds": round(seconds, 3),
    }
    return model, record


# ----------------------------------------------------------------------------- extractor


class ClassifierExtractor(FeatureExtractor):
    """The small CNN classifier of a dataset: penultimate-layer features and softmax probs."""

    WEIGHTS = "classifier.safetensors"
    RECORD = "classifier.json"

    def __init__(self, model: SmallCNN, name: str, key: str, record: dict, device="cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.key = key
        self.record = record
        self.channels = model.hparams["channels"]
        self.image_size = model.hparams["image_size"]
        self.num_classes = model.hparams["num_classes"]

    @property
    def heldout_accuracy(self) -> float | None:
        return self.record.get("heldout_accuracy")

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.embed(x)
        return f, self.model.head(f)

    def save(self, directory: Path) -> None:
        """Weights first, then the JSON record: a record on disk means complete weights."""
        directory = Path(directory)
        atomic_save_tensors(directory / self.WEIGHTS, self.model.state_dict())
        atomic_write_text(
            directory / self.RECORD, json.dumps(self.record, indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def load(cls, directory: Path, device="cpu") -> ClassifierExtractor:
        from safetensors.torch import load_file

        directory = Path(directory)
        record = json.loads((directory / cls.RECORD).read_text())
        hp = record["hparams"]
        model = SmallCNN(hp["channels"], hp["num_classes"], hp["image_size"])
        model.load_state_dict(load_file(directory / cls.WEIGHTS), strict=True)
        return cls(model, record["name"], record["key"], record, device)


def dataset_identity(data_cfg: DataConfig, dataset) -> dict[str, Any]:
    """The fields that identify the data a classifier is trained on (hashed into its key)."""
    from diffattr.data import dataset_key

    labels = np.ascontiguousarray(dataset.labels.cpu().numpy().astype(np.int64))
    return {
        "config": dataset_key(data_cfg),
        "name": dataset.name,
        "class_names": list(dataset.class_names),
        "image_size": int(dataset.image_size),
        "channels": int(dataset.channels),
        "num_images": len(dataset),
        "labels_digest": hashlib.sha256(labels.tobytes()).hexdigest()[:16],
    }


def extractor_key(data_cfg: DataConfig, dataset, kind: str = "cnn", seed: int = 0) -> str:
    return stable_hash(
        {"data": dataset_identity(data_cfg, dataset), "recipe": RECIPE, "kind": kind, "seed": seed}
    )


def features_dir(key: str) -> Path:
    return home() / "cache" / "features" / key


_EXTRACTORS: dict[tuple[str, str], FeatureExtractor] = {}
_CFG_INDEX: dict[tuple[str, str, int], str] = {}


def clear_memory_cache() -> None:
    """Forget extractors kept in memory (the disk cache stays)."""
    from diffattr.behaviors.inception import InceptionExtractor

    _EXTRACTORS.clear()
    _CFG_INDEX.clear()
    InceptionExtractor._cache.clear()


def _cfg_id(data_cfg: DataConfig) -> str:
    from diffattr.data import dataset_key

    return json.dumps(dataset_key(data_cfg), sort_keys=True)


def get_extractor(
    data_cfg: DataConfig | None = None,
    kind: str = "cnn",
    device: str | torch.device = "cpu",
    dataset=None,
    *,
    seed: int = 0,
    inception_weights: str | Path | None = None,
) -> FeatureExtractor:
    """The feature extractor of a dataset: from memory, else from the disk cache, else trained.

    Args:
        data_cfg: the dataset (default: digits).
        kind: ``cnn`` (the dataset's own classifier, trained and cached) or ``inception``
            (pytorch-fid's FID Inception-v3 from a local weights file: ``inception_weights``
            or ``$DIFFATTR_INCEPTION_WEIGHTS``).
        dataset: the loaded ``ImageDataset`` of ``data_cfg`` if the caller has it (saves
            loading it again).
        seed: initialisation, split and batch seed of the classifier.
    """
    data_cfg = data_cfg or DigitsData()
    dev = str(torch.device(device))
    if kind == "inception":
        from diffattr.behaviors.inception import InceptionExtractor

        return InceptionExtractor.get(inception_weights, device=dev)
    if kind != "cnn":
        raise DiffattrError(
            f"unknown feature extractor {kind!r}; choose one of: {', '.join(KINDS)}"
        )
    cfg_id = (_cfg_id(data_cfg), dev, seed)
    key = _CFG_INDEX.get(cfg_id) if dataset is None else None
    if key is not None and (key, dev) in _EXTRACTORS:
        return _EXTRACTORS[(key, dev)]
    if dataset is None:
        from diffattr.data import load_dataset

        dataset = load_dataset(data_cfg)
    key = extractor_key(data_cfg, dataset, kind, seed)
    _CFG_INDEX[cfg_id] = key
    if (key, dev) not in _EXTRACTORS:
        _EXTRACTORS[(key, dev)] = _load_or_train(data_cfg, dataset, key, seed, dev)
    return _EXTRACTORS[(key, dev)]


def _load_or_train(data_cfg: DataConfig, dataset, key: str, seed: int, device: str):
    directory = features_dir(key)
    if (directory / ClassifierExtractor.RECORD).is_file():
        try:
            return ClassifierExtractor.load(directory, device)
        except (OSError, KeyError, ValueError, RuntimeError):
            pass  # unreadable or incompatible cache entry: retrain and overwrite it
    model, record = train_classifier(
        dataset.images, dataset.labels, len(dataset.class_names), seed=seed, device=device
    )
    record.update(
        name=f"{dataset.name}-cnn",
        key=key,
        arch=ARCH,
        recipe=RECIPE,
        seed=seed,
        hparams=model.hparams,
        data=dataset_identity(data_cfg, dataset),
    )
    extractor = ClassifierExtractor(model, record["name"], key, record, device)
    extractor.save(directory)
    return extractor
