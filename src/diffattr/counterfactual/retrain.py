"""``retrain``: train from scratch on the kept data, the ground truth the others approximate.

A fresh model of the run's family (initialised with the job seed) is trained on the kept
data with the full model's recipe and step count (``diffattr.json`` of the full model); the
sampled weights are the EMA, as for the full model. ``steps`` may lower the step count for
cheap experiments (the result then no longer matches theta*'s recipe).
"""

from __future__ import annotations

import time

import numpy as np

from diffattr.counterfactual.base import CounterfactualMethod, CounterfactualResult
from diffattr.counterfactual.settings import RetrainSettings
from diffattr.families.base import TrainingSet


class Retrain(CounterfactualMethod):
    Settings = RetrainSettings
    settings: RetrainSettings

    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        subset = self.kept_data(kept, data)
        steps = self.settings.steps or self.full.train.steps
        model = self.family.init_model(data, seed)
        cfg = self.train_config(None, steps, seed)
        t0 = time.perf_counter()
        result = self.family.fit(model, subset, cfg, desc="retrain")
        seconds = time.perf_counter() - t0
        info = {"steps": steps, "loss": float(np.mean(result.losses[-20:]))}
        return CounterfactualResult(result.ema.model.eval(), seconds, info)
