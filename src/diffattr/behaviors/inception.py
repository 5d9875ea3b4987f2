"""The FID Inception-v3 of pytorch-fid, from a local weights file (never downloaded).

FID is defined with the 2048-d pool features of the TensorFlow Inception-v3 of 2015-12-05
(Heusel et al. 2017); pytorch-fid ported its weights to ``pt_inception-2015-12-05-6726825d.pth``
(the suffix is the start of the file's SHA-256). This module rebuilds that network in plain
torch with pytorch-fid's patches of torchvision's Inception-v3 (Szegedy et al. 2016):
average pools that ignore padding in the A, C and first E blocks, a max pool in the last E
block, and a 1008-way classifier. Its parameter names match the file, which loads strictly.

Give the file with ``features = { name = "inception", path = FILE }``, ``diffattr measure
--features inception --features-path FILE`` or ``$DIFFATTR_INCEPTION_WEIGHTS``. Images of
any size are resized bilinearly to 299 x 299; grey images are repeated over three channels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diffattr.behaviors.features import FeatureExtractor, remembered
from diffattr.errors import DiffattrError
from diffattr.fileio import file_sha256

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
SHA256_PREFIX = "6726825d"
ENV_VAR = "DIFFATTR_INCEPTION_WEIGHTS"
NUM_CLASSES = 1008


class _Conv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3) + ReLU, as Inception's BasicConv2d."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves padded zeros out of the average.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(c_in, 64, 1)
        self.branch5x5_1 = _Conv(c_in, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(c_in, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class _BlockB(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(c_in, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(c_in, 192, 1)
        self.branch7x7_1 = _Conv(c_in, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(c_in, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class _BlockD(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = _Conv(c_in, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(c_in, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _Conv(c_in, 320, 1)
        self.branch3x3_1 = _Conv(c_in, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(c_in, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        # pytorch-fid: the last block of the FID network max-pools instead of averaging.
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 with pytorch-fid's FID patches; ``forward`` -> (pool3 (N, 2048), logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) in [-1, 1]; resized to 299 x 299 here."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean(dim=(2, 3))
        return pool, self.fc(pool)


def resolve_weights(path: str | Path | None) -> Path:
    """The weights file from the argument or ``$DIFFATTR_INCEPTION_WEIGHTS``; clear errors."""
    if path is None:
        path = os.environ.get(ENV_VAR)
    if not path:
        raise DiffattrError(
            f"Inception features need pytorch-fid's weights file {WEIGHTS_NAME} on disk: give "
            f"features.path (--features-path FILE) or set {ENV_VAR} (nothing is downloaded)"
        )
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / WEIGHTS_NAME
    if not p.is_file():
        raise DiffattrError(
            f"Inception weights not found: {p} (copy {WEIGHTS_NAME} there or point "
            f"features.path / {ENV_VAR} at it)"
        )
    return p


def load_fid_inception(path: str | Path | None = None, check: bool = True) -> FIDInceptionV3:
    """Build the FID Inception and load the local weights (SHA-256 checked, strict keys)."""
    p = resolve_weights(path)
    if check:
        digest = file_sha256(p)
        if not digest.startswith(SHA256_PREFIX):
            raise DiffattrError(
                f"{p} is not {WEIGHTS_NAME}: its SHA-256 {digest[:16]}... does not start "
                f"with {SHA256_PREFIX}"
            )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a bad file
        raise DiffattrError(f"cannot read Inception weights {p}: {e}") from None
    model = FIDInceptionV3()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DiffattrError(f"{p} does not hold the FID Inception weights: {e}") from None
    return model.eval().requires_grad_(False)


class InceptionExtractor(FeatureExtractor):
    """pool3 features (2048-d) and 1008-way softmax of the FID Inception-v3."""

    def __init__(self, model: FIDInceptionV3, device="cpu", key: str = "inception") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = "inception"
        self.key = key
        self.channels = 3
        self.image_size = None
        self.num_classes = NUM_CLASSES

    @classmethod
    def get(cls, path: str | Path | None = None, device="cpu") -> InceptionExtractor:
        """One extractor per (weights file, device) per process."""
        p = resolve_weights(path)
        return remembered(
            f"inception:{p.resolve()}",
            device,
            lambda: cls(load_fid_inception(p), device, key=f"inception-{SHA256_PREFIX}"),
        )

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise DiffattrError(
                f"Inception needs (N, 1 or 3, H, W) images with N >= 1, got {tuple(x.shape)}"
            )
        return x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


def build(settings, dataset=None, *, device="cpu", cache_dir=None, seed: int = 0):
    """The ``inception`` feature space (settings ``path`` or ``$DIFFATTR_INCEPTION_WEIGHTS``)."""
    return InceptionExtractor.get(settings.path, device=device)
