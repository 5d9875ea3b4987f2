"""The interface every counterfactual method implements, and what the methods share.

A counterfactual method approximates theta_S, the model trained on the data of the players in
S only, from the full model theta* (trained on all data). The pipeline uses a method in two
phases, possibly in different processes:

1. ``prepare_method(name, settings, full_dir, dataset, work_dir, device)``: once per run,
   before any job; one-time shared work (e.g. prune + fine-tune on all data for ``sft``) is
   cached on disk under ``work_dir`` and reused if it is already there.
2. ``load_method(name, settings, full_dir, work_dir, device)`` in each worker, then
   ``method.run(kept_indices, dataset, seed=...)`` for every job: a ``CounterfactualResult``
   whose ``unet`` is sampled from. Workers only read ``full_dir`` and ``work_dir``.

Everything is rebuilt from paths and plain settings, so a method can run in another process.
"""

from __future__ import annotations

import copy
import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch import nn

from diffattr.config import Section, TrainConfig
from diffattr.diffusion.checkpoint import LoadedModel, is_model_dir, load_model
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.train import train
from diffattr.errors import DiffattrError
from diffattr.registry import Registry

EmaMode = Literal["restart", "carry", "none"]


@dataclass
class CounterfactualResult:
    """What one job gets back: the model to sample from, its training time and notes."""

    unet: nn.Module
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class MethodSettings(Section):
    """Settings of a method (``[attribution] method_settings``); unknown keys are errors."""


class FineTuneSettings(MethodSettings):
    """Shared by the methods that fine-tune for ``steps`` steps on the kept data.

    ``ema`` chooses the weights that are sampled after the short fine-tune:

    * ``restart`` (default): a new EMA of the fine-tuned weights with the warm-up
      min(decay, (1+t)/(10+t)): the starting weights keep 1/C(k+9, 9) of the mass (under
      0.1 % after 10 steps) and the average spans roughly the last k/9 steps. The
      counterfactual is decided by the fine-tune on S, with the step noise of the raw
      weights smoothed out.
    * ``carry``: continue the starting model's EMA and its step count t0, i.e. the research
      code's behaviour. Its decay is min(decay, (1+t)/(10+t)) at t >= t0 (0.997 after 3000
      steps), so after k steps only about 1 - decay^k of the weight comes from the
      fine-tune (26 % for k = 100 at 0.997, 10 % at 0.999, 1 % at 0.9999): the subsets'
      differences are diluted towards the all-data model.
    * ``none``: sample the raw fine-tuned weights.

    ``ema_decay`` overrides the full model's decay for the fine-tune.

    Measured (digits, tiny preset, 3000-step full model; sft with a 1000-step all-data
    fine-tune and k = 100; 4 random class subsets; share of 200 samples that a classifier
    puts in the kept classes): retrain 0.98, sft restart 0.86, none 0.86, carry 0.70, full
    model 0.40 (the kept share of the data). ``carry`` loses about a third of the subset
    effect even with this short all-data EMA; ``restart`` is the default.
    """

    steps: int = Field(100, ge=1, description="fine-tuning steps on the kept data (k)")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the full model's)")
    batch_size: int | None = Field(None, ge=1, description="batch size (default: the full model's)")
    ema: EmaMode = Field("restart", description="restart | carry | none (see the docstring)")
    ema_decay: float | None = Field(
        None, ge=0, lt=1, description="EMA decay of the fine-tune (default: the full model's)"
    )


METHODS: Registry[type[CounterfactualMethod]] = Registry("counterfactual method")


