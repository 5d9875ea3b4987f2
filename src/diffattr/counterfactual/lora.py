"""``lora``: low-rank fine-tuning of the full model on the kept data, merged before sampling.

LoRA adapters (peft; Hu et al. 2022) of rank ``rank`` are attached to ``target_modules`` of
the full model's sampled (EMA) weights and trained for ``steps`` steps on the kept data with
a fresh Adam; the adapters are merged into the weights before sampling, so the result is a
plain ``UNet2DModel``. The default targets, the ResNet convolutions ``conv1``/``conv2`` and the
attention projections ``to_q``/``to_k``/``to_v``/``to_out.0``, exist in every preset (each has
a mid-block attention). ``ema`` is ``restart`` or ``none`` (there is no EMA of adapters to
carry); see ``FineTuneSettings``.
"""

from __future__ import annotations

import numpy as np
import torch

from diffattr.counterfactual.base import (
    CounterfactualMethod,
    CounterfactualResult,
    copy_module,
    fine_tune,
)
from diffattr.counterfactual.settings import LoRASettings
from diffattr.errors import DiffattrError
from diffattr.families.base import TrainingSet
from diffattr.torchutils import count_parameters


class LoRAFineTune(CounterfactualMethod):
    Settings = LoRASettings
    settings: LoRASettings

    def load(self) -> None:
        self.full.load()

    def check_targets(self, model: torch.nn.Module) -> None:
        names = [n for n, _ in model.named_modules()]
        missing = [
            t
            for t in self.settings.target_modules
            if not any(n == t or n.endswith("." + t) for n in names)
        ]
        if missing:
            raise DiffattrError(
                f"lora settings: target_modules {missing} match no layer of this model "
                "(e.g. conv1, conv2, to_q, to_k, to_v, to_out.0)"
            )

    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        from peft import LoraConfig, get_peft_model

        subset = self.kept_data(kept, data)
        full = self.full.load()
        s = self.settings
        base = copy_module(full.model)
        self.check_targets(base)
        config = LoraConfig(
            r=s.rank, lora_alpha=s.alpha, target_modules=list(s.target_modules), lora_dropout=0.0
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the adapters' initialisation
            model = get_peft_model(base, config)
        trainable = count_parameters(model, trainable_only=True)
        tuned, seconds, info = fine_tune(
            self.family, model, subset, self.train_config(s, s.steps, seed), ema=s.ema
        )
        merged = tuned.merge_and_unload()
        info.update(rank=s.rank, trainable_params=int(trainable))
        return CounterfactualResult(merged.eval(), seconds, info)
