"""``retrain``: train from scratch on the kept data, the ground truth the others approximate.

A fresh UNet of the full model's preset (initialised with the job seed) is trained on the
kept data with the full model's recipe and step count (``diffattr.json`` of the full model);
the sampled weights are the EMA, as for the full model. ``steps`` may lower the step count
for cheap experiments (the result then no longer matches theta*'s recipe).
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from diffattr.counterfactual.base import (
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    MethodSettings,
)
from diffattr.diffusion.train import train
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError


class RetrainSettings(MethodSettings):
    steps: int | None = Field(None, ge=1, description="training steps (default: the full's)")


@METHODS.register("retrain")
class Retrain(CounterfactualMethod):
    name = "retrain"
    Settings = RetrainSettings
    settings: RetrainSettings

    def run(self, kept: np.ndarray, dataset, seed: int = 0) -> CounterfactualResult:
        images = self.kept_images(kept, dataset)
        if self.full.preset is None:
            raise DiffattrError(f"{self.full.dir}/diffattr.json records no model preset")
        steps = self.settings.steps or self.full.train.steps
        unet = make_unet(self.full.preset, images.shape[-1], images.shape[1], seed=seed)
        cfg = self.train_config(None, steps, seed)
        t0 = time.perf_counter()
        result = train(unet, images, cfg, device=self.device, progress=False, desc="retrain")
        seconds = time.perf_counter() - t0
        tail = result.losses[-20:]
        info = {"steps": steps, "loss": float(np.mean(tail))}
        return CounterfactualResult(result.ema.model.eval(), seconds, info)
