"""``ft``: fine-tune the unpruned full model for k steps on the kept data.

The same recipe as ``sft`` without the pruning: the full model's raw weights and Adam state
(``training/`` of its directory) continue training on the kept data only, and the sampled
weights follow the ``ema`` setting (see ``FineTuneSettings``). It isolates what pruning adds
to sFT (Lin, Lu, Kim, Lee 2025, ICLR): same k, same optimizer, a model ~2x larger per step.
A full model saved without its training state starts from its EMA weights with a fresh Adam.
"""

from __future__ import annotations

import numpy as np

from diffattr.counterfactual.base import (
    CounterfactualMethod,
    CounterfactualResult,
    copy_module,
    fine_tune,
)
from diffattr.counterfactual.settings import FTSettings
from diffattr.families.base import TrainingSet


class FineTune(CounterfactualMethod):
    Settings = FTSettings
    settings: FTSettings

    def load(self) -> None:
        self.full.load(training=True)

    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        subset = self.kept_data(kept, data)
        full = self.full.load(training=True)
        s = self.settings
        start = full.raw if full.raw is not None else full.model
        model, seconds, info = fine_tune(
            self.family,
            copy_module(start),
            subset,
            self.train_config(s, s.steps, seed),
            ema=s.ema,
            ema_model=full.model,
            ema_step=full.ema_step,
            optimizer_state=full.optimizer_state,
        )
        info["start"] = "raw" if full.raw is not None else "ema"
        return CounterfactualResult(model, seconds, info)
