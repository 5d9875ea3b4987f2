"""Writing image grids (PNG) for people to look at."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, min_cell: int = 32
) -> Path:
    """Save images as one PNG grid; tiny images are upscaled (nearest) to ``min_cell`` px."""
    from PIL import Image

    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    scale = max(1, math.ceil(min_cell / max(h, w)))
    pad = 1
    H, W = h * scale + pad, w * scale + pad
    canvas = np.full((ncol * H + pad, nrow * W + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        tile = arr[i].repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[pad + r * H : pad + r * H + h * scale, pad + q * W : pad + q * W + w * scale] = tile
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
