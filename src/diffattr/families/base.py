"""The model-family seam: one interface per kind of diffusion model.

Everything that differs between an unconditional pixel-space UNet, a latent diffusion model
on a frozen autoencoder, a class-conditional model and a Stable Diffusion LoRA lives behind
``ModelFamily``, so the counterfactual methods, the runner and the evaluation never branch
on the kind of model:

* **examples**: ``training_set(dataset)`` encodes the images once (pixels as they are,
  latents of a frozen autoencoder, caption embeddings, labels) into a ``TrainingSet``
  whose rows are the dataset's images; fine-tunes index it and never run an encoder;
* **models**: ``init_model`` (a fresh trainable model, e.g. for retraining),
  ``null_model`` (the model of the empty coalition), ``trainable_parameters``,
  ``predict_noise`` and ``noise_scheduler`` (what the shared training loop calls);
* **sampling**: ``sample(model, n, seed=...)`` gives n images in [-1, 1] (decoded to pixels)
  under fixed per-sample seeds and conditions;
* **pruning**: ``prune(model, settings, examples)`` (channels for UNets, rank-1 components
  for LoRA);
* **persistence**: ``save`` / ``load`` of model directories that diffusers reads, and
  ``check_model`` (is a user's model compatible with the data, before any work).

The concrete stages shared by every family — training the full model theta* (resumable)
and writing the null model — are methods of the base class.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from diffattr.data.digest import dataset_digest
from diffattr.data.load import NOT_CONTENT
from diffattr.diffusion.checkpoint import is_model_dir, read_meta
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.settings import TrainConfig
from diffattr.diffusion.stacked import sample_stacked, train_stacked
from diffattr.diffusion.train import TrainResult, diffusion_loss, train
from diffattr.errors import DiffattrError
from diffattr.families.settings import FamilySettings
from diffattr.images import save_grid
from diffattr.torchutils import count_parameters

if TYPE_CHECKING:  # the run's whole config is only read here; config.py sits above families
    from diffattr.config import RunConfig


@dataclass
class TrainingSet:
    """The encoded training examples: row i belongs to image i of the dataset.

    ``x0``: what the denoiser is trained to generate (pixels or latents), (N, C, H, W);
    ``cond``: per-example conditions (class labels, caption embeddings) or None.
    """

    x0: torch.Tensor
    cond: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> TrainingSet:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        cond = self.cond[idx] if self.cond is not None else None
        return TrainingSet(self.x0[idx], cond, dict(self.info))


@dataclass
class ModelState:
    """A loaded model: the sampled (EMA) weights, and what continues its training."""

    model: nn.Module
    raw: nn.Module | None = None
    optimizer_state: dict | None = None
    ema_step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


class FamilyCheckpoint:
    """Resumable training checkpoints of a family's model in one directory."""

    def __init__(self, family: ModelFamily, directory: Path, meta: dict[str, Any]) -> None:
        self.family = family
        self.directory = Path(directory)
        self.meta = meta

    def load(self, device: torch.device) -> ModelState | None:
        if not self.family.is_model_dir(self.directory):
            return None
        return self.family.load(self.directory, training=True)

    def save(self, result: TrainResult, step: int, cfg: TrainConfig) -> None:
        meta = dict(self.meta, train_step=step, train_config=cfg.model_dump())
        self.family.save(
            self.directory,
            ModelState(
                result.ema.model,
                raw=result.unet,
                optimizer_state=result.optimizer_state,
                ema_step=result.ema.step,
            ),
            meta,
        )


