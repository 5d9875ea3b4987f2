"""Stage 1 of the method: the full model theta* (trained on all data) and the null model.

A model directory holds diffusers' DDPMPipeline layout plus ``diffattr.json`` with the
``RunConfig`` that made it, so later stages (pruning, counterfactuals, measuring) rebuild
the dataset, the architecture and the sampling protocol from the directory alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from diffattr.config import RunConfig
from diffattr.data import ImageDataset, load_dataset
from diffattr.diffusion.checkpoint import is_model_dir, load_model, save_model
from diffattr.diffusion.sample import generate
from diffattr.diffusion.train import train
from diffattr.diffusion.unet import count_parameters, make_unet
from diffattr.errors import DiffattrError
from diffattr.images import save_grid


def model_meta(cfg: RunConfig, dataset: ImageDataset, **extra) -> dict:
    return {
        "config": cfg.to_dict(),
        "dataset": {
            "name": dataset.name,
            "size": len(dataset),
            "image_size": dataset.image_size,
            "channels": dataset.channels,
            "class_names": dataset.class_names,
        },
        **extra,
    }


def train_full_model(
    cfg: RunConfig,
    out_dir: str | Path,
    dataset: ImageDataset | None = None,
    progress: bool = True,
    grid_samples: int = 64,
) -> Path:
    """Train (or resume training of) theta* on all data; write samples.png beside it.

    ``out_dir`` doubles as the checkpoint: re-running resumes from the last checkpoint, and
    a finished model is returned as it is.
    """
    out = Path(out_dir)
    dataset = dataset if dataset is not None else load_dataset(cfg.data)
    if is_model_dir(out):
        meta = load_model(out).meta
        old = meta.get("config", {})
        for section in ("data", "model", "train"):
            if old.get(section) != cfg.to_dict().get(section):
                raise DiffattrError(
                    f"{out} holds a model trained with other {section} settings; "
                    "pass another --out or delete it"
                )
        if meta.get("train_step") == cfg.train.steps and meta.get("kind") == "full":
            return out
    unet = make_unet(cfg.model.preset, dataset.image_size, dataset.channels, cfg.model.seed)
    meta = model_meta(cfg, dataset, kind="full", parameters=count_parameters(unet))
    t0 = time.perf_counter()
    result = train(
        unet,
        dataset.images,
        cfg.train,
        device=cfg.device,
        checkpoint_dir=out,
        checkpoint_meta=meta,
        progress=progress,
        desc="train full model",
    )
    meta["train_seconds"] = round(time.perf_counter() - t0, 3)
    meta["train_step"] = cfg.train.steps
    meta["train_config"] = cfg.train.model_dump()
    result.save(out, meta)
    if grid_samples:
        images = generate(
            result.ema.model,
            grid_samples,
            ddim_steps=cfg.sample.ddim_steps,
            seed=cfg.sample.seed,
            device=cfg.device,
        )
        save_grid(images, out / "samples.png")
    return out


def make_null_model(cfg: RunConfig, out_dir: str | Path, dataset: ImageDataset) -> Path:
    """The untrained initialisation (same preset and seed as theta*): F of the empty set."""
    out = Path(out_dir)
    if is_model_dir(out):
        return out
    unet = make_unet(cfg.model.preset, dataset.image_size, dataset.channels, cfg.model.seed)
    save_model(out, unet, meta=model_meta(cfg, dataset, kind="null", train_step=0))
    return out