class FullModel:
    """The full model theta*: its directory, its recipe (from ``diffattr.json``) and weights."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not is_model_dir(self.dir):
            raise DiffattrError(
                f"{self.dir} is not a diffattr model directory (make one with `diffattr train`)"
            )
        self.meta = load_model_meta(self.dir)
        config = self.meta.get("config", {})
        train_cfg = self.meta.get("train_config") or config.get("train")
        if not train_cfg:
            raise DiffattrError(f"{self.dir}/diffattr.json records no training recipe")
        self.train = TrainConfig(**train_cfg)
        self.preset = config.get("model", {}).get("preset")
        self.model_seed = int(config.get("model", {}).get("seed", 0))
        self.dataset_size = self.meta.get("dataset", {}).get("size")
        self._loaded: dict[bool, LoadedModel] = {}

    def load(self, device: str | torch.device, training: bool = False) -> LoadedModel:
        """The full model (cached; callers copy before changing it)."""
        if training not in self._loaded:
            self._loaded[training] = load_model(self.dir, device, training=training)
        return self._loaded[training]

    def digest(self) -> str:
        """Hash of the sampled weights: identifies theta* in cache keys."""
        h = hashlib.sha256()
        for p in sorted((self.dir / "unet").glob("*")):
            if p.is_file() and p.suffix in (".safetensors", ".json"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
        return h.hexdigest()[:16]


def load_model_meta(directory: Path) -> dict:
    import json

    return json.loads((Path(directory) / "diffattr.json").read_text())


class CounterfactualMethod(ABC):
    """One counterfactual method; subclasses set ``name``/``Settings`` and implement ``run``.

    Args:
        settings: the method's validated settings.
        full_dir: the full model theta* (a model directory).
        work_dir: where ``prepare`` caches shared work; read-only for ``run``.
        device: torch device of training.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(
        self,
        settings: MethodSettings,
        full_dir: str | Path,
        work_dir: str | Path,
        device: str | torch.device = "cpu",
    ) -> None:
        self.settings = settings
        self.full = FullModel(full_dir)
        self.work_dir = Path(work_dir)
        self.device = torch.device(device)

    @classmethod
    def parse_settings(cls, settings: dict[str, Any] | MethodSettings | None) -> MethodSettings:
        if isinstance(settings, cls.Settings):
            return settings
        try:
            return cls.Settings.model_validate(dict(settings or {}))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise DiffattrError(f"{cls.name} settings: {loc}: {err['msg']}") from None

    def prepare(self, dataset, progress: bool = True) -> None:  # noqa: B027 - optional hook
        """One-time shared work before the jobs (none by default)."""

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load what ``prepare`` cached (nothing by default); called once per worker."""

    @abstractmethod
    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        """The counterfactual model for the kept sample indices of ``dataset``."""

    # ---------------------------------------------------------------- shared helpers

    def kept_images(self, kept: np.ndarray, dataset) -> torch.Tensor:
        images = dataset_images(dataset)
        if self.full.dataset_size is not None and len(images) != self.full.dataset_size:
            raise DiffattrError(
                f"the dataset has {len(images)} images but the full model was trained on "
                f"{self.full.dataset_size}"
            )
        idx = check_indices(kept, len(images))
        return images[torch.as_tensor(idx)]

    def train_config(self, s: FineTuneSettings | None, steps: int, seed: int) -> TrainConfig:
        """The full model's recipe with this fine-tune's steps, seed and overrides."""
        base = self.full.train.model_dump()
        base.update(steps=steps, seed=int(seed), checkpoint_every=max(1, steps))
        if s is not None:
            if s.lr is not None:
                base["lr"] = s.lr
            if s.batch_size is not None:
                base["batch_size"] = s.batch_size
            if s.ema_decay is not None:
                base["ema_decay"] = s.ema_decay
        return TrainConfig(**base)


def copy_module(m: nn.Module) -> nn.Module:
    """A trainable copy (loaded and EMA models have gradients switched off)."""
    out = copy.deepcopy(m)
    out.requires_grad_(True)
    return out


def meta_value(directory: str | Path, *keys: str) -> Any:
    """A nested value of a model directory's ``diffattr.json`` (None if absent)."""
    import json

    try:
        node = json.loads((Path(directory) / "diffattr.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for k in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(k)
    return node


def dataset_images(dataset) -> torch.Tensor:
    images = dataset.images if hasattr(dataset, "images") else dataset
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise DiffattrError("expected a dataset or an (N, C, H, W) image tensor")
    return images


def check_indices(kept, n: int) -> np.ndarray:
    idx = np.asarray(kept)
    if idx.ndim != 1:
        raise DiffattrError(f"kept indices must be one-dimensional, got shape {idx.shape}")
    if len(idx) == 0:
        raise DiffattrError(
            "the kept subset is empty; the model of the empty coalition is the null model"
        )
    if not np.issubdtype(idx.dtype, np.integer):
        raise DiffattrError(f"kept indices must be integers, got {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n:
        raise DiffattrError(f"kept indices must lie in 0..{n - 1}")
    return idx.astype(np.int64)


def fine_tune(
    raw: nn.Module,
    images: torch.Tensor,
    cfg: TrainConfig,
    *,
    ema: EmaMode,
    device: torch.device,
    ema_model: nn.Module | None = None,
    ema_step: int = 0,
    optimizer_state: dict | None = None,
) -> tuple[nn.Module, float, dict[str, Any]]:
    """Train ``raw`` in place for ``cfg.steps``; returns (model to sample, seconds, info).

    ``ema_model``/``ema_step`` are the starting model's EMA, used when ``ema='carry'`` (if
    absent, the EMA restarts). ``optimizer_state`` is copied, never changed.
    """
    if ema == "carry" and ema_model is not None:
        tracker = EMA(ema_model, cfg.ema_decay, step=ema_step)
    else:
        tracker = EMA(raw, cfg.ema_decay)
    state = copy.deepcopy(optimizer_state) if optimizer_state is not None else None
    t0 = time.perf_counter()
    result = train(
        raw,
        images,
        cfg,
        device=device,
        ema=tracker,
        optimizer_state=state,
        progress=False,
        desc="fine-tune",
    )
    seconds = time.perf_counter() - t0
    out = result.unet if ema == "none" else result.ema.model
    tail = result.losses[-min(len(result.losses), 20) :]
    info = {
        "steps": cfg.steps,
        "ema": ema if not (ema == "carry" and ema_model is None) else "restart",
        "loss": float(np.mean(tail)) if tail else float("nan"),
    }
    return out.eval(), seconds, info
