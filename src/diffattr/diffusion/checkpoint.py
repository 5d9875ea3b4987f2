"""Model directories in diffusers' format, written atomically.

Layout of a model directory::

    model_index.json, scheduler/, unet/        DDPMPipeline.from_pretrained(dir) loads these
                                               (unet/ holds the EMA weights used for sampling)
    diffattr.json                              what made the model (config, steps, timings)
    training/unet/                             raw (non-EMA) weights, to continue training
    training/optimizer.pt, training/state.json Adam state (tensors only) and EMA step

Pruned UNets cannot be described by a diffusers config alone; they are saved by
``diffattr.sparsify.checkpoint`` (widths + config + safetensors, no pickle) and load through
``load_unet`` the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMPipeline, UNet2DModel

from diffattr.diffusion.unet import make_scheduler
from diffattr.errors import DiffattrError

PRUNED_MARKER = "pruned.json"


def save_unet(unet: torch.nn.Module, directory: Path) -> None:
    """Save a UNet (dense via ``save_pretrained``; pruned via the sparsify checkpoint)."""
    if getattr(unet, "diffattr_pruning", None) is not None:
        from diffattr.sparsify.checkpoint import save_pruned_unet

        save_pruned_unet(unet, directory)
    else:
        unet.save_pretrained(directory, safe_serialization=True)


def load_unet(directory: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    directory = Path(directory)
    if (directory / PRUNED_MARKER).exists():
        from diffattr.sparsify.checkpoint import load_pruned_unet

        unet = load_pruned_unet(directory)
    else:
        if not (directory / "config.json").exists():
            raise DiffattrError(f"no UNet in {directory} (config.json missing)")
        unet = UNet2DModel.from_pretrained(directory)
    return unet.to(device)


@dataclass
class LoadedModel:
    unet: torch.nn.Module  # EMA weights: what samples are drawn from
    raw_unet: torch.nn.Module | None = None
    optimizer_state: dict | None = None
    ema_step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def is_model_dir(directory: Path) -> bool:
    d = Path(directory)
    return (d / "unet").is_dir() and (d / "diffattr.json").is_file()


def save_model(
    out_dir: str | Path,
    unet: torch.nn.Module,
    *,
    raw_unet: torch.nn.Module | None = None,
    optimizer_state: dict | None = None,
    ema_step: int = 0,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a model directory atomically (temporary sibling, then rename).

    An existing directory is replaced only once the new one is complete, so a kill at any
    moment leaves either the old or the new model, never a half-written one.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if getattr(unet, "diffattr_pruning", None) is None:
            DDPMPipeline(unet=unet, scheduler=make_scheduler()).save_pretrained(
                tmp, safe_serialization=True
            )
        else:
            save_unet(unet, tmp / "unet")
            make_scheduler().save_pretrained(tmp / "scheduler")
        if raw_unet is not None:
            save_unet(raw_unet, tmp / "training" / "unet")
        if optimizer_state is not None or raw_unet is not None:
            (tmp / "training").mkdir(exist_ok=True)
            if optimizer_state is not None:
                torch.save(optimizer_state, tmp / "training" / "optimizer.pt")
            (tmp / "training" / "state.json").write_text(json.dumps({"ema_step": int(ema_step)}))
        (tmp / "diffattr.json").write_text(json.dumps(meta or {}, indent=2, sort_keys=True))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def load_model(
    directory: str | Path, device: str | torch.device = "cpu", training: bool = False
) -> LoadedModel:
    """Load a model directory; with ``training=True`` also the raw weights and optimizer."""
    d = Path(directory)
    if not is_model_dir(d):
        raise DiffattrError(
            f"{d} is not a diffattr model directory (expected unet/ and diffattr.json; "
            "make one with `diffattr train`)"
        )
    meta = json.loads((d / "diffattr.json").read_text())
    unet = load_unet(d / "unet", device)
    out = LoadedModel(unet=unet, meta=meta, path=d)
    if training and (d / "training" / "unet").is_dir():
        out.raw_unet = load_unet(d / "training" / "unet", device)
        opt = d / "training" / "optimizer.pt"
        if opt.exists():
            out.optimizer_state = torch.load(opt, map_location=device, weights_only=True)
        state = json.loads((d / "training" / "state.json").read_text())
        out.ema_step = int(state.get("ema_step", 0))
    return out
