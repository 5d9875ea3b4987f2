"""Counterfactual methods: approximate the model trained on a subset of the data.

Each method owns typed settings (``diffattr.counterfactual.settings``: ``retrain``, ``sft``,
``ft``, ``ga``, ``lora``) naming its implementation, with one interface
(``CounterfactualMethod``): a one-time ``prepare`` whose work is cached under a
``work_dir``, and ``run(kept_indices, data, seed)`` returning the model to sample from. The
paper's method is ``sft`` (sparsified fine-tuning; Lin, Lu, Kim, Lee 2025, ICLR);
``retrain`` is the ground truth it approximates.
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "METHODS": "diffattr.counterfactual.settings:METHODS",
    "MethodSettings": "diffattr.counterfactual.settings:MethodSettings",
    "FineTuneSettings": "diffattr.counterfactual.settings:FineTuneSettings",
    "CounterfactualMethod": "diffattr.counterfactual.base:CounterfactualMethod",
    "CounterfactualResult": "diffattr.counterfactual.base:CounterfactualResult",
    "FullModel": "diffattr.counterfactual.base:FullModel",
    "build_method": "diffattr.counterfactual.base:build_method",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
