"""``unconditional``: a pixel-space diffusers ``UNet2DModel`` (DDPM; Ho et al. 2020).

The paper's CIFAR-20 setting (a 35.7 M-parameter DDPM UNet trained from scratch), and the
package's digits / Fashion-MNIST demos with smaller architectures. A model directory is a
``DDPMPipeline`` (``DDPMPipeline.from_pretrained(dir)`` samples it) plus ``diffattr.json``;
a pruned UNet no longer matches any diffusers config and is stored by
``diffattr.sparsify.pruned_io`` (widths + config + safetensors, no pickle) in ``unet/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.baselines.target import DiffusionTarget
from diffattr.diffusion.architectures import SCHEDULER_CONFIG
from diffattr.diffusion.checkpoint import (
    read_meta,
    read_training_state,
    write_model_dir,
    write_training_state,
)
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import check_image_size, make_scheduler, make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelFamily, ModelState, TrainingSet
from diffattr.families.settings import UnconditionalSettings, pipeline_class
from diffattr.sparsify.prune import prune_unet
from diffattr.sparsify.pruned_io import is_pruned_unet_dir, load_pruned_unet, save_pruned_unet


def save_unet(unet: nn.Module, directory: Path) -> None:
    """Save a UNet (dense via ``save_pretrained``; pruned via the sparsify checkpoint)."""
    if getattr(unet, "diffattr_pruning", None) is not None:
        save_pruned_unet(unet, directory)
    else:
        unet.save_pretrained(directory, safe_serialization=True)


def load_unet(directory: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a dense or pruned ``UNet2DModel``; a missing or broken file is a one-line error."""
    from diffusers import UNet2DModel

    directory = Path(directory)
    if is_pruned_unet_dir(directory):
        unet = load_pruned_unet(directory)
    else:
        if not (directory / "config.json").exists():
            raise DiffattrError(f"no UNet in {directory} (config.json missing)")
        try:
            unet = UNet2DModel.from_pretrained(directory)
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DiffattrError(
                f"cannot load the UNet in {directory} ({first}); delete the model directory "
                "to redo it"
            ) from None
    return unet.to(device)


def prune_family_unet(
    family: ModelFamily, model: nn.Module, settings: Any, examples: TrainingSet
) -> tuple[nn.Module, dict[str, Any]]:
    """Channel pruning of a family's ``UNet2DModel`` with torch-pruning at the method's
    settings (``diffattr.sparsify.prune``; attention q/k/v grouped by head), scored with
    the family's own loss on ``examples`` (with their conditions, e.g. class labels);
    shared by the pixel, class-conditional and latent families."""
    cond = examples.cond.to(family.device) if examples.cond is not None else None
    pruned, report = prune_unet(
        model,
        ratio=settings.ratio,
        pruner=settings.pruner,
        example_images=examples.x0.to(family.device),
        thr=settings.thr,
        seed=settings.seed,
        round_to=settings.round_to,
        max_timesteps=settings.prune_timesteps,
        loss_fn=lambda m, x0, t, noise: family.loss(m, x0, t, noise, cond),
    )
    return pruned, report.to_dict()


