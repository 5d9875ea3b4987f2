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
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    FineTuneSettings,
    copy_module,
    fine_tune,
)


class FTSettings(FineTuneSettings):
    pass


@METHODS.register("ft")
class FineTune(CounterfactualMethod):
    name = "ft"
    Settings = FTSettings
    settings: FTSettings

    def load(self) -> None:
        self.full.load(self.device, training=True)

    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        images = self.kept_images(kept, dataset)
        full = self.full.load(self.device, training=True)
        s = self.settings
        start = full.raw_unet if full.raw_unet is not None else full.unet
        unet, seconds, info = fine_tune(
            copy_module(start),
            images,
            self.train_config(s, s.steps, seed),
            ema=s.ema,
            device=self.device,
            ema_model=full.unet,
            ema_step=full.ema_step,
            optimizer_state=full.optimizer_state,
        )
        info["start"] = "raw" if full.raw_unet is not None else "ema"
        return CounterfactualResult(unet, seconds, info)
