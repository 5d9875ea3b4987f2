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

import torch

from diffattr.counterfactual.base import FineTuneFrom
from diffattr.counterfactual.settings import SFTSettings
from diffattr.diffusion.checkpoint import meta_value
from diffattr.errors import DiffattrError
from diffattr.families.base import FamilyCheckpoint, ModelState, TrainingSet
from diffattr.fileio import atomic_write_text


class SparsifiedFineTune(FineTuneFrom):
    Settings = SFTSettings
    settings: SFTSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._state: ModelState | None = None

    # ---------------------------------------------------------------- preparation

    def cache_key(self) -> dict[str, Any]:
        s = self.settings
        return {
            "full": self.full.digest(),
            "family": self.family.settings.to_dict(),
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
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def is_prepared(self, key: dict | None = None) -> bool:
        done = self._read_prepared()
        key = key or self.cache_key()
        return (
            done is not None
            and done.get("key") == key
            and self.family.is_model_dir(self.work_dir / "pruned")
        )

    def prepare(self, data: TrainingSet, progress: bool = True) -> None:
        """Prune the full model and fine-tune it on all data (skipped when cached)."""
        key = self.cache_key()
        if self.is_prepared(key):
            return
        s = self.settings
        self.check_size(data)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        init_dir, tuned_dir = self.work_dir / "pruned-init", self.work_dir / "pruned"
        meta_base = {**self.full.meta, "kind": "pruned", "base_model": str(self.full.dir)}

        t0 = time.perf_counter()
        old = meta_value(init_dir, "prepare_key") or {}
        init_ok = self.family.is_model_dir(init_dir) and all(
            old.get(k) == key[k] for k in ("full", "family", "pruning")
        )
        if init_ok:
            pruned = self.family.load(init_dir).model
            report = meta_value(init_dir, "pruning") or {}
        else:
            full = self.full.load()
            gen = torch.Generator().manual_seed(s.seed)
            pick = torch.randperm(len(data), generator=gen)[: s.prune_batch]
            # prune the EMA weights: see diffattr.sparsify.prune
            pruned, rep = self.family.prune(full.model, s, data.subset(pick.numpy()))
            report = _summary(rep)
            self.family.save(
                init_dir,
                ModelState(pruned),
                {**meta_base, "prepare_key": key, "pruning": report},
            )
        prune_seconds = time.perf_counter() - t0

        # A checkpoint left by other settings must not be resumed.
        if self.family.is_model_dir(tuned_dir) and meta_value(tuned_dir, "prepare_key") != key:
            shutil.rmtree(tuned_dir)
        cfg = self.train_config(None, s.finetune_steps, s.seed)
        if s.finetune_lr is not None:
            cfg = cfg.model_copy(update={"lr": s.finetune_lr})
        if s.batch_size is not None:
            cfg = cfg.model_copy(update={"batch_size": s.batch_size})
        meta = {**meta_base, "prepare_key": key, "pruning": report}
        t0 = time.perf_counter()
        if s.finetune_steps > 0:
            cfg = cfg.model_copy(update={"checkpoint_every": max(1, min(1000, s.finetune_steps))})
            result = self.family.fit(
                pruned,
                data,
                cfg,
                checkpoint=FamilyCheckpoint(self.family, tuned_dir, meta),
                progress=progress,
                desc="fine-tune pruned model on all data",
            )
            state = ModelState(
                result.ema.model, result.unet, result.optimizer_state, result.ema.step
            )
        else:
            state = ModelState(pruned, pruned, None, 0)
        finetune_seconds = time.perf_counter() - t0
        meta.update(train_step=s.finetune_steps, finetune_seconds=round(finetune_seconds, 3))
        self.family.save(tuned_dir, state, meta)
        prepared = {
            "method": self.name,
            "key": key,
            "prune_seconds": round(prune_seconds, 3),
            "finetune_seconds": round(finetune_seconds, 3),
            "pruning": report,
        }
        atomic_write_text(self.work_dir / "prepared.json", json.dumps(prepared, indent=2))
        self._state = None

    # ---------------------------------------------------------------- jobs

    def load(self) -> None:
        if self._state is not None:
            return
        if not self.is_prepared():
            raise DiffattrError(
                f"{self.work_dir} holds no prepared sft model for these settings and this "
                "full model; run the run's prepare phase first (diffattr run does)"
            )
        self._state = self.family.load(self.work_dir / "pruned", training=True)

    @property
    def pruned_model(self) -> torch.nn.Module:
        """The pruned model fine-tuned on all data (EMA weights), as prepared."""
        self.load()
        return self._state.model

    def start(self) -> ModelState:
        self.load()
        return self._state

    def info(self, model: torch.nn.Module, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "params": self.family.parameter_count(model)}


def _summary(report: dict) -> dict:
    keys = ("pruner", "ratio", "round_to", "params_before", "params_after")
    out = {k: report.get(k) for k in keys}
    out.update(macs_before=report.get("macs_before"), macs_after=report.get("macs_after"))
    # the convolutions' widths after pruning (a CPU saves time in whole blocks of them)
    out["conv_widths"] = report.get("conv_widths")
    return out
