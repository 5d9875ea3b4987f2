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
from pydantic import Field

from diffattr.counterfactual.base import (
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    EmaMode,
    FineTuneSettings,
    copy_module,
    fine_tune,
)
from diffattr.errors import DiffattrError

DEFAULT_TARGETS = ["conv1", "conv2", "to_q", "to_k", "to_v", "to_out.0"]


class LoRASettings(FineTuneSettings):
    lr: float | None = Field(1e-3, gt=0, description="learning rate of the adapters")
    ema: EmaMode = Field("restart", description="restart | none")
    rank: int = Field(4, ge=1, description="LoRA rank r")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (the update is scaled by alpha/r)")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        description="module names (or name suffixes) that get adapters",
    )


@METHODS.register("lora")
class LoRAFineTune(CounterfactualMethod):
    name = "lora"
    Settings = LoRASettings
    settings: LoRASettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.settings.ema == "carry":
            raise DiffattrError("lora settings: ema: 'carry' is not available; use restart or none")
        if not self.settings.target_modules:
            raise DiffattrError("lora settings: target_modules: give at least one module name")

    def load(self) -> None:
        self.full.load(self.device)

    def check_targets(self, unet: torch.nn.Module) -> None:
        names = [n for n, _ in unet.named_modules()]
        missing = [
            t
            for t in self.settings.target_modules
            if not any(n == t or n.endswith("." + t) for n in names)
        ]
        if missing:
            raise DiffattrError(
                f"lora settings: target_modules {missing} match no layer of this UNet "
                "(e.g. conv1, conv2, to_q, to_k, to_v, to_out.0)"
            )

    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        from peft import LoraConfig, get_peft_model

        images = self.kept_images(kept, dataset)
        full = self.full.load(self.device)
        s = self.settings
        base = copy_module(full.unet)
        self.check_targets(base)
        config = LoraConfig(
            r=s.rank, lora_alpha=s.alpha, target_modules=list(s.target_modules), lora_dropout=0.0
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the adapters' initialisation
            model = get_peft_model(base, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        tuned, seconds, info = fine_tune(
            model, images, self.train_config(s, s.steps, seed), ema=s.ema, device=self.device
        )
        merged = tuned.merge_and_unload()
        info.update(rank=s.rank, trainable_params=int(trainable))
        return CounterfactualResult(merged.eval(), seconds, info)
