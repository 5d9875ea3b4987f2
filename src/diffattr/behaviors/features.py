"""Feature extractors for the behaviors, all offline, and the package's CNN classifiers.

``FeatureExtractor`` is the interface: ``features_and_probs(images) -> (N, d), (N, C) or
None`` with images as (N, C, H, W) tensors in [-1, 1]. Which extractor a run uses is chosen
by ``diffattr.behaviors.spaces`` (``FEATURES``; see its docstring for ``auto``).

This module trains the classifier spaces: ``digits-cnn``, ``fashion-mnist-cnn``,
``cifar-cnn`` (a named dataset's semantic classes) and ``label-cnn`` (a folder/CSV
dataset's semantic ``label`` column) -- never a classifier of the contributors. Each is a
small CNN (``SmallCNN``) trained deterministically (seeded initialisation, split and
batches; Adam with cosine decay; a fixed number of epochs from the training-set size) on
85 % of its images; the other 15 % (seeded) give the recorded held-out accuracy. Its
features are the penultimate layer (global-average-pooled convolutional features) and its
probabilities the softmax of its logits.

Cache: ``<cache_dir>/features/<key>/classifier.safetensors`` + ``classifier.json`` (the key
fields and accuracy; weights written first, both atomically). The key hashes the space
name, a digest of the training images and labels (content), the class names, the recipe
and the seed. Extractors are also kept in memory per (key, device) for the whole process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffattr.behaviors.spaces import CifarCNNFeatures, FashionMnistCNNFeatures
from diffattr.data.cifar import load_cifar10, load_cifar100
from diffattr.data.digits import load_digits
from diffattr.data.fashion_mnist import DEFAULT_DIR, load_fashion_mnist
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

ARCH = "cnn-v1"
WIDTHS = (32, 64, 128)
HOLDOUT = 0.15
TARGET_STEPS = 400  # optimisation steps aimed for; epochs = clip(ceil(400 / steps per epoch))
MIN_EPOCHS, MAX_EPOCHS = 3, 40
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

    def describe(self) -> dict[str, Any]:
        """What a report says about the space: name, cache key, kind, accuracy if any."""
        return {
            "name": self.name,
            "key": self.key,
            "kind": type(self).__name__,
            "classes": self.num_classes,
        }

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

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            heldout_accuracy=self.heldout_accuracy,
            train_accuracy=self.record.get("train_accuracy"),
            class_names=self.record.get("class_names"),
            trained_on=self.record.get("source"),
        )
        return out

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


# ----------------------------------------------------------------------------- content keys

_DIGESTS: dict[int, tuple[weakref.ref, tuple, str]] = {}


def tensor_digest(x: torch.Tensor) -> str:
    """SHA-256 prefix of a tensor's shape and values (remembered per live tensor object, so a
    run's training images are hashed once per process)."""
    hit = _DIGESTS.get(id(x))
    if hit is not None and hit[0]() is x and hit[1] == tuple(x.shape):
        return hit[2]
    a = np.ascontiguousarray(x.detach().cpu().numpy())
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    digest = h.hexdigest()[:16]
    try:
        _DIGESTS[id(x)] = (weakref.ref(x), tuple(x.shape), digest)
    except TypeError:
        pass
    return digest


def module_digest(model: nn.Module) -> str:
    """Digest of a module's state dict (names, shapes, values): a cache key for its weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()[:16]


def features_dir(cache_dir: str | Path, key: str) -> Path:
    """``<cache_dir>/features/<key>``: a trained space's weights and its reference stats."""
    return Path(cache_dir) / "features" / key


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repeating, RGB -> grey by averaging; unchanged if it matches."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise DiffattrError(f"cannot convert {c}-channel images to {channels} channels")


_EXTRACTORS: dict[tuple[str, str], FeatureExtractor] = {}


def clear_memory_cache() -> None:
    """Forget extractors kept in memory (the disk cache stays)."""
    _EXTRACTORS.clear()
    _DIGESTS.clear()


def remembered(
    key: str, device: str | torch.device, make, save_to: str | Path | None = None
) -> FeatureExtractor:
    """The extractor of ``key`` on ``device`` from memory, else ``make()`` (kept).

    A trained space passes its cache folder as ``save_to``: one kept in memory from another
    run's folder is written there too, so that this run's workers load these weights
    instead of training their own (another thread count trains other floats)."""
    k = (key, str(torch.device(device)))
    if k not in _EXTRACTORS:
        _EXTRACTORS[k] = make()
    ext = _EXTRACTORS[k]
    if save_to is not None and not (Path(save_to) / ext.RECORD).is_file():
        ext.save(Path(save_to))
    return ext


