"""Model behaviors F: global properties of a model's generated images, all offline.

Settings (pydantic only, cheap): ``diffattr.behaviors.spaces`` -- the feature spaces
(``FEATURES``; its docstring explains which space ``auto`` picks and why);
``diffattr.behaviors.settings`` -- the behaviors (``BEHAVIORS``) and the ``[behaviors]``
section (``BehaviorsSettings``); ``diffattr.behaviors.resolve`` -- each behavior's space and
output key for a dataset and the plan-time ``check_settings``.

Measuring (torch): ``build_suite(settings, dataset, device=..., cache_dir=...)`` returns a
``BehaviorSuite`` whose ``measure(images)`` gives ``{"fid[digits-cnn]": ..., ...}``.

Local behaviors (``local``): per-image MSE, NRMSE and SSIM (Wang et al. 2004) against the
full model's image for the same seed, and a model's denoising loss on fixed images.

Importing this package is cheap: names are loaded from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # settings (pydantic only)
    "BEHAVIORS": "settings",
    "FEATURES": "spaces",
    "BehaviorSettings": "settings",
    "BehaviorsSettings": "settings",
    "FeatureSettings": "spaces",
    "behavior_key": "resolve",
    "check_settings": "resolve",
    "parse_behaviors": "settings",
    "resolve_features": "spaces",
    "suite_keys": "resolve",
    # suite
    "BehaviorSuite": "suite",
    "ModelMeasurement": "suite",
    "build_suite": "suite",
    "clear_memory_cache": "suite",
    "measure_model": "suite",
    # features
    "ClassifierExtractor": "features",
    "FeatureExtractor": "features",
    # metrics
    "class_entropy": "diversity",
    "cluster_entropy": "diversity",
    "diversity_entropy": "diversity",
    "entropy_bits": "diversity",
    "fid_from_features": "fid",
    "frechet_distance": "fid",
    "gaussian_stats": "fid",
    "inception_score": "inception_score",
    "denoising_loss": "local",
    "local_behaviors": "local",
    "mse": "local",
    "nrmse": "local",
    "ssim": "local",
    "density_coverage": "precision_recall",
    "knn_radii": "precision_recall",
    "precision_recall": "precision_recall",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffattr.behaviors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffattr.behaviors.{module}"), name)
