"""``sft``: sparsified fine-tuning (Lin, Lu, Kim, Lee 2025, ICLR), the paper's estimator.

Preparation (once per run, cached in ``work_dir``):

1. prune the full model's EMA weights with torch-pruning (DepGraph, Fang et al. 2023) —
   ``pruner`` ``magnitude`` at ``ratio`` 0.3 by default, or Diff-Pruning (Fang, Ma, Wang 2023);
2. fine-tune the pruned model on *all* data for ``finetune_steps`` steps with the full
   model's recipe (fresh Adam: the dense model's moments do not fit the pruned shapes; a
   fresh EMA with warm-up), which recovers most of the quality lost to pruning.

Each job then fine-tunes a copy of that model for ``steps`` (k) steps on the kept data only,
continuing the Adam state of step 2 (same optimizer recipe). The pruned model is cheaper per
step than the full one, and starting every subset from the same all-data model makes the
counterfactuals comparable across subsets (the "unlearning" of the removed data is the
fine-tune's drift away from them).

Cache layout under ``work_dir``::

    pruned-init/    the pruned, not yet fine-tuned model (model directory)
    pruned/         the pruned model fine-tuned on all data (EMA in unet/, raw weights and
                    Adam state in training/); also the resumable checkpoint of step 2
    prepared.json   the cache key (full-model digest + settings) and the pruning report
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from diffattr.counterfactual.base import (
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    FineTuneSettings,
    copy_module,
    dataset_images,
    fine_tune,
    meta_value,
)
from diffattr.diffusion.checkpoint import LoadedModel, is_model_dir, load_model, save_model
from diffattr.diffusion.train import train
from diffattr.errors import DiffattrError
from diffattr.sparsify.prune import PRUNERS, prune_unet


class SFTSettings(FineTuneSettings):
    pruner: str = Field("magnitude", description="magnitude | taylor | random | diff-pruning")
    ratio: float = Field(0.3, description="share of channels removed per layer group, in (0, 1)")
    thr: float = Field(0.05, gt=0, lt=1, description="Diff-Pruning's loss threshold")
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    finetune_steps: int = Field(1000, ge=0, description="steps of the all-data fine-tune")
    finetune_lr: float | None = Field(None, gt=0, description="its lr (default: the full's)")
    prune_batch: int = Field(64, ge=1, description="images for Taylor-type importance")
    prune_timesteps: int | None = Field(
        None, ge=1, description="at most this many timesteps for Taylor-type importance"
    )
    seed: int = Field(0, description="seed of the pruning batch and of the all-data fine-tune")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"pruning ratio must be in (0, 1), got {v}")
        return v

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        if v not in PRUNERS:
            raise ValueError(f"unknown pruner {v!r}; choose one of: {', '.join(PRUNERS.names())}")
        return v


@METHODS.register("sft")
class SparsifiedFineTune(CounterfactualMethod):
    name = "sft"
    Settings = SFTSettings
    settings: SFTSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._state: LoadedModel | None = None

    # ---------------------------------------------------------------- preparation

    def cache_key(self) -> dict[str, Any]:
        s = self.settings
        return {
            "full": self.full.digest(),
            "pruning": {
                "pruner": s.pruner,
                "ratio": s.ratio,
                "thr": s.thr,
                "round_to": s.round_to,
                "prune_batch": s.prune_batch,
                "prune_timesteps": s.prune_timesteps,
                "seed": s.seed,
            },
            "finetune": {
                "steps": s.finetune_steps,
                "lr": s.finetune_lr,
                "batch_size": s.batch_size,
                "seed": s.seed,
            },
        }

    def _read_prepared(self) -> dict | None:
        path = self.work_dir / "prepared.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_prepared(self, key: dict | None = None) -> bool:
        done = self._read_prepared()
        key = key or self.cache_key()
        return (
            done is not None and done.get("key") == key and is_model_dir(self.work_dir / "pruned")
        )

    def prepare(self, dataset, progress: bool = True) -> None:
        """Prune the full model and fine-tune it on all data (skipped when cached)."""
        key = self.cache_key()
        if self.is_prepared(key):
            return
        s = self.settings
        images = dataset_images(dataset)
        if self.full.dataset_size is not None and len(images) != self.full.dataset_size:
            raise DiffattrError(
                f"the dataset has {len(images)} images but the full model was trained on "
                f"{self.full.dataset_size}"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        init_dir, tuned_dir = self.work_dir / "pruned-init", self.work_dir / "pruned"
        meta_base = {**self.full.meta, "kind": "pruned", "base_model": str(self.full.dir)}

        t0 = time.perf_counter()
        init_ok = (
            is_model_dir(init_dir)
            and meta_value(init_dir, "prepare_key", "pruning") == key["pruning"]
            and meta_value(init_dir, "prepare_key", "full") == key["full"]
        )
        if init_ok:
            pruned = load_model(init_dir, self.device).unet
            report = pruned.diffattr_pruning
        else:
            full = self.full.load(self.device)
            gen = torch.Generator().manual_seed(s.seed)
            pick = torch.randperm(len(images), generator=gen)[: s.prune_batch]
            pruned, rep = prune_unet(
                full.unet,  # the EMA weights: see diffattr.sparsify.prune
                ratio=s.ratio,
                pruner=s.pruner,
                example_images=images[pick].to(self.device),
                thr=s.thr,
                seed=s.seed,
                round_to=s.round_to,
                max_timesteps=s.prune_timesteps,
            )
            report = rep.to_dict()
            save_model(
                init_dir,
                pruned,
                meta={**meta_base, "prepare_key": key, "pruning": _summary(report)},
            )
        prune_seconds = time.perf_counter() - t0

        # A checkpoint left by other settings must not be resumed.
        if is_model_dir(tuned_dir) and meta_value(tuned_dir, "prepare_key") != key:
            shutil.rmtree(tuned_dir)
        cfg = self.train_config(None, s.finetune_steps, s.seed)
        if s.finetune_lr is not None:
            cfg = cfg.model_copy(update={"lr": s.finetune_lr})
        if s.batch_size is not None:
            cfg = cfg.model_copy(update={"batch_size": s.batch_size})
        meta = {**meta_base, "prepare_key": key, "pruning": _summary(report)}
        t0 = time.perf_counter()
        if s.finetune_steps > 0:
            cfg = cfg.model_copy(update={"checkpoint_every": max(1, min(1000, s.finetune_steps))})
            result = train(
                pruned,
                images,
                cfg,
                device=self.device,
                checkpoint_dir=tuned_dir,
                checkpoint_meta=meta,
                progress=progress,
                desc="fine-tune pruned model on all data",
            )
            ema_model, raw, opt, ema_step = (
                result.ema.model,
                result.unet,
                result.optimizer_state,
                result.ema.step,
            )
        else:
            ema_model, raw, opt, ema_step = pruned, pruned, None, 0
        finetune_seconds = time.perf_counter() - t0
        meta.update(train_step=s.finetune_steps, finetune_seconds=round(finetune_seconds, 3))
        save_model(
            tuned_dir, ema_model, raw_unet=raw, optimizer_state=opt, ema_step=ema_step, meta=meta
        )
        prepared = {
            "method": self.name,
            "key": key,
            "prune_seconds": round(prune_seconds, 3),
            "finetune_seconds": round(finetune_seconds, 3),
            "pruning": _summary(report),
        }
        (self.work_dir / "prepared.json").write_text(json.dumps(prepared, indent=2))
        self._state = None

    # ---------------------------------------------------------------- jobs

    def load(self) -> None:
        if self._state is not None:
            return
        if not self.is_prepared():
            raise DiffattrError(
                f"{self.work_dir} holds no prepared sft model for these settings and this "
                "full model; run prepare_method first (diffattr run does)"
            )
        self._state = load_model(self.work_dir / "pruned", self.device, training=True)

    @property
    def pruned_model(self) -> torch.nn.Module:
        """The pruned model fine-tuned on all data (EMA weights), as prepared."""
        self.load()
        return self._state.unet

    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        images = self.kept_images(kept, dataset)
        self.load()
        state = self._state
        s = self.settings
        raw = copy_module(state.raw_unet if state.raw_unet is not None else state.unet)
        cfg = self.train_config(s, s.steps, seed)
        unet, seconds, info = fine_tune(
            raw,
            images,
            cfg,
            ema=s.ema,
            device=self.device,
            ema_model=state.unet,
            ema_step=state.ema_step,
            optimizer_state=state.optimizer_state,
        )
        info["params"] = int(sum(p.numel() for p in unet.parameters()))
        return CounterfactualResult(unet, seconds, info)


def _summary(report: dict) -> dict:
    keys = ("pruner", "ratio", "round_to", "params_before", "params_after")
    out = {k: report.get(k) for k in keys}
    out.update(macs_before=report.get("macs_before"), macs_after=report.get("macs_after"))
    return out