class ModelFamily(ABC):
    """One kind of diffusion model; built from its ``FamilySettings`` and a device."""

    def __init__(self, settings: FamilySettings, device: str | torch.device = "cpu") -> None:
        self.settings = settings
        self.device = torch.device(device)
        self._scheduler = None

    @property
    def name(self) -> str:
        return self.settings.name

    # ------------------------------------------------------------------ examples

    @abstractmethod
    def training_set(self, dataset, cache_dir: Path | None = None) -> TrainingSet:
        """The encoded examples of ``dataset`` (an ``ImageDataset``), cached where it pays."""

    def check_data(self, dataset) -> None:  # noqa: B027 - optional hook
        """Raise a one-line error if the family cannot model ``dataset`` (before any work)."""

    # ------------------------------------------------------------------ models

    @abstractmethod
    def init_model(self, data: TrainingSet, seed: int) -> nn.Module:
        """A freshly initialised trainable model for ``data`` (seeded)."""

    def null_model(self, data: TrainingSet) -> nn.Module:
        """The model of the empty coalition, v0 = F(null model): by default the untrained
        initialisation with the family's seed."""
        return self.init_model(data, getattr(self.settings, "seed", 0))

    @abstractmethod
    def predict_noise(
        self, model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Any
    ) -> torch.Tensor:
        """The model's noise prediction epsilon(x_t, t, cond)."""

    @abstractmethod
    def noise_scheduler(self):
        """A fresh diffusers ``DDPMScheduler`` of the family's training noise schedule."""

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters that train (all of a UNet; only the adapters of a LoRA model)."""
        return [p for p in model.parameters() if p.requires_grad]

    def loss(
        self, model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond=None
    ) -> torch.Tensor:
        """The epsilon-prediction loss (Ho et al. 2020, eq. 14) of a batch."""
        if self._scheduler is None:
            self._scheduler = self.noise_scheduler()
        self._scheduler.alphas_cumprod = self._scheduler.alphas_cumprod.to(x0.device)
        return diffusion_loss(self, model, x0, t, noise, cond, self._scheduler)

    def parameter_count(self, model: nn.Module) -> int:
        return count_parameters(model)

    # ------------------------------------------------------------------ sampling

    @abstractmethod
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
        """``num_samples`` images in [-1, 1], (N, C, H, W) on the CPU; sample i of every
        model starts from the same noise (and condition) for a given ``seed``.

        ``conditions``: one condition per sample (``generation_conditions``); None gives
        the family's own (none for an unconditional model)."""

    def generation_conditions(
        self,
        data: TrainingSet,
        kept: np.ndarray | None,
        num_samples: int,
        *,
        seed: int,
        start: int = 0,
    ) -> Any:
        """The condition of each generated sample of the model of a coalition whose data are
        the rows ``kept`` of ``data`` (None: all rows; empty: the empty coalition), for
        ``sample(..., conditions=...)``. One rule for every counterfactual method, so
        retrained, fine-tuned and training-free models are measured alike. None (the
        default) for families whose samples take no condition from the data."""
        return None

    def condition_keys(self, dataset) -> list | None:
        """What each image of ``dataset`` conditions generation on, one hashable key per
        image (a class label, a caption), read from the data without encoding anything;
        None for a family whose samples take no condition from the data. Used to check,
        before any work, that a game played through conditions can tell players apart."""
        return None

    def no_conditions(self, conditions: Any) -> None:
        """A one-line error if a family that takes no conditions is given some."""
        if conditions is not None:
            raise DiffattrError(f"the {self.name} family generates without per-sample conditions")

    @abstractmethod
    def baseline_target(
        self, model: nn.Module, data: TrainingSet, *, num_samples: int, seed: int, ddim_steps: int
    ):
        """What gradient and similarity baselines score (``diffattr.baselines.DiffusionTarget``):
        ``model`` with its noise schedule and noise predictor, the training examples, and
        ``num_samples`` generated examples drawn with the run's fixed seeds."""

    # ------------------------------------------------------------------ pruning

    @abstractmethod
    def prune(
        self, model: nn.Module, settings: Any, examples: TrainingSet
    ) -> tuple[nn.Module, dict[str, Any]]:
        """A pruned copy of ``model`` and a JSON-able report (params before/after, ...)."""

    # ------------------------------------------------------------------ persistence

    @abstractmethod
    def save(self, directory: str | Path, state: ModelState, meta: dict[str, Any]) -> Path:
        """Write a model directory atomically (diffusers-loadable where possible)."""

    @abstractmethod
    def load(self, directory: str | Path, training: bool = False) -> ModelState:
        """Load a model directory; with ``training`` also its raw weights and optimizer."""

    def is_model_dir(self, directory: str | Path) -> bool:
        return is_model_dir(directory)

    def check_model(self, directory: str | Path, dataset) -> None:  # noqa: B027
        """Raise a one-line error if the model at ``directory`` cannot be the full model of
        ``dataset`` (channels, sample size); called before any work."""

    # ------------------------------------------------------------------ training

    def fit(
        self,
        model: nn.Module,
        data: TrainingSet,
        cfg: TrainConfig,
        *,
        ema: EMA | None = None,
        optimizer_state: dict | None = None,
        checkpoint: FamilyCheckpoint | None = None,
        progress: bool = False,
        desc: str = "train",
    ) -> TrainResult:
        """Train ``model`` in place on ``data`` with the shared loop (``diffusion.train``)."""
        return train(
            model,
            data,
            cfg,
            denoiser=self,
            device=self.device,
            ema=ema,
            optimizer_state=optimizer_state,
            checkpoint=checkpoint,
            progress=progress,
            desc=desc,
        )

    # ------------------------------------------------------------------ side by side

    def stack_reason(self) -> str | None:
        """Why this family's models train one at a time, or None when several coalition
        models train and sample side by side (``fit_stacked``, ``sample_stacked``)."""
        return type(self.settings).unstacked

    def fit_stacked(
        self,
        models: list[nn.Module],
        datas: list[TrainingSet],
        cfgs: list[TrainConfig],
        *,
        emas: list[EMA],
        optimizer_states: list[dict | None],
    ) -> list[TrainResult]:
        """``fit`` of each model on its own data, the models trained side by side
        (``diffusion.stacked.train_stacked``; equal to separate ``fit`` calls to float
        tolerance)."""
        reason = self.stack_reason()
        if reason is not None:
            raise DiffattrError(f"the {self.name} family cannot stack models: {reason}")
        return train_stacked(
            models,
            datas,
            cfgs,
            denoiser=self,
            device=self.device,
            emas=emas,
            optimizer_states=optimizer_states,
        )

    def sample_stacked(
        self,
        models: list[nn.Module],
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int = 500,
        conditions: list[Any] | None = None,
    ) -> list[torch.Tensor]:
        """``sample`` of each model (``conditions[k]``: model k's, as ``sample`` takes them),
        sampled side by side where the family stacks them (``_sample_side_by_side``: the
        same images to float tolerance), else one after the other."""
        conditions = conditions if conditions is not None else [None] * len(models)
        if len(conditions) != len(models):
            raise DiffattrError("sample_stacked needs one condition set per model")
        if len(models) > 1 and self.stack_reason() is None:
            return self._sample_side_by_side(
                models,
                num_samples,
                seed=seed,
                ddim_steps=ddim_steps,
                batch_size=batch_size,
                conditions=conditions,
            )
        return [
            self.sample(
                m,
                num_samples,
                seed=seed,
                ddim_steps=ddim_steps,
                batch_size=batch_size,
                conditions=c,
            )
            for m, c in zip(models, conditions, strict=True)
        ]

    def _sample_side_by_side(
        self,
        models: list[nn.Module],
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int,
        conditions: list[Any],
    ) -> list[torch.Tensor]:
        """K >= 2 stacked models' images in [-1, 1]: one DDIM loop of the family's
        prediction on the default schedule (a pixel UNet without conditions); families
        with conditions, another schedule or a decoder override it."""
        for c in conditions:
            self.no_conditions(c)
        images = sample_stacked(
            models,
            self,
            num_samples,
            seed=seed,
            ddim_steps=ddim_steps,
            batch_size=batch_size,
            device=self.device,
        )
        return [x.clamp(-1, 1) for x in images]

    def train_full(
        self,
        cfg: RunConfig,
        out_dir: str | Path,
        dataset,
        data: TrainingSet,
        *,
        progress: bool = True,
        grid_samples: int = 64,
    ) -> Path:
        """Train (or resume training of) theta* on all data; write samples.png beside it.

        ``out_dir`` doubles as the checkpoint: re-running resumes from the last checkpoint,
        and a finished model is returned as it is. A directory trained with other settings
        is a one-line error.
        """

        out = Path(out_dir)
        meta = model_meta(cfg, dataset, kind="full")
        if out.exists() and not out.is_dir():
            raise DiffattrError(
                f"{out} is a file where the full model's directory belongs; remove it"
            )
        if self.is_model_dir(out):
            stored = read_meta(out)
            old = stored.get("config", {})
            old_digest = (stored.get("dataset") or {}).get("digest")
            if old_digest is not None and old_digest != meta["dataset"]["digest"]:
                raise DiffattrError(
                    f"the data changed since {out} was trained (dataset digest {old_digest}, "
                    f"now {meta['dataset']['digest']}); use a new --out or delete {out}"
                )
            # the digest says whether the data are the same; without one, the settings do
            sections = ("family", "train") if old_digest else ("data", "family", "train")
            for section in sections:
                if _content(section, old.get(section)) != _content(
                    section, meta["config"].get(section)
                ):
                    raise DiffattrError(
                        f"{out} holds a model trained with other [{section}] settings; "
                        "pass another --out or delete it"
                    )
            if stored.get("train_step") == cfg.train.steps:
                return out
        model = self.init_model(data, getattr(self.settings, "seed", 0))
        meta["parameters"] = self.parameter_count(model)
        t0 = time.perf_counter()
        result = self.fit(
            model,
            data,
            cfg.train,
            checkpoint=FamilyCheckpoint(self, out, meta),
            progress=progress,
            desc="train full model",
        )
        meta.update(
            train_seconds=round(time.perf_counter() - t0, 3),
            train_step=cfg.train.steps,
            train_config=cfg.train.model_dump(),
        )
        self.save(
            out,
            ModelState(result.ema.model, result.unet, result.optimizer_state, result.ema.step),
            meta,
        )
        if grid_samples:
            images = self.sample(
                result.ema.model,
                grid_samples,
                seed=cfg.sample.seed,
                ddim_steps=cfg.sample.ddim_steps,
            )
            save_grid(images, out / "samples.png")
        return out

    def make_null(self, cfg: RunConfig, out_dir: str | Path, dataset, data: TrainingSet) -> Path:
        """Write the null model (the model of the empty coalition) unless it exists."""
        out = Path(out_dir)
        if self.is_model_dir(out):
            return out
        model = self.null_model(data)
        self.save(out, ModelState(model), model_meta(cfg, dataset, kind="null", train_step=0))
        return out


def _content(section: str, table: Any) -> Any:
    """A config section without the data settings that never change what trains."""
    if section != "data" or not isinstance(table, dict):
        return table

    return {k: v for k, v in table.items() if k not in NOT_CONTENT}


def model_meta(cfg: RunConfig, dataset, **extra: Any) -> dict[str, Any]:
    """The ``diffattr.json`` of a model a run made: its config and its dataset (with the
    dataset's content digest, which a reused model must match)."""

    return {
        "config": cfg.to_dict(),
        "dataset": {
            "digest": dataset_digest(dataset),
            "name": dataset.name,
            "size": len(dataset),
            "image_size": dataset.image_size,
            "channels": dataset.channels,
            "class_names": dataset.class_names,
        },
        **extra,
    }
