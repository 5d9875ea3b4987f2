"""Exponential moving average of a model's weights, used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """EMA with warm-up: decay_t = min(decay, (1 + t) / (10 + t)) at EMA step t.

    ``step`` counts updates since the EMA started. Restarting an EMA (``EMA(model, decay)``)
    for a short fine-tune makes the warm-up give the new weights most of the mass; carrying
    the previous EMA (with its large ``step``) keeps most of the mass on the starting model.
    """

    def __init__(self, model: nn.Module, decay: float, step: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.step = int(step)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.step) / (10 + self.step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema = list(self.model.parameters())
        new = [p.detach() for p in model.parameters()]
        if len(ema) != len(new):
            raise ValueError(f"EMA of {len(ema)} parameters updated from {len(new)}")
        if ema:  # one multi-tensor lerp (what torch's own AveragedModel uses)
            torch._foreach_lerp_(ema, new, 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.step += 1
