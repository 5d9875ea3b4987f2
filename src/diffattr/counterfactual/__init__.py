"""Counterfactual methods: approximate the model trained on a subset of the data.

Registered by name in ``METHODS`` (``retrain``, ``sft``, ``ft``, ``ga``, ``lora``), all with
one interface (``CounterfactualMethod``): validated settings, a one-time ``prepare`` whose
work is cached under a ``work_dir``, and ``run(kept_indices, dataset, seed)`` returning the
model to sample from. The paper's method is ``sft`` (sparsified fine-tuning; Lin, Lu, Kim,
Lee 2025, ICLR); ``retrain`` is the ground truth it approximates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffattr.counterfactual import ft, ga, lora, retrain, sft  # noqa: F401  (registers)
from diffattr.counterfactual.base import (
    METHODS,
    CounterfactualMethod,
    CounterfactualResult,
    FineTuneSettings,
    MethodSettings,
)

__all__ = [
    "METHODS",
    "CounterfactualMethod",
    "CounterfactualResult",
    "FineTuneSettings",
    "MethodSettings",
    "load_method",
    "make_method",
    "prepare_method",
]


def make_method(
    name: str,
    settings: dict[str, Any] | None,
    full_dir: str | Path,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
) -> CounterfactualMethod:
    """Build a method by name; unknown names and bad settings raise ``DiffattrError``."""
    cls = METHODS.get(name)
    return cls(cls.parse_settings(settings), full_dir, work_dir, device)


def prepare_method(
    name: str,
    settings: dict[str, Any] | None,
    full_dir: str | Path,
    dataset,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CounterfactualMethod:
    """Do (or find cached) the method's one-time shared work under ``work_dir``."""
    method = make_method(name, settings, full_dir, work_dir, device)
    method.prepare(dataset, progress=progress)
    return method


def load_method(
    name: str,
    settings: dict[str, Any] | None,
    full_dir: str | Path,
    work_dir: str | Path,
    device: str | torch.device = "cpu",
) -> CounterfactualMethod:
    """A prepared method, ready for ``run`` (in any process; reads the disk only)."""
    method = make_method(name, settings, full_dir, work_dir, device)
    method.load()
    return method
