"""A local CLIP image encoder as a feature space (``feature-similarity`` with
``space = "clip:<dir>"``): a Hugging Face CLIP checkpoint directory read from disk only
(``transformers``, no download). Images in [-1, 1] are mapped to [0, 1], grey images
repeated to RGB, resized (bicubic) to the encoder's input size and normalised with CLIP's
mean and standard deviation; the features are the projected image embeddings."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from diffattr.errors import DiffattrError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipFeatures:
    """``ClipFeatures(dir)(images) -> (N, d)`` image embeddings of a local CLIP model."""

    def __init__(self, directory: str | Path, device: str | torch.device = "cpu") -> None:
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise DiffattrError(f"CLIP model directory {str(path)!r} does not exist")
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError:
            raise DiffattrError("CLIP features need the transformers package") from None
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DiffattrError(f"cannot load a CLIP model from {str(path)!r}: {exc}") from None
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.size = int(model.config.image_size)
        self.key = f"clip:{path.resolve()}:{_weights_stamp(path)}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images).float().to(self.device)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DiffattrError(f"CLIP needs (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
        x = ((x + 1) / 2).clamp(0, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            x = x.clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        out = self.model(pixel_values=(x - mean) / std)
        return out.image_embeds.float().cpu()

    features = __call__


def _weights_stamp(path: Path) -> str:
    """Names, sizes and modification times of the weight files (identifies the weights)."""
    parts = []
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json"):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return ";".join(parts)
