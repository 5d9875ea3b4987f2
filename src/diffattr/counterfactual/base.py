"""The interface every counterfactual method implements, and what the methods share.

A counterfactual method approximates theta_S, the model trained on the data of the players in
S only, from the full model theta* (trained on all data). The runner uses a method in two
phases, possibly in different processes:

1. ``method.prepare(data)``: once per run, before any job; one-time shared work (e.g. prune
   + fine-tune on all data for ``sft``) is cached on disk under ``work_dir`` and reused if it
   is already there;
2. in each worker ``method.load()``, then ``method.run(kept_indices, data, seed=...)`` for
   every job: a ``CounterfactualResult`` whose ``model`` is sampled from. Workers only read
   ``full_dir`` and ``work_dir``.

Methods never branch on the kind of model: training, pruning, saving and loading go through
the model family (``diffattr.families.ModelFamily``), and ``data`` is the family's encoded
``TrainingSet`` (pixels, latents, conditions), so fine-tunes never run an encoder.
"""

from __future__ import annotations

import copy
import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from diffattr.counterfactual.settings import METHODS, EmaMode, FineTuneSettings, MethodSettings
from diffattr.diffusion.checkpoint import read_meta
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.settings import TrainConfig
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelFamily, ModelState, TrainingSet
from diffattr.families.settings import family_of, pipeline_class


@dataclass
class CounterfactualResult:
    """What one job gets back: the model to sample from, its training time and notes."""

    model: nn.Module
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class FullModel:
    """The full model theta*: its directory, its recipe and weights.

    The recipe (what fine-tunes and retraining follow) is the one ``diffattr.json`` records;
    a model the package did not train (a diffusers pipeline directory, no ``diffattr.json``)
    takes ``train``, the run's ``[train]``.
    """

    def __init__(
        self, directory: str | Path, family: ModelFamily, train: TrainConfig | None = None
    ) -> None:
        self.dir = Path(directory)
        self.family = family
        own = family.is_model_dir(self.dir)
        if not own and pipeline_class(self.dir) is None:
            raise DiffattrError(
                f"{self.dir} is neither a diffattr model directory nor a diffusers pipeline "
                "directory (make one with `diffattr train`)"
            )
        self.meta = read_meta(self.dir) if own else {}
        config = self.meta.get("config", {})
        train_cfg = self.meta.get("train_config") or config.get("train")
        if train_cfg:
            self.train = TrainConfig(**train_cfg)
        elif train is not None:
            self.train = train
        else:
            raise DiffattrError(
                f"{self.dir} records no training recipe; give the run's [train] for it"
            )
        self.dataset_size = self.meta.get("dataset", {}).get("size")
        self._loaded: dict[bool, ModelState] = {}

    def load(self, training: bool = False) -> ModelState:
        """The full model (cached; callers copy before changing it)."""
        if training not in self._loaded:
            self._loaded[training] = self.family.load(self.dir, training=training)
        return self._loaded[training]

    def digest(self) -> str:
        """Hash of the sampled weights and their config: identifies theta* in cache keys."""
        return model_digest(self.dir)


