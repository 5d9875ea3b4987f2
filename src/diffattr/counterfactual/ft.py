"""``ft``: fine-tune the unpruned full model for k steps on the kept data.

The same recipe as ``sft`` without the pruning: the full model's raw weights and Adam state
(``training/`` of its directory) continue training on the kept data only, and the sampled
weights follow the ``ema`` setting (see ``FineTuneSettings``). It isolates what pruning adds
to sFT (Lin, Lu, Kim, Lee 2025, ICLR): same k, same optimizer, a model ~2x larger per step.
A full model saved without its training state starts from its EMA weights with a fresh Adam.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from diffattr.counterfactual.base import FineTuneFrom
from diffattr.counterfactual.settings import FTSettings
from diffattr.families.base import ModelState


class FineTune(FineTuneFrom):
    Settings = FTSettings
    settings: FTSettings

    def load(self) -> None:
        self.full.load(training=True)

    def start(self) -> ModelState:
        return self.full.load(training=True)

    def info(self, model: nn.Module, info: dict[str, Any]) -> dict[str, Any]:
        start = "raw" if self.full.load(training=True).raw is not None else "ema"
        return {**info, "start": start}