# ----------------------------------------------------------------------------- classifier spaces


def classifier_space(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    *,
    seed: int,
    device: str | torch.device,
    cache_dir: str | Path,
    source: dict[str, Any] | None = None,
) -> ClassifierExtractor:
    """The classifier space ``name`` trained on (images, labels): from memory, from
    ``<cache_dir>/features/<key>/``, else trained and cached."""
    identity = {
        "space": name,
        "images": tensor_digest(images),
        "labels": tensor_digest(torch.as_tensor(labels, dtype=torch.int64)),
        "class_names": list(class_names),
        "recipe": RECIPE,
        "seed": seed,
    }
    key = stable_hash(identity)

    def make() -> ClassifierExtractor:
        directory = features_dir(cache_dir, key)
        if (directory / ClassifierExtractor.RECORD).is_file():
            try:
                return ClassifierExtractor.load(directory, device)
            except (OSError, KeyError, ValueError, RuntimeError):
                pass  # unreadable or incompatible cache entry: retrain and overwrite it
        model, record = train_classifier(images, labels, len(class_names), seed=seed, device=device)
        record.update(
            name=name,
            key=key,
            hparams=model.hparams,
            identity=identity,
            class_names=list(class_names),
            source=source or {},
        )
        extractor = ClassifierExtractor(model, name, key, record, device)
        extractor.save(directory)
        return extractor

    return remembered(key, device, make, features_dir(cache_dir, key))  # type: ignore[return-value]


def _named_data(settings, dataset) -> tuple[torch.Tensor, torch.Tensor, list[str], dict]:
    """Training images, labels and class names of a named-dataset classifier space, at the
    run's image size and channels: the run's own data when they are that dataset, else the
    named dataset's training split from its files."""
    size = dataset.image_size
    if isinstance(settings, CifarCNNFeatures):
        target = settings.resolved_variant(dataset.name)
        own = target == dataset.name and settings.path is None
    else:
        target = settings.dataset
        own = target == dataset.name
    if own:
        return dataset.images, dataset.labels, list(dataset.class_names), {"run_data": target}
    if target == "digits":
        named = load_digits(size)
    elif isinstance(settings, FashionMnistCNNFeatures):
        named = load_fashion_mnist(settings.path or DEFAULT_DIR, "train", size)
    elif target == "cifar10":
        named = load_cifar10(settings.path, "train", size)
    elif target in ("cifar100", "cifar20"):
        subset = "cifar20" if target == "cifar20" else None
        named = load_cifar100(settings.path, "train", size, subset=subset)
    else:
        raise DiffattrError(f"{settings.name}: no named dataset {target!r}")
    images = match_channels(named.images, dataset.channels)
    source = {"named_data": target, "path": getattr(settings, "path", None)}
    return images, named.labels, list(named.class_names), source


def build_named_classifier(
    settings, dataset, *, device="cpu", cache_dir: str | Path, seed: int = 0
) -> ClassifierExtractor:
    """``digits-cnn`` / ``fashion-mnist-cnn`` / ``cifar-cnn`` for a run's ``dataset``."""
    images, labels, names, source = _named_data(settings, dataset)
    return classifier_space(
        settings.space_name(dataset.name),
        images,
        labels,
        names,
        seed=seed,
        device=device,
        cache_dir=cache_dir,
        source=source,
    )


def build_label_classifier(
    settings, dataset, *, device="cpu", cache_dir: str | Path, seed: int = 0
) -> ClassifierExtractor:
    """``label-cnn``: trained on the dataset's semantic labels (the CSV ``label`` column)."""
    if dataset.semantic_labels is None:
        raise DiffattrError(
            "label-cnn needs semantic labels: add a 'label' column to the CSV of path,contributor"
        )
    return classifier_space(
        "label-cnn",
        dataset.images,
        dataset.semantic_labels,
        list(dataset.semantic_names),
        seed=seed,
        device=device,
        cache_dir=cache_dir,
        source={"semantic_labels": dataset.name},
    )