class UnconditionalFamily(ModelFamily):
    """A pixel-space UNet trained from scratch; the null model is its initialisation."""

    settings: UnconditionalSettings

    # ------------------------------------------------------------------ examples

    def training_set(self, dataset, cache_dir: Path | None = None) -> TrainingSet:
        return TrainingSet(dataset.images, None, {"space": "pixels"})

    def check_data(self, dataset) -> None:
        check_image_size(self.settings.architecture, dataset.image_size)

    # ------------------------------------------------------------------ models

    def init_model(self, data: TrainingSet, seed: int) -> nn.Module:
        _, channels, size, _ = data.x0.shape
        return make_unet(self.settings.architecture, size, channels, seed)

    def predict_noise(self, model: nn.Module, x_t, t, cond: Any) -> torch.Tensor:
        return model(x_t, t).sample

    def noise_scheduler(self):
        return make_scheduler(SCHEDULER_CONFIG)

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        model: nn.Module,
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int = 500,
        start: int = 0,
        progress: bool = False,
        conditions: Any = None,
    ) -> torch.Tensor:
        self.no_conditions(conditions)
        return generate(
            model,
            num_samples,
            ddim_steps=ddim_steps,
            seed=seed,
            batch_size=batch_size,
            device=self.device,
            start=start,
            progress=progress,
        )

    def baseline_target(
        self, model: nn.Module, data: TrainingSet, *, num_samples: int, seed: int, ddim_steps: int
    ):

        return DiffusionTarget.from_unet(
            model,
            data.x0,
            num_generated=num_samples,
            ddim_steps=ddim_steps,
            seed=seed,
            scheduler=self.noise_scheduler(),
            device=self.device,
        )

    # ------------------------------------------------------------------ pruning

    def prune(
        self, model: nn.Module, settings: Any, examples: TrainingSet
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Channel pruning with torch-pruning (see ``diffattr.sparsify.prune``)."""
        return prune_family_unet(self, model, settings, examples)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path, state: ModelState, meta: dict[str, Any]) -> Path:
        def fill(tmp: Path) -> None:
            from diffusers import DDPMPipeline

            unet = state.model
            if getattr(unet, "diffattr_pruning", None) is None:
                DDPMPipeline(unet=unet, scheduler=self.noise_scheduler()).save_pretrained(
                    tmp, safe_serialization=True
                )
            else:
                save_unet(unet, tmp / "unet")
                self.noise_scheduler().save_pretrained(tmp / "scheduler")
            if state.raw is not None:
                save_unet(state.raw, tmp / "training" / "unet")
            write_training_state(tmp, state.optimizer_state, state.ema_step, state.raw is not None)

        return write_model_dir(directory, fill, meta)

    def is_model_dir(self, directory: str | Path) -> bool:
        d = Path(directory)
        return (d / "unet").is_dir() and (d / "diffattr.json").is_file()

    def load(self, directory: str | Path, training: bool = False) -> ModelState:
        """A model directory written by this family, or a diffusers ``DDPMPipeline``
        directory the package did not train (no ``diffattr.json``)."""
        d = Path(directory)
        own = self.is_model_dir(d)
        if not own and not (pipeline_class(d) == "DDPMPipeline" and (d / "unet").is_dir()):
            raise DiffattrError(
                f"{d} is not a diffattr model directory (expected unet/ and diffattr.json; "
                "make one with `diffattr train`) nor a diffusers DDPMPipeline directory"
            )
        meta = read_meta(d) if own else {}
        state = ModelState(model=load_unet(d / "unet", self.device), meta=meta, path=d)
        if training and (d / "training" / "unet").is_dir():
            state.raw = load_unet(d / "training" / "unet", self.device)
            state.optimizer_state, state.ema_step = read_training_state(d, self.device)
        return state

    def check_model(self, directory: str | Path, dataset) -> None:
        import json

        d = Path(directory)
        own = self.is_model_dir(d)
        if not own:
            layout = pipeline_class(d)
            if layout == "LDMPipeline":
                raise DiffattrError(
                    f"full model {d} is a latent diffusion pipeline (LDMPipeline); use "
                    "[family] name = 'latent'"
                )
            if layout != "DDPMPipeline" or not (d / "unet").is_dir():
                raise DiffattrError(
                    f"full model {d} is neither a diffattr model directory (unet/ and "
                    "diffattr.json) nor a diffusers DDPMPipeline directory (model_index.json, "
                    "unet/, scheduler/)"
                )
            _check_schedule(d)
        config_path = d / "unet" / "config.json"
        if is_pruned_unet_dir(d / "unet"):
            config_path = d / "unet" / "pruned.json"
        try:
            cfg = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DiffattrError(f"{config_path} is unreadable ({e})") from None
        cfg = cfg.get("config", cfg)
        size, channels = cfg.get("sample_size"), cfg.get("in_channels")
        if isinstance(size, list | tuple):
            size = size[0]
        if channels != dataset.channels or size != dataset.image_size:
            raise DiffattrError(
                f"full model {d} generates {channels}-channel {size}x{size} images but the "
                f"data are {dataset.channels}-channel {dataset.image_size}x{dataset.image_size}"
            )
        recorded = read_meta(d).get("dataset", {}).get("size") if own else None
        if recorded is not None and recorded != len(dataset):
            raise DiffattrError(
                f"full model {d} was trained on {recorded} images but [data] has {len(dataset)}"
            )


def _check_schedule(d: Path) -> None:
    """A DDPMPipeline the package did not train must use the family's noise schedule (the
    fine-tunes and retraining continue it)."""
    import json
    import math

    path = d / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DiffattrError(f"{path} is unreadable ({e})") from None
    ours = SCHEDULER_CONFIG
    theirs = {k: cfg.get(k, ours[k]) for k in ("beta_schedule", "beta_start", "beta_end")}
    theirs["num_train_timesteps"] = cfg.get("num_train_timesteps", 1000)
    same = (
        theirs["beta_schedule"] == ours["beta_schedule"]
        and math.isclose(float(theirs["beta_start"]), ours["beta_start"], rel_tol=1e-6)
        and math.isclose(float(theirs["beta_end"]), ours["beta_end"], rel_tol=1e-6)
        and theirs["num_train_timesteps"] == ours["num_train_timesteps"]
    )
    if not same:
        raise DiffattrError(
            f"full model {d} was trained with the {theirs['beta_schedule']} schedule "
            f"{theirs['beta_start']:g} -> {theirs['beta_end']:g} over "
            f"{theirs['num_train_timesteps']} steps; the unconditional family trains with "
            "linear 0.0001 -> 0.02 over 1000 steps"
        )