def model_digest(directory: str | Path) -> str:
    """Hash of a model directory's sampled weights (every file except training state)."""
    h = hashlib.sha256()
    root = Path(directory)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.parts[0] in ("training", "diffattr.json", "samples.png"):
            continue
        if p.suffix not in (".safetensors", ".json", ".bin"):
            continue
        h.update(str(rel).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class CounterfactualMethod(ABC):
    """One counterfactual method; subclasses set ``Settings`` and implement ``run``.

    Args:
        settings: the method's validated settings.
        family: the model family of the run.
        full_dir: the full model theta* (a model directory).
        work_dir: where ``prepare`` caches shared work; read-only for ``run``.
        train: the run's ``[train]``: the recipe of a full model that records none.
    """

    Settings: ClassVar[type[MethodSettings]] = MethodSettings

    def __init__(
        self,
        settings: MethodSettings,
        family: ModelFamily,
        full_dir: str | Path,
        work_dir: str | Path,
        train: TrainConfig | None = None,
    ) -> None:
        if not isinstance(settings, self.Settings):
            raise DiffattrError(f"{type(self).__name__} needs {self.Settings.__name__}")
        self.settings = settings
        self.family = family
        self.full = FullModel(full_dir, family, train)
        self.work_dir = Path(work_dir)
        self.device = family.device

    @property
    def name(self) -> str:
        return self.settings.name

    def prepare(self, data: TrainingSet, progress: bool = True) -> None:  # noqa: B027
        """One-time shared work before the jobs (none by default)."""

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load what ``prepare`` cached (nothing by default); called once per worker."""

    @abstractmethod
    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        """The counterfactual model for the kept example indices of ``data``."""

    def run_many(
        self, kepts: list[np.ndarray], data: TrainingSet, seeds: list[int]
    ) -> list[CounterfactualResult]:
        """The models of several coalitions at once: trained side by side where the method
        and family stack them (``FineTuneFrom``), else one ``run`` after the other."""
        return [self.run(k, data, seed=s) for k, s in zip(kepts, seeds, strict=True)]

    # ---------------------------------------------------------------- shared helpers

    def check_size(self, data: TrainingSet) -> None:
        if self.full.dataset_size is not None and len(data) != self.full.dataset_size:
            raise DiffattrError(
                f"the dataset has {len(data)} images but the full model was trained on "
                f"{self.full.dataset_size}"
            )

    def kept_data(self, kept: np.ndarray, data: TrainingSet) -> TrainingSet:
        self.check_size(data)
        return data.subset(check_indices(kept, len(data)))

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


class FineTuneFrom(CounterfactualMethod):
    """A method whose model of S is ``fine_tune`` of one starting model (``start``) on S's
    data for k steps (``sft``: the pruned model; ``ft``: the full one); several such models
    train side by side when the family stacks them (``run_many``)."""

    settings: FineTuneSettings

    @abstractmethod
    def start(self) -> ModelState:
        """The starting model: raw weights (or None: the EMA's), EMA, its step, Adam state."""

    def info(self, model: nn.Module, info: dict[str, Any]) -> dict[str, Any]:
        """The job's notes about its model (what the method adds to ``fine_tune``'s)."""
        return info

    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        subset = self.kept_data(kept, data)
        s = self.settings
        model, seconds, info = self._fine_tune(subset, self.train_config(s, s.steps, seed))
        return CounterfactualResult(model, seconds, self.info(model, info))

    def _fine_tune(self, subset: TrainingSet, cfg: TrainConfig):
        """``fine_tune`` of a copy of the starting model on ``subset`` with ``cfg``."""
        state = self.start()
        return fine_tune(
            self.family,
            copy_module(state.raw if state.raw is not None else state.model),
            subset,
            cfg,
            ema=self.settings.ema,
            ema_model=state.model,
            ema_step=state.ema_step,
            optimizer_state=state.optimizer_state,
        )

    def run_many(
        self, kepts: list[np.ndarray], data: TrainingSet, seeds: list[int]
    ) -> list[CounterfactualResult]:
        if len(kepts) < 2 or self.family.stack_reason() is not None:
            return super().run_many(kepts, data, seeds)
        subsets = [self.kept_data(k, data) for k in kepts]
        state = self.start()
        s = self.settings
        start = state.raw if state.raw is not None else state.model
        out = fine_tune_many(
            self.family,
            [copy_module(start) for _ in kepts],
            subsets,
            [self.train_config(s, s.steps, seed) for seed in seeds],
            ema=s.ema,
            ema_model=state.model,
            ema_step=state.ema_step,
            optimizer_state=state.optimizer_state,
        )
        return [CounterfactualResult(m, sec, self.info(m, i)) for m, sec, i in out]

    def step_bytes(self, data: TrainingSet) -> int:
        """Peak device memory of one model's one fine-tune step (weights, gradients, Adam,
        EMA, activations of a batch), measured on a CUDA device: what the automatic
        ``jobs_per_batch`` divides the free memory by (``runner.batching``)."""
        device = torch.device(self.device)
        if device.type != "cuda":
            raise DiffattrError("step_bytes measures GPU memory; the run is not on a GPU")
        cfg = self.train_config(self.settings, 1, 0)
        subset = data.subset(np.arange(min(len(data), cfg.batch_size)))
        self.start()  # loaded before the measurement: the shared model is not the step's
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        self._fine_tune(subset, cfg)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)


def copy_module(m: nn.Module) -> nn.Module:
    """A trainable copy (loaded and EMA models have gradients switched off)."""
    out = copy.deepcopy(m)
    out.requires_grad_(True)
    return out


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
    family: ModelFamily,
    raw: nn.Module,
    data: TrainingSet,
    cfg: TrainConfig,
    *,
    ema: EmaMode,
    ema_model: nn.Module | None = None,
    ema_step: int = 0,
    optimizer_state: dict | None = None,
) -> tuple[nn.Module, float, dict[str, Any]]:
    """Train ``raw`` in place for ``cfg.steps``; returns (model to sample, seconds, info).

    ``ema_model``/``ema_step`` are the starting model's EMA, used when ``ema='carry'`` (if
    absent, the EMA restarts). ``optimizer_state`` is copied, never changed.
    """
    tracker = _tracker(raw, cfg, ema, ema_model, ema_step)
    state = copy.deepcopy(optimizer_state) if optimizer_state is not None else None
    t0 = time.perf_counter()
    result = family.fit(raw, data, cfg, ema=tracker, optimizer_state=state, desc="fine-tune")
    return _finished(result, cfg, ema, ema_model, time.perf_counter() - t0)


