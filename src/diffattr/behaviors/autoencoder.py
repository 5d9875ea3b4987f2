"""The label-free feature space ``autoencoder``: a small convolutional autoencoder trained on
the run's training images alone (no labels, no contributors), whose bottleneck is the feature.

Architecture (``ConvAutoencoder``): the encoder is conv3x3-ReLU x 3 (16, 32, 64 channels;
stride-2 layers until about 4 px remain, as ``SmallCNN``), flattened, then a linear layer to
``dim`` (64) features. The decoder mirrors it: linear, then per stage a nearest upsample to
the encoder's size and conv3x3-ReLU, and a final conv3x3 + tanh to the image. No batch
normalisation, so a feature depends on its image only.

Training: mean squared reconstruction error, Adam (lr 2e-3, weight decay 1e-5) with cosine
decay over ``steps`` (600) steps of 128 images, on 85 % of the images (seeded split;
the other 15 % give the recorded held-out reconstruction error). Initialisation, split and
batches are seeded, so a CPU run is bit-for-bit repeatable.

Cache: ``<cache_dir>/features/<key>/autoencoder.safetensors`` + ``autoencoder.json``; the
key hashes the images' content, the recipe, ``dim``, ``steps`` and the seed.

What it sees: whatever distinguishes images in pixel structure -- noise, blur, inversion
land far from natural images of the training data. It does not know what the images
*show*, so it has no class probabilities: ``is`` and ``class-entropy`` are not defined in it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffattr.behaviors.features import (
    HOLDOUT,
    FeatureExtractor,
    _strides,
    atomic_save_tensors,
    features_dir,
    holdout_split,
    remembered,
    stable_hash,
    tensor_digest,
)
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

ARCH = "ae-v1"
WIDTHS = (16, 32, 64)
BATCH = 128
LR = 2e-3
RECIPE = {
    "arch": ARCH,
    "widths": list(WIDTHS),
    "holdout": HOLDOUT,
    "batch": BATCH,
    "lr": LR,
    "optimizer": "adam-wd1e-5-cosine",
    "loss": "mse",
}


def _down(size: int, stride: int) -> int:
    return size if stride == 1 else (size - 1) // 2 + 1


class ConvAutoencoder(nn.Module):
    """Encoder (conv stack -> linear to ``dim``) and a mirrored decoder."""

    def __init__(self, channels: int, image_size: int, dim: int = 64) -> None:
        super().__init__()
        self.hparams = {"channels": channels, "image_size": image_size, "dim": dim}
        strides = _strides(image_size)
        enc: list[nn.Module] = []
        sizes = [image_size]
        c_in = channels
        for width, stride in zip(WIDTHS, strides, strict=True):
            enc += [nn.Conv2d(c_in, width, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
            sizes.append(_down(sizes[-1], stride))
            c_in = width
        self.encoder = nn.Sequential(*enc)
        self.sizes = sizes
        flat = c_in * sizes[-1] * sizes[-1]
        self.to_code = nn.Linear(flat, dim)
        self.from_code = nn.Linear(dim, flat)
        widths_out = list(WIDTHS[::-1][1:]) + [WIDTHS[0]]
        self.decoder = nn.ModuleList(
            nn.Conv2d(w_in, w_out, 3, padding=1)
            for w_in, w_out in zip(WIDTHS[::-1], widths_out, strict=True)
        )
        self.to_image = nn.Conv2d(WIDTHS[0], channels, 3, padding=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        s = self.sizes[-1]
        h = F.relu(self.from_code(z)).view(z.shape[0], WIDTHS[-1], s, s)
        for conv, size in zip(self.decoder, self.sizes[-2::-1], strict=True):
            if h.shape[-1] != size:
                h = F.interpolate(h, size=(size, size), mode="nearest")
            h = F.relu(conv(h))
        return torch.tanh(self.to_image(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@torch.no_grad()
def _mse(model: ConvAutoencoder, x: torch.Tensor, device, bs: int = 1000) -> float:
    total = 0.0
    for s in range(0, len(x), bs):
        xb = x[s : s + bs].to(device)
        total += float(F.mse_loss(model(xb), xb, reduction="sum"))
    return total / x.numel()


def train_autoencoder(
    images: torch.Tensor,
    *,
    dim: int = 64,
    steps: int = 600,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """Train ``ConvAutoencoder`` on ``images`` (N, C, H, W) in [-1, 1]; return it and its
    record (held-out and training reconstruction MSE, steps, seconds)."""
    x = torch.as_tensor(images, dtype=torch.float32).cpu()
    if x.ndim != 4 or len(x) < 2:
        raise DiffattrError("the autoencoder needs (N, C, H, W) images with N >= 2")
    device = torch.device(device)
    train_idx, hold_idx = holdout_split(len(x), HOLDOUT, seed)
    xt = x[train_idx]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvAutoencoder(x.shape[1], x.shape[-1], dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    bs = min(BATCH, len(xt))
    t0 = time.perf_counter()
    model.train()
    perm, pos = torch.randperm(len(xt), generator=gen), 0
    for _ in range(steps):
        if pos + bs > len(xt):
            perm, pos = torch.randperm(len(xt), generator=gen), 0
        xb = xt[perm[pos : pos + bs]].to(device)
        pos += bs
        loss = F.mse_loss(model(xb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    record = {
        "train_mse": _mse(model, xt, device),
        "heldout_mse": _mse(model, x[hold_idx], device) if len(hold_idx) else None,
        "num_train": len(train_idx),
        "num_heldout": len(hold_idx),
        "steps": steps,
        "train_seconds": round(time.perf_counter() - t0, 3),
    }
    return model, record


class AutoencoderExtractor(FeatureExtractor):
    """Bottleneck features of a trained ``ConvAutoencoder``; no class probabilities."""

    WEIGHTS = "autoencoder.safetensors"
    RECORD = "autoencoder.json"

    def __init__(self, model: ConvAutoencoder, key: str, record: dict, device="cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.name = "autoencoder"
        self.key = key
        self.record = record
        self.channels = model.hparams["channels"]
        self.image_size = model.hparams["image_size"]
        self.num_classes = None

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.model.encode(x), None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            heldout_mse=self.record.get("heldout_mse"),
            train_mse=self.record.get("train_mse"),
            dim=self.model.hparams["dim"],
        )
        return out

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        atomic_save_tensors(directory / self.WEIGHTS, self.model.state_dict())
        atomic_write_text(
            directory / self.RECORD, json.dumps(self.record, indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def load(cls, directory: Path, device="cpu") -> AutoencoderExtractor:
        from safetensors.torch import load_file

        directory = Path(directory)
        record = json.loads((directory / cls.RECORD).read_text())
        hp = record["hparams"]
        model = ConvAutoencoder(hp["channels"], hp["image_size"], hp["dim"])
        model.load_state_dict(load_file(directory / cls.WEIGHTS), strict=True)
        return cls(model, record["key"], record, device)


def autoencoder_space(
    images: torch.Tensor,
    *,
    dim: int = 64,
    steps: int = 600,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path,
) -> AutoencoderExtractor:
    """The autoencoder of ``images``: from memory, from the disk cache, else trained."""
    identity = {
        "space": "autoencoder",
        "images": tensor_digest(images),
        "recipe": RECIPE,
        "dim": dim,
        "steps": steps,
        "seed": seed,
    }
    key = stable_hash(identity)

    def make() -> AutoencoderExtractor:
        directory = features_dir(cache_dir, key)
        if (directory / AutoencoderExtractor.RECORD).is_file():
            try:
                return AutoencoderExtractor.load(directory, device)
            except (OSError, KeyError, ValueError, RuntimeError):
                pass  # unreadable or incompatible cache entry: retrain and overwrite it
        model, record = train_autoencoder(images, dim=dim, steps=steps, seed=seed, device=device)
        record.update(key=key, hparams=model.hparams, identity=identity)
        ext = AutoencoderExtractor(model, key, record, device)
        ext.save(directory)
        return ext

    return remembered(key, device, make, features_dir(cache_dir, key))  # type: ignore[return-value]


def build(settings, dataset, *, device="cpu", cache_dir: str | Path, seed: int = 0):
    """``autoencoder`` space of a run: trained on the run's training images."""
    return autoencoder_space(
        dataset.images,
        dim=settings.dim,
        steps=settings.steps,
        seed=seed,
        device=device,
        cache_dir=cache_dir,
    )