def fine_tune_many(
    family: ModelFamily,
    raws: list[nn.Module],
    datas: list[TrainingSet],
    cfgs: list[TrainConfig],
    *,
    ema: EmaMode,
    ema_model: nn.Module | None = None,
    ema_step: int = 0,
    optimizer_state: dict | None = None,
) -> list[tuple[nn.Module, float, dict[str, Any]]]:
    """``fine_tune`` of each ``raws[j]`` on ``datas[j]`` with ``cfgs[j]``, the models trained
    side by side (``family.fit_stacked``): what K ``fine_tune`` calls give, to float
    tolerance. Each model's seconds are its share of the batch's time."""
    trackers = [_tracker(r, c, ema, ema_model, ema_step) for r, c in zip(raws, cfgs, strict=True)]
    results = family.fit_stacked(
        raws, datas, cfgs, emas=trackers, optimizer_states=[optimizer_state] * len(raws)
    )
    return [_finished(r, c, ema, ema_model, r.seconds) for r, c in zip(results, cfgs, strict=True)]


def _tracker(raw, cfg: TrainConfig, ema: EmaMode, ema_model, ema_step: int) -> EMA:
    """The EMA a fine-tune starts: the starting model's (``carry``) or a fresh one."""
    if ema == "carry" and ema_model is not None:
        return EMA(ema_model, cfg.ema_decay, step=ema_step)
    return EMA(raw, cfg.ema_decay)


def _finished(result, cfg: TrainConfig, ema: EmaMode, ema_model, seconds: float):
    out = result.unet if ema == "none" else result.ema.model
    tail = result.losses[-min(len(result.losses), 20) :]
    info = {
        "steps": cfg.steps,
        "ema": ema if not (ema == "carry" and ema_model is None) else "restart",
        "loss": float(np.mean(tail)) if tail else float("nan"),
    }
    return out.eval(), seconds, info


def build_method(
    settings: MethodSettings,
    family: ModelFamily,
    full_dir: str | Path,
    work_dir: str | Path,
    train: TrainConfig | None = None,
) -> CounterfactualMethod:
    """The method object of ``settings`` (its class is ``settings.implementation``);
    ``train`` is the run's recipe, used when the full model records none."""
    return settings.implementation_class()(settings, family, full_dir, work_dir, train)


def make_method(
    name: str,
    settings: dict[str, Any] | None,
    full_dir: str | Path,
    work_dir: str | Path,
    family: ModelFamily | None = None,
    device: str = "cpu",
) -> CounterfactualMethod:
    """A method by name with settings given as a dict (validated; one-line errors); the
    family defaults to the one recorded in the full model's ``diffattr.json``."""

    parsed = METHODS.parse({**(settings or {}), "name": name}, name)
    family = family or family_of(full_dir, device)
    return build_method(parsed, family, full_dir, work_dir)
